"""Ahead-of-time compilation for real TPU topologies on a machine without a TPU.

libtpu ships the TPU compiler; JAX can hand it "compile-only" devices that describe a
topology (`jax.experimental.topologies.get_topology_desc`) and `jit(...).lower(...).compile()`
then produces the real TPU executable's HLO, memory and cost analyses. libtpu's start-up code
assumes it runs on a Cloud TPU VM, so a few environment variables must be set before JAX
initialises; this module owns them and the topology naming (see .notes/tpu_findings.md).

Works on jax 0.10.2 (libtpu 0.0.42.1) and jax 0.4.30 (libtpu 0.0.1, needs
ENABLE_PJRT_COMPATIBILITY); requirements/tpu.txt and requirements/tpu-xmap.txt pin both.

Glossary: a *chip* is one TPU package; a *core* is one TensorCore; v2/v3/v4/v5p chips have two
cores, v5e/v6e chips one. A topology string names chips per torus dimension: "v3:8x16".
"""

from __future__ import annotations

import dataclasses
import enum
import glob
import importlib.metadata
import math
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

ACCEPTED_FORM = (
    "'<generation>:<chips per dimension>' with generation one of v2, v3, v5e, v6e (2 dimensions, "
    "e.g. 'v3:8x16', 'v5e:16x16', 'v6e:8x8') or v4, v5p (3 dimensions, e.g. 'v4:4x4x4', "
    "'v5p:2x2x1'); every count a positive integer"
)

# The legacy (xmap) environment pairs jax 0.4.30, whose PJRT C API is 0.54, with the oldest libtpu on
# PyPI (0.0.1, API 0.55): jax refuses the mismatch unless ENABLE_PJRT_COMPATIBILITY is set. jax 0.10.2
# and its pinned libtpu 0.0.42.1 match. Measured here, see .notes/tpu_findings.md.
_FIRST_NON_LEGACY_JAX = (0, 5)


class TpuGeneration(enum.Enum):
    V2 = "v2"
    V3 = "v3"
    V4 = "v4"
    V5E = "v5e"
    V5P = "v5p"
    V6E = "v6e"


class AcceleratorCount(enum.Enum):
    """What the number in a Cloud accelerator type ("v3-256") counts."""

    CORES = "cores"
    CHIPS = "chips"


@dataclasses.dataclass(frozen=True)
class GenerationSpec:
    topology_rank: int  # torus dimensions named in the topology string
    cores_per_chip: int
    accelerator_prefix: str  # Cloud accelerator-type prefix: "v3" in "v3-256"
    accelerator_count: AcceleratorCount
    # Extra get_topology_desc arguments so the compile-only devices match what JAX sees on the
    # real slice: v4 VMs run megacore (one JAX device per chip); libtpu's default is per core.
    topology_options: tuple[tuple[str, str], ...] = ()


# One row per generation. Sources:
# v2, v3: cloud.google.com/tpu/docs/system-architecture-tpu-vm: 2 TensorCores per chip, 2D torus,
#   accelerator type counts cores (v3-8 = 4 chips).
# v4: cloud.google.com/tpu/docs/v4: "Each TPU v4 chip contains two TensorCores", 3D topology
#   AxBxC; accelerator type counts cores (v4-32 = 16 chips). Megacore: MaxText
#   MaxText/accelerator_to_spec_map.py ("v4-8": topology "v4:2x2x1", chip_config "megacore",
#   4 devices).
# v5e: cloud.google.com/tpu/docs/v5e: one TensorCore per chip, 2D; accelerator type
#   "v5litepod-<chips>".
# v5p: cloud.google.com/tpu/docs/v5p: 3D; "--accelerator-type v5p-32 ... 32 TensorCores
#   (16 chips)".
# v6e: cloud.google.com/tpu/docs/v6e: "Each v6e chip contains one TensorCore", 2D torus;
#   accelerator type "v6e-<chips>".
GENERATIONS: Mapping[TpuGeneration, GenerationSpec] = {
    TpuGeneration.V2: GenerationSpec(2, 2, "v2", AcceleratorCount.CORES),
    TpuGeneration.V3: GenerationSpec(2, 2, "v3", AcceleratorCount.CORES),
    TpuGeneration.V4: GenerationSpec(3, 2, "v4", AcceleratorCount.CORES, (("chip_config_name", "megacore"),)),
    TpuGeneration.V5E: GenerationSpec(2, 1, "v5litepod", AcceleratorCount.CHIPS),
    TpuGeneration.V5P: GenerationSpec(3, 2, "v5p", AcceleratorCount.CORES),
    TpuGeneration.V6E: GenerationSpec(2, 1, "v6e", AcceleratorCount.CHIPS),
}


@dataclasses.dataclass(frozen=True)
class TpuTopology:
    generation: TpuGeneration
    chips_per_dim: tuple[int, ...]

    @property
    def name(self) -> str:
        """The string libtpu's topology parser takes, e.g. "v3:8x16"."""
        return f"{self.generation.value}:{'x'.join(map(str, self.chips_per_dim))}"

    @property
    def chip_count(self) -> int:
        return math.prod(self.chips_per_dim)

    @property
    def core_count(self) -> int:
        return self.chip_count * GENERATIONS[self.generation].cores_per_chip


class TopologyError(ValueError):
    """A topology string that is malformed or that the TPU compiler rejected."""


_TOPOLOGY_RE = re.compile(r"^(?P<gen>[a-z0-9]+):(?P<dims>[0-9]+(?:x[0-9]+)*)$")


def parse_topology(topology: str) -> TpuTopology:
    """Validate a topology string like "v3:8x16"; raise TopologyError naming the accepted form."""
    match = _TOPOLOGY_RE.match(topology.strip().lower()) if isinstance(topology, str) else None
    if match is None:
        raise TopologyError(f"bad TPU topology {topology!r}; expected {ACCEPTED_FORM}")
    try:
        generation = TpuGeneration(match["gen"])
    except ValueError:
        raise TopologyError(
            f"unknown TPU generation {match['gen']!r} in {topology!r}; expected {ACCEPTED_FORM}"
        ) from None
    chips_per_dim = tuple(int(d) for d in match["dims"].split("x"))
    rank = GENERATIONS[generation].topology_rank
    if len(chips_per_dim) != rank or min(chips_per_dim) < 1:
        raise TopologyError(
            f"{generation.value} topologies name {rank} positive chip counts, got {topology!r}; "
            f"expected {ACCEPTED_FORM}"
        )
    return TpuTopology(generation, chips_per_dim)


def accelerator_type_for(topology: str) -> str:
    """Cloud accelerator type of a topology: "v3:8x16" -> "v3-256", "v5e:16x16" -> "v5litepod-256"."""
    parsed = parse_topology(topology)
    spec = GENERATIONS[parsed.generation]
    count = parsed.core_count if spec.accelerator_count is AcceleratorCount.CORES else parsed.chip_count
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
    """Whether the installed jax (read from package metadata, not imported) needs PJRT compat."""
    release = re.match(r"(\d+)\.(\d+)", importlib.metadata.version("jax"))
    if release is None:
        raise RuntimeError(f"cannot read jax's version {importlib.metadata.version('jax')!r}")
    return (int(release[1]), int(release[2])) < _FIRST_NON_LEGACY_JAX


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
