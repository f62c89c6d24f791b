"""Whole-step compiler counts from small unrolled compiles, where XLA counts a loop body once; and the compiler's
step-time estimate of an xmap compile, where its libtpu reports none, taken from the matching shard_map compile.

XLA's cost analysis (FLOPs, HBM bytes, the TPU compiler's ``optimal_seconds``) visits a while-loop body once, so a
step whose layers are scanned under-counts by the trip count. Every layer is the same program, so a count of an
unrolled step is affine in the layer count L: cost(L) = a + b L, and two compiles (L = f, f + 1) fix it. With
gradient accumulation over A micro-batches, each micro-step runs the L layers forward and backward and the
embedding, LM head and loss once, and the step adds one gradient reduction and one optimizer update whose size grows
with L: cost(L, A) = a + b L + c A + d L A, fixed by four compiles (L in {f, f + 1}, A in {m, m + 1}). Pure
arithmetic: no JAX. Which f and m the records use, and why, is bench.tpu_aot.compile's EXTRAPOLATION_FIRST_LAYERS
and EXTRAPOLATION_FIRST_MICROSTEPS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def affine_source(first: int) -> str:
    """How an affine-in-layers figure was obtained, for the record's ``*_source`` fields."""
    return f"affine in layers, from unrolled {first}- and {first + 1}-layer compiles"


def bilinear_source(first: int, first_microsteps: int = 1) -> str:
    return (
        f"bilinear in layers and micro-steps, from unrolled compiles of {first} and {first + 1} layers "
        f"x {first_microsteps} and {first_microsteps + 1} micro-steps"
    )


AFFINE_IN_LAYERS = affine_source(1)
BILINEAR_IN_LAYERS_AND_MICROSTEPS = bilinear_source(1)


def affine_in_layers(low: float, high: float, layers: int, first: int = 1) -> float:
    """cost(layers) for cost(L) = a + b L with cost(first) = low, cost(first + 1) = high."""
    if layers < 1 or first < 1:
        raise ValueError(f"layers and first must be >= 1, got {layers} and {first}")
    return low + (layers - first) * (high - low)


def bilinear_in_layers_and_microsteps(
    c11: float,
    c21: float,
    c12: float,
    c22: float,
    layers: int,
    microsteps: int,
    first: int = 1,
    first_microsteps: int = 1,
) -> float:
    """cost(layers, microsteps) for cost(L, A) = a + b L + c A + d L A, from cLA at L in {first, first + 1} (1, 2
    in the names) and A in {first_microsteps, first_microsteps + 1}.

    Written about (first, m): cost = c11 + l dL + (A-m) dA + l (A-m) dLA with l = L - first, dL = c21 - c11 (one
    more layer), dA = c12 - c11 (one more micro-step), dLA = c22 - c21 - c12 + c11 (one more layer in each extra
    micro-step).
    """
    if layers < 1 or microsteps < 1 or first < 1 or first_microsteps < 1:
        raise ValueError(
            f"layers, microsteps, first and first_microsteps must be >= 1, got {layers}, {microsteps}, {first} and "
            f"{first_microsteps}"
        )
    per_layer, per_microstep = c21 - c11, c12 - c11
    per_layer_microstep = c22 - c21 - c12 + c11
    extra_layers = layers - first
    return (
        c11
        + extra_layers * per_layer
        + (microsteps - first_microsteps) * per_microstep
        + extra_layers * (microsteps - first_microsteps) * per_layer_microstep
    )


def whole_step(
    points: Mapping[tuple[int, int], float], layers: int, microsteps: int, first: int, first_microsteps: int = 1
) -> float:
    """A whole-step value from per-compile values at (layers, micro-steps) points: affine in layers from (first, 1)
    and (first + 1, 1) when ``microsteps`` is 1, else bilinear from the same layers at ``first_microsteps`` and one
    more."""
    low, high = first, first + 1
    if microsteps == 1:
        return affine_in_layers(points[low, 1], points[high, 1], layers, first)
    m, n = first_microsteps, first_microsteps + 1
    corners = (points[low, m], points[high, m], points[low, n], points[high, n])
    return bilinear_in_layers_and_microsteps(*corners, layers, microsteps, first, first_microsteps)


