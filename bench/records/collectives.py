"""The collective kinds and mesh-axis labels: the one table the HLO parser, the profiler summary and the report share.

A kind is named four ways: its XLA HLO opcode ("all-reduce", with async forms "all-reduce-start" and
"all-reduce-done"), its record key stem ("allreduce" in ``comm_mp_allreduce_count``), a human label for tables and
plots, and the opcode stems a profiler trace shows for it. A mesh axis label is what
``bench.analysis.hlo.mesh_axis_of_groups`` returns for a group: the axes its members differ along, "+"-joined in
mesh order ("mp", "dp", "dp+mp"), or "none" when it spans no axis; record keys drop the "+" ("dpmp").
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping, Sequence


class OpForm(enum.Enum):
    """Which form of a collective an opcode is: the synchronous op, or one half of an async pair."""

    SYNC = "sync"
    START = "start"
    DONE = "done"


class CollectiveKind(enum.Enum):
    """The collective HLO opcodes that move data between devices and that the wire-bytes formulas price."""

    ALL_REDUCE = "all-reduce"
    ALL_GATHER = "all-gather"
    REDUCE_SCATTER = "reduce-scatter"
    ALL_TO_ALL = "all-to-all"
    COLLECTIVE_PERMUTE = "collective-permute"

    @property
    def opcodes(self) -> Mapping[OpForm, str]:
        """Its HLO opcodes: "all-reduce", and the async pair "all-reduce-start" / "all-reduce-done"."""
        return {OpForm.SYNC: self.value, OpForm.START: f"{self.value}-start", OpForm.DONE: f"{self.value}-done"}

    @property
    def key(self) -> str:
        """Stem used in record keys: "allreduce", "allgather", ..."""
        return self.value.replace("-", "")

    @property
    def label(self) -> str:
        """How tables and plots name the kind."""
        return self.value


def collective_opcode(opcode: str) -> tuple[CollectiveKind, OpForm] | None:
    """(kind, form) of a collective HLO opcode: "all-gather-start" -> (ALL_GATHER, START); None for other opcodes."""
    return _OPCODES.get(opcode)


_OPCODES = {name: (kind, form) for kind in CollectiveKind for form, name in kind.opcodes.items()}

KIND_LABELS: Mapping[str, str] = {kind.key: kind.label for kind in CollectiveKind}  # record key stem -> label

# What a profiler trace names collectives by. Beyond the priced kinds, collective-broadcast moves data too (XLA
# has it; this suite's programs do not emit it). Matched as substrings, so async -start/-done forms and op names
# such as "all-reduce fusion" count. send/recv (point to point, with -done forms) are matched as whole tokens so
# that names like "sender" do not count.
PROFILER_COLLECTIVE_STEMS: tuple[str, ...] = (*(kind.value for kind in CollectiveKind), "collective-broadcast")
PROFILER_POINT_TO_POINT_TOKENS = frozenset({"send", "recv"})

# --- mesh axes ------------------------------------------------------------------------------------------------------

NO_MESH_AXIS = "none"  # the mesh_axis of a group whose members share every mesh coordinate
MESH_AXIS_NAMES = ("dp", "mp")  # the suite's mesh, in mesh order


def mesh_axis_values(axis_names: Sequence[str] = MESH_AXIS_NAMES) -> list[str]:
    """Every mesh_axis a group can have: ("dp", "mp") -> ["dp", "mp", "dp+mp", "none"]."""
    subsets = (c for r in range(1, len(axis_names) + 1) for c in itertools.combinations(axis_names, r))
    return ["+".join(subset) for subset in subsets] + [NO_MESH_AXIS]


def axis_key(mesh_axis: str) -> str:
    """The record key form of a mesh_axis: "dp+mp" -> "dpmp"."""
    return mesh_axis.replace("+", "")


def axis_label(mesh_axis: str) -> str:
    """How tables name a mesh_axis: "none" reads "no mesh axis", the others as they are."""
    return "no mesh axis" if mesh_axis == NO_MESH_AXIS else mesh_axis


# record key form -> label, tensor-parallel first as the report lists them: mp, dp, dpmp, none
AXIS_LABELS: Mapping[str, str] = {axis_key(axis): axis_label(axis) for axis in ("mp", "dp", "dp+mp", NO_MESH_AXIS)}

__all__ = [
    "AXIS_LABELS",
    "KIND_LABELS",
    "MESH_AXIS_NAMES",
    "NO_MESH_AXIS",
    "PROFILER_COLLECTIVE_STEMS",
    "PROFILER_POINT_TO_POINT_TOKENS",
    "CollectiveKind",
    "OpForm",
    "axis_key",
    "axis_label",
    "collective_opcode",
    "mesh_axis_values",
]
