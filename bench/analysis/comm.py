"""Bytes on the wire for parsed collectives, and one flat dict of per-step totals.

Wire bytes are the bytes each device sends for one op under the bandwidth-optimal ring
algorithms. Each formula is in one function below, with its source. S is ``Collective.payload_bytes``
(per device) and n is the group size.

``summarize`` keys (spelt by ``bench.records.schema.comm_key``), all per step (one run of the compiled ENTRY
computation, with while-loop trip counts applied). KIND is one of allreduce, allgather, reducescatter, alltoall,
collectivepermute; AXIS is a mesh-axis label with "+" dropped (mp, dp, dpmp, none):

- ``comm_KIND_count``: executions of that kind of op.
- ``comm_KIND_tensors``: arrays those executions carry (a tuple-shaped all-reduce made by XLA's
  all-reduce combiner counts each of its operands), the count to compare with an analytic one.
- ``comm_KIND_bytes_per_device``: payload bytes S added over executions.
- ``comm_KIND_wire_bytes_per_device``: wire bytes per device added over executions.
- ``comm_count``, ``comm_bytes_per_device``, ``comm_wire_bytes_per_device``: the same over all kinds.
- ``comm_AXIS_wire_bytes_per_device``: wire bytes of the ops whose groups span AXIS.
- ``comm_AXIS_KIND_count``, ``comm_AXIS_KIND_bytes_per_device``, ``comm_AXIS_KIND_wire_bytes_per_device``: the same by
  kind, e.g. ``comm_mp_allreduce_count``. Keys are written for every axis label of the mesh,
  zeros included, so tables of runs have the same columns.
- ``comm_dtype_DTYPE_bytes_per_device``: payload bytes by element type, for the types present
  (e.g. ``comm_dtype_bf16_bytes_per_device``).
- ``comm_trip_counts_known``: False when some loop's trip count was not found and counted once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence

from bench.analysis.hlo import Collective, CollectiveKind
from bench.records.schema import COMM_METRICS, COMM_TOTAL_METRICS, comm_dtype_key, comm_key, comm_total_key


def allreduce_wire_bytes(payload_bytes: int, group_size: int) -> float:
    """Ring all-reduce: 2(n-1)/n * S per device.

    A reduce-scatter then an all-gather, each sending n-1 chunks of S/n. Patarasuk & Yuan 2009,
    "Bandwidth optimal all-reduce algorithms for clusters of workstations", JPDC 69(2), and the
    busbw factor 2(n-1)/n in NCCL's nccl-tests doc/PERFORMANCE.md.
    """
    return 2 * (group_size - 1) / group_size * payload_bytes


def allgather_wire_bytes(payload_bytes: int, group_size: int) -> float:
    """Ring all-gather of a gathered result of S bytes: (n-1)/n * S per device.

    Each device forwards the n-1 chunks of size S/n that it does not own. nccl-tests
    doc/PERFORMANCE.md, busbw factor (n-1)/n.
    """
    return (group_size - 1) / group_size * payload_bytes


def reducescatter_wire_bytes(payload_bytes: int, group_size: int) -> float:
    """Ring reduce-scatter of an S-byte operand: (n-1)/n * S per device.

    n-1 steps, each sending one S/n chunk of partial sums. nccl-tests doc/PERFORMANCE.md, busbw
    factor (n-1)/n.
    """
    return (group_size - 1) / group_size * payload_bytes


def alltoall_wire_bytes(payload_bytes: int, group_size: int) -> float:
    """All-to-all of an S-byte operand: (n-1)/n * S per device.

    Each device keeps its own S/n block and sends the other n-1. nccl-tests doc/PERFORMANCE.md,
    busbw factor (n-1)/n.
    """
    return (group_size - 1) / group_size * payload_bytes


def collectivepermute_wire_bytes(payload_bytes: int, group_size: int) -> float:
    """Collective-permute: S per device. Each source sends its whole buffer to one target.

    group_size does not enter; the parameter keeps every formula's signature the same.
    """
    del group_size
    return float(payload_bytes)


WIRE_BYTES: Mapping[CollectiveKind, Callable[[int, int], float]] = {
    CollectiveKind.ALL_REDUCE: allreduce_wire_bytes,
    CollectiveKind.ALL_GATHER: allgather_wire_bytes,
    CollectiveKind.REDUCE_SCATTER: reducescatter_wire_bytes,
    CollectiveKind.ALL_TO_ALL: alltoall_wire_bytes,
    CollectiveKind.COLLECTIVE_PERMUTE: collectivepermute_wire_bytes,
}


def wire_bytes(kind: CollectiveKind, payload_bytes: int, group_size: int) -> float:
    """Bytes each device sends for one op of this kind."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return WIRE_BYTES[kind](payload_bytes, group_size)