def whole_step_by_label(
    points: Mapping[tuple[int, int], Mapping[str, float]],
    layers: int,
    microsteps: int,
    first: int,
    first_microsteps: int = 1,
) -> dict[str, float]:
    """``whole_step`` for each label of a per-compile breakdown (a label absent from a compile is 0 there)."""
    labels = sorted({label for values in points.values() for label in values})
    at = (layers, microsteps, first, first_microsteps)
    return {label: whole_step({p: v.get(label, 0.0) for p, v in points.items()}, *at) for label in labels}


# What makes two tpu-aot records the same program but for the strategy: xmap and shard_map both write the block in
# the local view with explicit psums, so their collectives are the same (tests/test_tpu_aot.py compares them).
_SAME_PROGRAM = (
    *("residual", "d_head", "remat", "preset", "scope", "mesh_dp", "mesh_mp", "batch", "seq", "topology"),
    *("grad_accum", "grad_accum_dtype", "attention_kernel"),
)
ESTIMATE = "xla_optimal_s_per_step_per_device"
# The component breakdown goes with the estimate it was reconciled against (bench.tpu_aot.compile).
BREAKDOWN_FIELDS = ("component_s_per_step_per_device", "component_source", "component_sum_to_optimal_ratio")
ESTIMATE_SOURCE = "xla_optimal_source"
OWN_ESTIMATE = "xla_optimal_own_compile_s_per_device"


def substitute_optimal_seconds(
    records: Iterable[Mapping[str, Any]], across_compilers: bool = True
) -> list[dict[str, Any]]:
    """The records, copied; an ok xmap tpu-aot record takes the estimate of the ok shard_map record of the same
    program (``_SAME_PROGRAM``) where it has none, and, with ``across_compilers``, where the two were compiled by
    different libtpu releases: xmap needs jax 0.4.30 and so libtpu 0.0.1, whose estimate of the same program differs
    (measured 2026-12: a 1-layer unrolled tiny parallel-h256-shard_map-full on v3:2x2, mesh 2x4, 3.31e-4 s
    under libtpu 0.0.1 and 2.34e-4 s under 0.0.42.1), so a ranking under one compiler takes the shard_map figure.
    The record's own figure is kept in ``xla_optimal_own_compile_s_per_device``, and the donor's component breakdown
    replaces the record's own with it; the source says what was done. Others are unchanged."""
    copies = [dict(record) for record in records]

    def key(record: Mapping[str, Any]) -> tuple:
        return tuple(record.get(name) for name in _SAME_PROGRAM)

    def ok_aot(record: Mapping[str, Any], strategy: str) -> bool:
        return record.get("kind") == "tpu-aot" and record.get("status") == "ok" and record.get("strategy") == strategy

    donors = {key(r): r for r in copies if ok_aot(r, "shard_map") and r.get(ESTIMATE) is not None}
    for record in copies:
        donor = donors.get(key(record)) if ok_aot(record, "xmap") else None
        if donor is None:
            continue
        own, libtpu = record.get(ESTIMATE), record.get("libtpu")
        if own is None:
            why = str(record.get(ESTIMATE_SOURCE) or f"libtpu {libtpu} reports no optimal_seconds")
        elif across_compilers and libtpu != donor.get("libtpu"):
            why = f"libtpu {libtpu}, which compiled this one, estimated {own:.4g} s; one compiler for a ranking"
        else:
            continue
        record[OWN_ESTIMATE], record[ESTIMATE] = own, donor[ESTIMATE]
        record.update({name: donor.get(name) for name in BREAKDOWN_FIELDS if name in donor})
        record[ESTIMATE_SOURCE] = (
            f"substituted from the shard_map compile {donor['variant']} by libtpu {donor.get('libtpu')} (same "
            f"collectives; {why}); there: {donor.get(ESTIMATE_SOURCE)}"
        )
    return copies


__all__ = [
    "AFFINE_IN_LAYERS",
    "BILINEAR_IN_LAYERS_AND_MICROSTEPS",
    "affine_in_layers",
    "affine_source",
    "bilinear_in_layers_and_microsteps",
    "bilinear_source",
    "substitute_optimal_seconds",
    "whole_step",
    "whole_step_by_label",
]
