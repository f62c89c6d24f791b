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
# pallas uses too; pallas's forward loops inside its Mosaic kernel). XLA's cost analysis prices a loop body once
# whatever its trip count, and the causal loops' trip counts depend on the block index, so no compile of the loops
# states them: measured on gptj-6b (v3:8x16, accumulation 16) with the loops kept, blockwise's XLA FLOPs were
# 0.396e16 per step below the reference's, the reference's whole attention (0.394e16 by hand: 4 x 2 x 2 x T^2 x
# d_model per layer and sequence, 28 layers, 512 sequences). So the compiles whose cost analysis is read write these
# loops out (model.config.ModelConfig.unroll_attention_blocks; pallas's forward states its cost instead), and their
# record says so (xla_cost_points_attention_blocks_unrolled); the TPU projection ranks these kernels against the
# reference only from such records (bench/report/sections/kernels_tpu.py). Written out (libtpu 0.0.42.1, measured
# 2026-12), blockwise's FLOPs are 4.602e16 per step against the reference's 4.790e16: its attention 0.206e16,
# 0.52 of the reference's, which is the causal half it computes (136 of 256 block pairs at T=2048 in blocks of 128;
# its attention dots in the optimized HLO are exactly 136/256 of the reference's). The price is compile time: its
# four unrolled compiles took 8 to 13 minutes each on 2 loaded cores, against 1 to 2 for the reference's.
BLOCK_LOOP_KERNELS = frozenset({AttentionKernel.blockwise, AttentionKernel.pallas})
