"""The verdict on a compiled step's collectives: whether they agree with the analytic model
(bench.analysis.expected), each disagreement as one sentence, and notes on what XLA combined, widened or exactly
narrowed. Pure: it reads the record fields bench.analysis.comm summarised from the HLO."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.analysis import hlo
from bench.analysis.expected import ExpectedComm
from bench.records.schema import comm_key


def wide_collectives(collectives: list[hlo.Collective], compute_dtype: str) -> dict[str, Any]:
    """Collectives carried in a wider float than the compute dtype (an f32 all-reduce in a bf16 step)."""
    compute_bits = np.dtype(compute_dtype).itemsize * 8
    wide = sorted(
        {
            f"{c.kind.value} {dtype} on {c.mesh_axis}"
            for c in collectives
            for dtype in c.dtypes
            if dtype.startswith("f") and hlo.DTYPE_BITS.get(dtype, 0) > compute_bits and c.mesh_axis == "mp"
        }
    )
    return {"comm_wider_than_compute": wide}


def comm_verdict(
    fields: dict[str, Any], expected: ExpectedComm, compute_dtype: str = "the compute dtype"
) -> dict[str, Any]:
    """Whether the HLO's all-reduces agree with the analytic model, each disagreement as one sentence; and, apart
    from those, notes on how XLA combined, widened or exactly narrowed ops (bench.analysis.expected says which
    narrowings change no result)."""
    all_reduce = hlo.CollectiveKind.ALL_REDUCE
    found_count = int(fields.get(comm_key("mp", all_reduce, "tensors"), 0))
    combined = found_count - int(fields.get(comm_key("mp", all_reduce, "count"), 0))
    found_bytes = int(fields.get(comm_key("mp", all_reduce, "bytes"), 0))
    found_dp = int(fields.get(comm_key("dp", all_reduce, "bytes"), 0))
    want_count = expected.mp_layer_allreduce_count + expected.mp_other_allreduce_count
    want_bytes = expected.mp_layer_allreduce_bytes + expected.mp_other_allreduce_bytes
    differences, notes = [], []
    compute = compute_dtype
    if found_count != want_count:
        differences.append(f"mp all-reduce count {found_count} in the HLO, {want_count} expected")
    if found_bytes == want_bytes - expected.mp_narrowed_max_bytes != want_bytes:
        notes.append(
            f"XLA carries the loss's max all-reduce in {compute} (exact for a max of {compute} logits): "
            f"{expected.mp_narrowed_max_bytes} bytes fewer than f32"
        )
    elif found_bytes != want_bytes:
        differences.append(f"mp all-reduce payload {found_bytes} bytes in the HLO, {want_bytes} expected")
    if expected.dp_grad_allreduce_bytes_in_compute_dtype <= found_dp < expected.dp_grad_allreduce_bytes:
        notes.append(
            f"XLA reduces the gradients over dp in {compute}, before widening them to the parameters' dtype "
            f"({found_dp} bytes, not {expected.dp_grad_allreduce_bytes}): one micro-step, so no accumulation buffer"
        )
    elif found_dp < expected.dp_grad_allreduce_bytes:
        differences.append(
            f"dp all-reduce payload {found_dp} bytes, below the {expected.dp_grad_allreduce_bytes} gradient bytes"
        )
    if expected.dp_scatter_count:
        _fsdp_verdict(fields, expected, differences, notes)
    if combined:
        notes.append(f"XLA combined mp all-reduces into tuple all-reduces: {combined} fewer ops than arrays reduced")
    notes += [
        f"XLA carries {wide} in a wider float than the compute dtype" for wide in fields["comm_wider_than_compute"]
    ]
    return {"comm_matches_model": not differences, "comm_differences": differences, "comm_notes": notes}


def _fsdp_verdict(fields: dict[str, Any], expected: ExpectedComm, differences: list[str], notes: list[str]) -> None:
    """FSDP's dp collectives against the model: every gradient reduce-scattered once per micro-step; the gathers
    between the fewest and the most a compiler may make (bench.analysis.expected)."""
    scatter, gather = hlo.CollectiveKind.REDUCE_SCATTER, hlo.CollectiveKind.ALL_GATHER
    found = {m: int(fields.get(comm_key("dp", scatter, m), 0)) for m in ("tensors", "bytes")}
    missing = expected.dp_scatter_bytes - found["bytes"]
    extra_allreduce = int(fields.get(comm_key("dp", hlo.CollectiveKind.ALL_REDUCE, "bytes"), 0))
    extra_allreduce -= expected.dp_grad_allreduce_bytes
    if found["tensors"] < expected.dp_scatter_count and 0 < missing <= extra_allreduce:
        # libtpu does this for the small ones (LayerNorm, biases; v3, shard_map) and XLA's partitioner for all
        # under pjit: the same sum, at 2(n-1)/n x S on the wire instead of (n-1)/n x S (bench.analysis.comm)
        notes.append(
            f"XLA reduces {expected.dp_scatter_count - found['tensors']} of the {expected.dp_scatter_count} FSDP "
            f"gradients over dp by all-reduce, not reduce-scatter ({missing} bytes; the dp all-reduce carries them, "
            f"at twice a reduce-scatter's wire bytes)"
        )
    elif (found["tensors"], found["bytes"]) != (expected.dp_scatter_count, expected.dp_scatter_bytes):
        differences.append(
            f"dp reduce-scatter {found['tensors']} arrays, {found['bytes']} bytes in the HLO; "
            f"{expected.dp_scatter_count} arrays, {expected.dp_scatter_bytes} bytes expected"
        )
    gathers = int(fields.get(comm_key("dp", gather, "tensors"), 0))
    low, high = expected.dp_gather_count_min, expected.dp_gather_count_max
    if not low <= gathers <= high:
        differences.append(f"dp all-gather {gathers} arrays in the HLO, {low} to {high} expected")
    elif gathers == expected.dp_gather_count:
        found_bytes = int(fields.get(comm_key("dp", gather, "bytes"), 0))
        if found_bytes != expected.dp_gather_bytes:
            differences.append(
                f"dp all-gather payload {found_bytes} bytes in the HLO, {expected.dp_gather_bytes} expected"
            )
    else:
        notes.append(
            f"XLA gathers over dp {gathers} times, the model once per micro-step and parameter "
            f"({expected.dp_gather_count}): between the fewest (gathers hoisted out of the micro-batch loop, {low}) "
            f"and the most (the recomputed forward gathering again, {high})"
        )
