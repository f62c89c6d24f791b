"""A variant's failure, told apart from a fault of the suite: the one definition ``bench run``
(bench.measure.pipeline) and the TPU compile-only runs (bench.tpu_aot.compile) share.

A run records a variant as failed, and goes on to the next, only where the variant itself failed:

- XLA failed or refused to compile or run it: a compile error, RESOURCE_EXHAUSTED (out of device memory), an op
  the platform lacks, a Mosaic kernel it cannot compile (model.compat.compiler_errors); or the compile cache holds
  the compiler's earlier refusal of the same program (``CompilerRefused``);
- the host ran out of memory (``MemoryError``);
- the platform or this JAX refused it: a configuration this platform cannot run, refused by the suite's own checks
  (``ConfigError``, e.g. an attention kernel the platform lacks), or by JAX (``NotImplementedError``: no lowering);
- it ran out of time (``TimeoutError``);
- its measurement was refused as impossible: a CPU peak above the CPU's theoretical one
  (``PeakAboveTheoretical``), or a utilisation above 1 (``UtilisationError``): the peak or the step was not what
  it claims, and no number is recorded.

Anything else (a ``KeyError`` or ``TypeError`` in the suite's code) is a bug, not a result: it is not caught, so
the run stops with its traceback and a non-zero exit (bench.cli.main), and the records already written stay as
they are (each is appended whole, bench.records.store).
"""

from __future__ import annotations

from bench.analysis.flops import UtilisationError
from bench.hardware.cpu import PeakAboveTheoretical
from model import compat
from model.config import ConfigError

# A command that a bug stopped exits with EX_SOFTWARE (sysexits.h), apart from 1 (a variant failed and is recorded)
# and 2 (bad input); whatever runs a command as a child (the sweep) stops too when it sees this status.
EXIT_SUITE_FAULT = 70


class CompilerRefused(RuntimeError):
    """A refusal the compiler gave this program before, raised again from the compile cache in its words."""


def variant_failures() -> tuple[type[BaseException], ...]:
    """The exception types a variant can fail with (the module docstring says why each); for ``except``. A
    function, so that JAX is imported only once a run is under way."""
    refusals = (ConfigError, NotImplementedError, PeakAboveTheoretical, UtilisationError)
    return (*compat.compiler_errors(), CompilerRefused, MemoryError, TimeoutError, *refusals)
