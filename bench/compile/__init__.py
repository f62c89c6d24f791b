"""The compile-and-analyse step that timed runs (``bench.measure``), compile-only runs for TPU topologies
(``bench.tpu_aot``) and the GPU probe share: build a variant's program, lower and compile it, and read the compiled
step's collectives, memory and FLOPs into record fields. Nothing here is timed; the pure parts of the analysis
(verdicts, formulas) are in ``bench.analysis``."""