def collective_wire_bytes(collective: Collective) -> float:
    """Wire bytes per device for one execution of a parsed collective."""
    return wire_bytes(collective.kind, collective.payload_bytes, collective.group_size)


def axis_labels(axis_names: Sequence[str]) -> list[str]:
    """Every mesh-axis label a group can have: ("dp", "mp") -> ["dp", "mp", "dp+mp", "none"]."""
    subsets = (c for r in range(1, len(axis_names) + 1) for c in itertools.combinations(axis_names, r))
    return ["+".join(subset) for subset in subsets] + ["none"]


def _axis_key(label: str) -> str:
    return label.replace("+", "")


def payload_bytes_by_dtype(collectives: Iterable[Collective]) -> dict[str, int]:
    """Payload bytes per element type per step, trip counts applied."""
    totals: dict[str, int] = {}
    for c in collectives:
        for dtype, size in c.bytes_by_dtype:
            totals[dtype] = totals.get(dtype, 0) + size * c.multiplier
    return totals


def _add(totals: dict[str, float], axis: str | None, collective: Collective) -> None:
    times = collective.multiplier
    totals[comm_key(axis, collective.kind, "count")] += times
    totals[comm_key(axis, collective.kind, "tensors")] += collective.tensor_count * times
    totals[comm_key(axis, collective.kind, "bytes")] += collective.payload_bytes * times
    totals[comm_key(axis, collective.kind, "wire_bytes")] += collective_wire_bytes(collective) * times


def summarize(collectives: Sequence[Collective], axis_names: Sequence[str] | None = ("dp", "mp")) -> dict[str, float]:
    """Flat per-step communication totals (keys in the module docstring).

    axis_names=None leaves out the per-axis keys; otherwise every collective needs a mesh_axis
    (parse with mesh_ids).
    """
    labels = axis_labels(axis_names) if axis_names is not None else []
    axes = [None] + [_axis_key(label) for label in labels]
    totals: dict[str, float] = {}
    for axis, kind, metric in itertools.product(axes, CollectiveKind, COMM_METRICS):
        totals[comm_key(axis, kind, metric)] = 0
    for c in collectives:
        _add(totals, None, c)
        if axis_names is not None:
            if c.mesh_axis not in labels:
                raise ValueError(f"%{c.name} has mesh_axis {c.mesh_axis!r}; expected one of {labels} (pass mesh_ids)")
            _add(totals, _axis_key(c.mesh_axis), c)
    for metric in COMM_TOTAL_METRICS:
        totals[comm_total_key(metric)] = sum(totals[comm_key(None, k, metric)] for k in CollectiveKind)
    for axis in axes[1:]:
        totals[comm_key(axis, None, "wire_bytes")] = sum(
            totals[comm_key(axis, k, "wire_bytes")] for k in CollectiveKind
        )
    for dtype, size in payload_bytes_by_dtype(collectives).items():
        totals[comm_dtype_key(dtype)] = size
    totals["comm_trip_counts_known"] = all(c.trip_counts_known for c in collectives)
    return totals


__all__ = [
    "WIRE_BYTES",
    "allgather_wire_bytes",
    "allreduce_wire_bytes",
    "alltoall_wire_bytes",
    "axis_labels",
    "collective_wire_bytes",
    "collectivepermute_wire_bytes",
    "payload_bytes_by_dtype",
    "reducescatter_wire_bytes",
    "summarize",
    "wire_bytes",
]
