"""REPORT.md's sections, each a function of an ``Analysis`` returning its markdown lines; which of them a report shows,
in which order, is its kind's list in bench/report/kinds.py:

- ``lead``: the answer each kind of report opens with (which variant, by how much, why).
- ``headline``: 1. Headline (the fastest variant, each effect, GPT-J, the best projection), 2. Summary and its
  failed variants.
- ``effects``: 3. the paired effect of each design choice against the run's noise.
- ``baseline``: 4. GPT-J-6B's published figures and this run's utilisation beside them.
- ``projection``: 4's PROJECTION of each TPU compile at 6B scale.
- ``comm``: 5. the HLO's collectives against the Megatron expectation, mismatches explained.
- ``profiles``: 6. top ops and the trace command of each profiled variant.
- ``environment``: 7. where the records came from and the commands that repeat them.
- ``compare``: 8. against another run (``--compare``), and the regression banner.
- ``search``: 4b. the design-space search, a PROJECTION.
- ``gpu``: a one-GPU run's setup, peaks, results, traced components and failures.
"""
