"""gptj-bench's measuring, analysing and reporting side; the model lives in ``model/``, kernels in ``kernels/``.

Data flows one way, and imports follow it (``tests/test_imports.py`` fails on a cycle):

- ``cli``: argparse and the resolution of a command line into a run spec. Only ``__main__`` and the launcher
  (``launch.local``, which re-reads a ``run`` command line) import it.
- ``measure`` (timed runs) and ``tpu_aot`` (compile-only runs for TPU topologies) produce records.
- ``launch``: the sweep, the per-process ``jax.distributed`` session, the local multi-process launcher.
- ``report`` reads records and writes REPORT.md and its plots.
- ``records`` is the contract between them: the schema, the store, the context every record carries.
- ``analysis`` (HLO, communication, FLOPs, memory) and ``hardware`` (the peak table, topologies, GPT-J's
  published figures, projections) are pure functions both sides share; neither imports JAX.
"""
