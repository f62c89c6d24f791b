"""Whole-step compiler counts from small unrolled compiles, where XLA counts a loop body once; and the compiler's
step-time estimate of an xmap compile, where its libtpu reports none, taken from the matching shard_map compile.

XLA's cost analysis (FLOPs, HBM bytes, the TPU compiler's ``optimal_seconds``) visits a while-loop body once, so a
step whose layers are scanned under-counts by the trip count. Every layer is the same program, so a count of an
unrolled step is affine in the layer count L: cost(L) = a + b L, and two compiles (L = 1, 2) fix it. With gradient
accumulation over A micro-batches, each micro-step runs the L layers forward and backward and the embedding, LM
head and loss once, and the step adds one gradient reduction and one optimizer update whose size grows with L:
cost(L, A) = a + b L + c A + d L A, fixed by four compiles (L, A in {1, 2}). Pure arithmetic: no JAX.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

AFFINE_IN_LAYERS = "affine in layers, from unrolled 1- and 2-layer compiles"
BILINEAR_IN_LAYERS_AND_MICROSTEPS = (
    "bilinear in layers and micro-steps, from unrolled compiles of 1 and 2 layers x 1 and 2 micro-steps"
)


def affine_in_layers(one: float, two: float, layers: int) -> float:
    """cost(layers) for cost(L) = a + b L with cost(1) = one, cost(2) = two."""
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    return one + (layers - 1) * (two - one)


def bilinear_in_layers_and_microsteps(
    c11: float, c21: float, c12: float, c22: float, layers: int, microsteps: int
) -> float:
    """cost(layers, microsteps) for cost(L, A) = a + b L + c A + d L A, from cLA at L, A in {1, 2}.

    Written about (1, 1): cost = c11 + (L-1) dL + (A-1) dA + (L-1)(A-1) dLA, with dL = c21 - c11 (one more layer),
    dA = c12 - c11 (one more micro-step) and dLA = c22 - c21 - c12 + c11 (one more layer in each extra micro-step).
    """
    if layers < 1 or microsteps < 1:
        raise ValueError(f"layers and microsteps must be >= 1, got {layers} and {microsteps}")
    per_layer, per_microstep = c21 - c11, c12 - c11
    per_layer_microstep = c22 - c21 - c12 + c11
    return (
        c11
        + (layers - 1) * per_layer
        + (microsteps - 1) * per_microstep
        + (layers - 1) * (microsteps - 1) * per_layer_microstep
    )


# What makes two tpu-aot records the same program but for the strategy: xmap and shard_map both write the block in
# the local view with explicit psums, so their collectives are the same (tests/test_tpu_aot.py compares them).
_SAME_PROGRAM = ("residual", "d_head", "remat", "preset", "scope", "mesh_dp", "mesh_mp", "batch", "seq", "topology")
ESTIMATE = "xla_optimal_seconds_per_step"
ESTIMATE_SOURCE = "xla_optimal_seconds_source"
OWN_ESTIMATE = "xla_optimal_seconds_own_compile"


def substitute_optimal_seconds(
    records: Iterable[Mapping[str, Any]], across_compilers: bool = True
) -> list[dict[str, Any]]:
    """The records, copied; an ok xmap tpu-aot record takes the estimate of the ok shard_map record of the same
    program (``_SAME_PROGRAM``) where it has none, and, with ``across_compilers``, where the two were compiled by
    different libtpu releases: xmap needs jax 0.4.30 and so libtpu 0.0.1, whose estimate of the same program differs
    (measured for issue 10: a 1-layer unrolled tiny parallel-h256-shard_map-full on v3:2x2, mesh 2x4, 3.31e-4 s
    under libtpu 0.0.1 and 2.34e-4 s under 0.0.42.1), so a ranking under one compiler takes the shard_map figure.
    The record's own figure is kept in ``xla_optimal_seconds_own_compile``; the source says what was done. Others
    are unchanged."""
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
            why = f"libtpu {libtpu} reports no optimal_seconds"
        elif across_compilers and libtpu != donor.get("libtpu"):
            why = f"libtpu {libtpu}, which compiled this one, estimated {own:.4g} s; one compiler for a ranking"
        else:
            continue
        record[OWN_ESTIMATE], record[ESTIMATE] = own, donor[ESTIMATE]
        record[ESTIMATE_SOURCE] = (
            f"substituted from the shard_map compile {donor['variant']} by libtpu {donor.get('libtpu')} (same "
            f"collectives; {why}); there: {donor.get(ESTIMATE_SOURCE)}"
        )
    return copies


__all__ = [
    "AFFINE_IN_LAYERS",
    "BILINEAR_IN_LAYERS_AND_MICROSTEPS",
    "affine_in_layers",
    "bilinear_in_layers_and_microsteps",
    "substitute_optimal_seconds",
]
