"""Whole-step compiler counts from small unrolled compiles, where XLA counts a loop body once.

XLA's cost analysis (FLOPs, HBM bytes, the TPU compiler's ``optimal_seconds``) visits a while-loop body once, so a
step whose layers are scanned under-counts by the trip count. Every layer is the same program, so a count of an
unrolled step is affine in the layer count L: cost(L) = a + b L, and two compiles (L = 1, 2) fix it. With gradient
accumulation over A micro-batches, each micro-step runs the L layers forward and backward and the embedding, LM
head and loss once, and the step adds one gradient reduction and one optimizer update whose size grows with L:
cost(L, A) = a + b L + c A + d L A, fixed by four compiles (L, A in {1, 2}). Pure arithmetic: no JAX.
"""

from __future__ import annotations

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


__all__ = [
    "AFFINE_IN_LAYERS",
    "BILINEAR_IN_LAYERS_AND_MICROSTEPS",
    "affine_in_layers",
    "bilinear_in_layers_and_microsteps",
]
