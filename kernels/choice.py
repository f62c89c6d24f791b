"""The attention kernels as one closed choice, importable without JAX.

The variant space (``model.config``) and the record schema name a kernel before JAX starts; the kernels themselves,
and which platform runs each, are ``kernels.attention``'s.
"""

from __future__ import annotations

import enum


class AttentionKernel(enum.Enum):
    reference = "reference"
    xla = "xla"
    blockwise = "blockwise"
    cudnn = "cudnn"
    pallas = "pallas"

    @classmethod
    def parse(cls, text: str) -> AttentionKernel:
        try:
            return cls(text)
        except ValueError:
            valid = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown attention kernel {text!r}; valid kernels: {valid}") from None


# Kernels whose attention runs in loops over blocks (lax.scan and lax.fori_loop in kernels/flash.py, whose backward
# pallas uses too). XLA's cost analysis prices a loop body once whatever its trip count, and the causal loops' trip
# counts depend on the block index, so no compile states them: a compile-only estimate of such a kernel counts about
# one block pair of attention per loop. Measured on gptj-6b (v3:8x16, accumulation 16): blockwise's XLA FLOPs are
# 0.396e16 per step below the reference's, which is the reference's whole attention (0.394e16 by hand: 4 x 2 x 2 x
# T^2 x d_model per layer and sequence, 28 layers, 512 sequences). The TPU projection does not rank these kernels.
BLOCK_LOOP_KERNELS = frozenset({AttentionKernel.blockwise, AttentionKernel.pallas})
