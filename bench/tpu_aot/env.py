"""Ahead-of-time compilation for real TPU topologies on a machine without a TPU.

libtpu ships the TPU compiler; JAX can hand it "compile-only" devices that describe a
topology (`jax.experimental.topologies.get_topology_desc`) and `jit(...).lower(...).compile()`
then produces the real TPU executable's HLO, memory and cost analyses. libtpu's start-up code
assumes it runs on a Cloud TPU VM, so a few environment variables must be set before JAX
initialises; this module owns them (see .notes/tpu_findings.md). Topology names are parsed by
bench.hardware.topology, the one grammar the hardware table shares.

Works on jax 0.10.2 (libtpu 0.0.42.1) and jax 0.4.30 (libtpu 0.0.1, needs
ENABLE_PJRT_COMPATIBILITY); requirements/tpu.txt and requirements/tpu-xmap.txt pin both.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import sys
import tempfile
from typing import Any

# TopologyError and parse_topology are re-exported: the CLI checks a --topology through this module.
from bench.hardware.topology import ACCEPTED_FORM, GENERATIONS, AcceleratorCount, TopologyError, parse_topology
from model import compat


def accelerator_type_for(topology: str) -> str:
    """Cloud accelerator type of a topology: "v3:8x16" -> "v3-256", "v5e:16x16" -> "v5litepod-256"."""
    parsed = parse_topology(topology)
    spec = GENERATIONS[parsed.generation]
    count = parsed.cores if spec.accelerator_count is AcceleratorCount.CORES else parsed.chips
    return f"{spec.accelerator_prefix}-{count}"


def tpu_compile_env(topology: str, jax_legacy: bool) -> dict[str, str]:
    """Environment variables for compile-only libtpu use on a host without a TPU (pure)."""
    env = {
        # The runtime stays on CPU: there is no TPU to execute on, only a compiler to call.
        "JAX_PLATFORMS": "cpu",
        # libtpu otherwise asks the GCE metadata server for the slice's shape and workers.
        "TPU_SKIP_MDS_QUERY": "1",
        "TPU_WORKER_HOSTNAMES": "localhost",
        "TPU_WORKER_ID": "0",
        # Silences libtpu's "could not determine TPU accelerator type"; the compile-only topology
        # itself comes from get_topology_desc, not from this variable.
        "TPU_ACCELERATOR_TYPE": accelerator_type_for(topology),
        # libtpu takes /tmp/libtpu_lockfile so that two processes never drive one TPU; with no TPU to drive,
        # compile-only processes (a test next to a tpu_aot run) may share it.
        "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    }
    if jax_legacy:
        env["ENABLE_PJRT_COMPATIBILITY"] = "1"
    return env


def installed_jax_is_legacy() -> bool:
    """Whether the installed jax (read from package metadata, not imported) needs ENABLE_PJRT_COMPATIBILITY.

    The legacy (xmap) environment pairs jax 0.4.30 with the oldest libtpu on PyPI, whose PJRT C API is newer than
    jax's: jax refuses the mismatch unless ENABLE_PJRT_COMPATIBILITY is set. Measured here, see
    .notes/tpu_findings.md; the version test is model.compat's.
    """
    return compat.jax_needs_pjrt_compatibility(compat.installed_version("jax"))


def apply_tpu_compile_env(topology: str) -> dict[str, str]:
    """Set tpu_compile_env(...) in os.environ; must run before jax is imported. Returns the vars."""
    if "jax" in sys.modules:
        raise RuntimeError(
            "apply_tpu_compile_env must run before `import jax`: JAX reads JAX_PLATFORMS and "
            "libtpu reads TPU_* once, when they initialise"
        )
    env = tpu_compile_env(topology, jax_legacy=installed_jax_is_legacy())
    os.environ.update(env)
    return env


def libtpu_available() -> bool:
    """Whether the libtpu package (the TPU compiler) is installed in this environment."""
    try:
        importlib.metadata.version("libtpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def topology_devices(topology: str) -> list[Any]:
    """Compile-only jax devices of `topology`, ordered host by host as libtpu lists them."""
    parsed = parse_topology(topology)
    if not libtpu_available():
        raise RuntimeError(
            "libtpu is not installed; create the TPU AOT venv from requirements/tpu.txt "
            "(jax 0.10.2) or requirements/tpu-xmap.txt (jax 0.4.30)"
        )
    from jax.experimental import topologies

    options = dict(GENERATIONS[parsed.generation].topology_options)
    try:
        description = topologies.get_topology_desc(topology_name=parsed.name, platform="tpu", **options)
    except Exception as error:  # jaxlib's XlaRuntimeError / JaxRuntimeError, by version
        if "INVALID_ARGUMENT" not in str(error):
            raise
        raise TopologyError(
            f"the TPU compiler rejected topology {topology!r}: {error}; expected {ACCEPTED_FORM}"
        ) from error
    return list(description.devices)


def compile_with_optimized_hlo(lowered: Any) -> tuple[Any, str]:
    """Compile `lowered` and return (compiled, the compiler's own optimized-HLO text).

    On jax 0.4.30 with libtpu 0.0.1, `compiled.as_text()` prints every collective as
    `replica_groups={}`: libtpu stores the groups in HloInstructionProto field 87
    (collective_device_list), which jaxlib 0.4.30's proto does not have. The dump written by
    libtpu itself keeps them, so read that instead (also correct on jax 0.10.2 and on CPU). The
    dump is asked for in long form (ENTRY signature, operand shapes), the form `as_text()` prints
    and `bench.hlo.parse_collectives` reads.
    """
    with tempfile.TemporaryDirectory(prefix="xla_dump_") as dump_dir:
        compiled = lowered.compile(compiler_options={"xla_dump_to": dump_dir, "xla_dump_hlo_as_long_text": True})
        dumps = glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
        if len(dumps) != 1:
            raise RuntimeError(f"expected one optimized-HLO dump in {dump_dir}, found {dumps}")
        with open(dumps[0]) as dump:
            return compiled, dump.read()
