"""TPU topology names ("v3:8x16"): the one grammar, and what each generation's chips hold.

A topology string names a generation and the chips along each torus dimension, in the form libtpu's topology parser
takes (``jax.experimental.topologies.get_topology_desc(topology_name=...)``). Glossary: a *chip* is one TPU
package; a *core* is one TensorCore (two per v2/v3/v4/v5p chip, one per v5e/v6e chip); a *device* is what JAX lists
as one, a core on v2/v3 and a chip on megacore v4/v5p and on single-core v5e/v6e.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping


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
    devices_per_chip: int  # JAX devices per chip: cores, or 1 where a chip runs as one megacore device
    accelerator_prefix: str  # Cloud accelerator-type prefix: "v3" in "v3-256"
    accelerator_count: AcceleratorCount
    # Extra get_topology_desc arguments so the compile-only devices match what JAX sees on the
    # real slice: v4 VMs run megacore (one JAX device per chip); libtpu's default is per core.
    topology_options: tuple[tuple[str, str], ...] = ()


# One row per generation. Sources:
# v2, v3: cloud.google.com/tpu/docs/system-architecture-tpu-vm: 2 TensorCores per chip, 2D torus,
#   accelerator type counts cores (v3-8 = 4 chips); JAX lists each core as a device.
# v4: cloud.google.com/tpu/docs/v4: "Each TPU v4 chip contains two TensorCores", 3D topology
#   AxBxC; accelerator type counts cores (v4-32 = 16 chips). Megacore: MaxText
#   MaxText/accelerator_to_spec_map.py ("v4-8": topology "v4:2x2x1", chip_config "megacore",
#   4 devices).
# v5e: cloud.google.com/tpu/docs/v5e: one TensorCore per chip, 2D; accelerator type
#   "v5litepod-<chips>".
# v5p: cloud.google.com/tpu/docs/v5p: 3D, megacore; "--accelerator-type v5p-32 ... 32 TensorCores
#   (16 chips)".
# v6e: cloud.google.com/tpu/docs/v6e: "Each v6e chip contains one TensorCore", 2D torus;
#   accelerator type "v6e-<chips>".
GENERATIONS: Mapping[TpuGeneration, GenerationSpec] = {
    TpuGeneration.V2: GenerationSpec(2, 2, 2, "v2", AcceleratorCount.CORES),
    TpuGeneration.V3: GenerationSpec(2, 2, 2, "v3", AcceleratorCount.CORES),
    TpuGeneration.V4: GenerationSpec(3, 2, 1, "v4", AcceleratorCount.CORES, (("chip_config_name", "megacore"),)),
    TpuGeneration.V5E: GenerationSpec(2, 1, 1, "v5litepod", AcceleratorCount.CHIPS),
    TpuGeneration.V5P: GenerationSpec(3, 2, 1, "v5p", AcceleratorCount.CORES),
    TpuGeneration.V6E: GenerationSpec(2, 1, 1, "v6e", AcceleratorCount.CHIPS),
}

ACCEPTED_FORM = (
    "'<generation>:<chips per dimension>' with generation one of v2, v3, v5e (or v5litepod), v6e (2 dimensions, "
    "e.g. 'v3:8x16', 'v5e:16x16', 'v6e:8x8') or v4, v5p (3 dimensions, e.g. 'v4:4x4x4', "
    "'v5p:2x2x1'); every count a positive integer"
)


class TopologyError(ValueError):
    """A topology string that is malformed or that the TPU compiler rejected."""


@dataclasses.dataclass(frozen=True)
class Topology:
    generation: TpuGeneration
    dims: tuple[int, ...]  # chips along each torus dimension

    @property
    def spec(self) -> GenerationSpec:
        return GENERATIONS[self.generation]

    @property
    def name(self) -> str:
        """The string libtpu's topology parser takes, e.g. "v3:8x16"."""
        return f"{self.generation.value}:{'x'.join(map(str, self.dims))}"

    @property
    def chips(self) -> int:
        return math.prod(self.dims)

    @property
    def cores(self) -> int:
        return self.chips * self.spec.cores_per_chip

    @property
    def devices(self) -> int:
        """JAX devices of the slice: ``v3:8x16`` has 128 chips and 256 devices."""
        return self.chips * self.spec.devices_per_chip


# Cloud's accelerator types call v5e "v5litepod" ("v5litepod-256"); the hardware table accepted that spelling.
GENERATION_ALIASES = {"v5litepod": TpuGeneration.V5E.value}
_TOPOLOGY_RE = re.compile(r"^(?P<gen>[a-z0-9]+):(?P<dims>[0-9]+(?:x[0-9]+)*)$")


def parse_topology(topology: str) -> Topology:
    """Parse a topology string like "v3:8x16" (case and surrounding space ignored); TopologyError names the form."""
    match = _TOPOLOGY_RE.match(topology.strip().lower()) if isinstance(topology, str) else None
    if match is None:
        raise TopologyError(f"bad TPU topology {topology!r}; expected {ACCEPTED_FORM}")
    try:
        generation = TpuGeneration(GENERATION_ALIASES.get(match["gen"], match["gen"]))
    except ValueError:
        raise TopologyError(
            f"bad TPU topology {topology!r}: unknown TPU generation {match['gen']!r}; expected {ACCEPTED_FORM}"
        ) from None
    dims = tuple(int(d) for d in match["dims"].split("x"))
    rank = GENERATIONS[generation].topology_rank
    if len(dims) != rank or min(dims) < 1:
        raise TopologyError(
            f"bad TPU topology {topology!r}: {generation.value} topologies name {rank} positive chip counts; "
            f"expected {ACCEPTED_FORM}"
        )
    return Topology(generation, dims)


__all__ = [
    "ACCEPTED_FORM",
    "GENERATIONS",
    "AcceleratorCount",
    "GenerationSpec",
    "Topology",
    "TopologyError",
    "TpuGeneration",
    "parse_topology",
]
