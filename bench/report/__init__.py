"""Reports: read a run's records, summarise and compare them, write REPORT.md and its plots.

Modules, in the order data flows through them (each imports only those above it):

- ``format``: numbers, percentages, ratios, ranges, markdown tables (constant columns said once), plot links,
  cited source paths and prose wrapping, as the report writes them.
- ``load``: a run directory's records and its --aot directories' compiles, one configuration of them, what was
  skipped and why; ``row_key`` and ``latest_ok``, the one "latest ok record per variant and JAX version".
- ``stats``: per-variant summaries, the run's noise, paired effects of each design choice, run-to-run comparison.
- ``analyse``: ``Analysis``, everything the sections read, computed once (projections included).
- ``section``: ``Section``, one part of a report: its name, what it needs of the records and how it renders.
- ``sections``: one module per group of REPORT.md's sections, each a function of an ``Analysis``.
- ``kinds``: the kind of run a directory holds (sweep, search, cpu-block, gpu) and each kind's ordered sections.
- ``plots``: the PNGs beside REPORT.md (matplotlib, imported only when plots are drawn).
- ``write``: ``write_report(run_dir, compare=None, aot_dirs=(), plots=True)``, the public entry point.

The command line is ``python -m bench report`` (bench/cli/main.py).
"""
