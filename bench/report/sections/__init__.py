"""REPORT.md's sections, each a function of an ``Analysis`` returning its markdown lines, in report order:

- ``headline``: 1. Headline (the fastest variant, each effect, GPT-J, the best projection) and 2. Summary.
- ``effects``: 3. the paired effect of each design choice against the run's noise.
- ``baseline``: 4. GPT-J-6B's published figures and this run's utilisation beside them.
- ``projection``: 4's PROJECTION of each TPU compile at 6B scale.
- ``comm``: 5. the HLO's collectives against the Megatron expectation, mismatches explained.
- ``profiles``: 6. top ops and the trace command of each profiled variant.
- ``environment``: 7. where the records came from and the commands that repeat them.
- ``compare``: 8. against another run (``--compare``), and the regression banner.
"""
