"""gptj-bench's measuring, analysing and reporting side; the model lives in ``model/``, kernels in ``kernels/``.

Data flows one way, and imports follow it (``tests/test_imports.py`` fails on a cycle between modules or between
packages):

- ``cli``: argparse and the resolution of a command line into a run spec. Only ``__main__`` imports it; the
  launcher (``launch.local``) re-reads a ``run`` command line with the parser the CLI hands it.
- ``launch``: the sweep and the local multi-process launcher; they start measuring processes.
- ``measure`` (timed runs, with the per-process ``jax.distributed`` session) and ``tpu_aot`` (compile-only runs
  for TPU topologies) produce records; ``gpu`` plans and runs the GPU measurements.
- ``compile``: the compile-and-analyse step that ``measure``, ``tpu_aot`` and ``gpu`` share.
- ``report`` reads records and writes REPORT.md and its plots.
- ``analysis`` (HLO, communication, FLOPs, memory, the communication verdict) and ``hardware`` (the peak table,
  topologies, GPT-J's published figures, projections) are pure functions both sides share; neither imports JAX.
- ``records`` is the contract between them all: the schema, the store, the context every record carries, the
  collective kinds and mesh axes the record keys name. It imports nothing else of ``bench``.
"""
