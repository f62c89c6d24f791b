"""The analytic communication expectation for a variant: Megatron tensor parallelism (Shoeybi et al. 2019).

Per layer, the block's f/g functions (model.sharding) put, on the mp axis:
- forward: one all-reduce of the [B, T, D] activations per tensor-parallel region left (``g``): 1 for the parallel
  block (attention and feed-forward summed first), 2 for the serial block;
- backward: one all-reduce per region entered (``f``): again 1 or 2;
- full remat: the recomputed forward repeats only the all-reduces whose results the backward pass reads. The last
  region's all-reduce only forms the block's output, which no gradient of the block needs, so JAX's partial
  evaluation drops it: 0 extra for the parallel block, 1 (the attention all-reduce, whose result feeds ln_2 and the
  feed-forward) for the serial block. (The naive count, "the forward ones again", over-counts; measured HLO on CPU
  and on TPU v3 agrees with this one.)
B is the per-replica batch of one micro-step (global batch / dp). Outside the blocks (model scope): the
vocab-parallel embedding leaves its region once forward and the LM head enters once backward, each [B, T, D]; the
vocab-parallel loss reduces three [B, T] f32 values (max, sum of exponentials, target logit). On dp: every gradient
leaf's local shard is averaged once per step (f32 master parameters), plus the scalar loss.

Two narrowings a compiler may make without changing a result, which the verdict (bench.analysis.verdict.comm_verdict)
accepts as notes, each with its bytes here: the loss's max is a max of logits widened from the compute dtype, so it
is one of them and exact in that dtype (libtpu 0.0.42.1 carries it in bf16: ``mp_narrowed_max_bytes`` is what that
saves); and without accumulation the gradients of the f32 master parameters are the compute dtype's matmul outputs
widened, which XLA may reduce before widening (``dp_grad_allreduce_bytes_in_compute_dtype``; libtpu does for
gpt-neo-2.7b's pjit step in bf16). Both were read off the optimized HLO of the v3:8x16 compiles.

Gradient accumulation (A micro-batches per step, model.program.accumulate): every mp all-reduce above happens once
per micro-step, so A times per step; the dp gradient all-reduce happens once per step, after the micro-batch loop
(as in mesh-transformer-jax's ``CausalTransformer.train``: a scan over micro-batches, then one ``pmean``).

The FSDP layout (model.sharding.PARAM_RULES) adds, on dp, per micro-step: one all-gather of every dp-split parameter
where a layer reads it (per layer for the stacked block parameters), of its mp-local size in the compute dtype (the
block casts, then gathers), and one reduce-scatter of its gradient, the gather's transpose, of the same size. The dp
all-reduce then carries only the parameters FSDP leaves whole (those without an embed dim: b_in, the LM head's b),
plus the loss. Two ways a compiler may gather less without changing a result, which the verdict accepts as notes:
under remat the recomputed forward reads the parameters again, and its gathers are at most once more per block
parameter (XLA reuses the forward's where both are in one computation: measured, tiny with unrolled layers); and
with accumulation the parameters do not change between micro-steps, so XLA may hoist the gathers out of the
micro-batch loop (once per step, holding the gathered parameters through the loop: measured on CPU, shard_map).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.records.schema import ExpectedCommunication, section_fields
from model.config import Mesh, ModelConfig, Remat, Residual, Scope


@dataclass(frozen=True)
class ExpectedComm:
    mp_layer_allreduce_count: int  # per step (all micro-steps), in the blocks
    mp_layer_allreduce_bytes: int  # payload bytes per device per step (all micro-steps), in the blocks
    mp_other_allreduce_count: int  # embedding, LM head, loss; per step (all micro-steps)
    mp_other_allreduce_bytes: int
    dp_grad_allreduce_bytes: int  # payload bytes per device per step (gradient shards, f32), once per step
    mp_narrowed_max_bytes: int = 0  # per step: what carrying the loss's max in the compute dtype saves
    dp_grad_allreduce_bytes_in_compute_dtype: int = 0  # the gradient shards in the compute dtype (no accumulation)
    # FSDP (zero in Megatron's layout), per step: the model's gathers and reduce-scatters over dp, and the fewest and
    # most gathers a compiler may make of the same parameters (see the module docstring).
    dp_gather_count: int = 0
    dp_gather_bytes: int = 0
    dp_gather_count_min: int = 0
    dp_gather_count_max: int = 0
    dp_scatter_count: int = 0
    dp_scatter_bytes: int = 0

    def as_record_fields(self) -> dict[str, int]:
        return section_fields(
            ExpectedCommunication,
            expected_mp_layer_allreduce_count=self.mp_layer_allreduce_count,
            expected_mp_layer_allreduce_bytes_per_device=self.mp_layer_allreduce_bytes,
            expected_mp_other_allreduce_count=self.mp_other_allreduce_count,
            expected_mp_other_allreduce_bytes_per_device=self.mp_other_allreduce_bytes,
            expected_dp_grad_allreduce_bytes_per_device=self.dp_grad_allreduce_bytes,
            expected_mp_narrowed_max_bytes_per_device=self.mp_narrowed_max_bytes,
            expected_dp_grad_allreduce_compute_dtype_bytes_per_device=self.dp_grad_allreduce_bytes_in_compute_dtype,
            expected_dp_gather_count=self.dp_gather_count,
            expected_dp_gather_bytes_per_device=self.dp_gather_bytes,
            expected_dp_gather_count_min=self.dp_gather_count_min,
            expected_dp_gather_count_max=self.dp_gather_count_max,
            expected_dp_scatter_count=self.dp_scatter_count,
            expected_dp_scatter_bytes_per_device=self.dp_scatter_bytes,
        )


def tp_regions_per_layer(residual: Residual) -> int:
    return 1 if residual is Residual.PARALLEL else 2


def recomputed_allreduces_per_layer(residual: Residual, remat: Remat) -> int:
    """All-reduces the recomputed forward repeats: every region's but the last (see the module docstring). The
    named policies (dots, attn) save no all-reduce result either, so they repeat the same ones as full remat
    (measured on the shard_map HLO, tests/test_expected_comm.py)."""
    return tp_regions_per_layer(residual) - 1 if remat is not Remat.NONE else 0


@dataclass(frozen=True)
class FsdpParams:
    """The dp-split parameters of the FSDP layout, from the sharding table (bench.compile.step): how many gathers
    one forward makes (a stacked block parameter counts once per layer) and their gathered bytes (mp-local, in the
    compute dtype), for the block parameters and the rest."""

    block_gathers: int
    block_bytes: int
    other_gathers: int
    other_bytes: int


def fsdp_comm(fsdp: FsdpParams, remat: Remat, grad_accum: int) -> dict[str, int]:
    """The FSDP fields of ExpectedComm: gathers and reduce-scatters per step (module docstring)."""
    a, gathers = grad_accum, fsdp.block_gathers + fsdp.other_gathers
    size = fsdp.block_bytes + fsdp.other_bytes
    again = fsdp.block_gathers if remat is not Remat.NONE else 0  # the recomputed forward's reads
    return {
        "dp_gather_count": a * gathers,
        "dp_gather_bytes": a * size,
        "dp_gather_count_min": gathers,
        "dp_gather_count_max": a * (gathers + again),
        "dp_scatter_count": a * gathers,
        "dp_scatter_bytes": a * size,
    }


def expected_comm(
    cfg: ModelConfig,
    mesh: Mesh,
    scope: Scope,
    batch: int,
    seq: int,
    local_grad_bytes: int,
    grad_accum: int = 1,
    local_grad_bytes_in_compute_dtype: int | None = None,
    fsdp: FsdpParams | None = None,
) -> ExpectedComm:
    """``batch``: global sequences per micro-step; ``grad_accum``: micro-steps per step; ``local_grad_bytes``:
    bytes of one device's gradient shards as its one dp all-reduce carries them (bench.compile.step), and
    ``local_grad_bytes_in_compute_dtype`` the same shards in the compute dtype (None: as local_grad_bytes); under
    FSDP only the shards it leaves whole. ``fsdp``: the FSDP layout's dp-split parameters (None: Megatron's)."""
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be at least 1, got {grad_accum}")
    act_bytes = (batch // mesh.dp) * seq * cfg.d_model * np.dtype(cfg.compute_dtype.value).itemsize
    layers = cfg.n_layers if scope is Scope.MODEL else 1
    regions = tp_regions_per_layer(cfg.residual)
    per_layer = 2 * regions + recomputed_allreduces_per_layer(cfg.residual, cfg.remat)  # forward, backward, recompute
    layer_count = layers * per_layer if mesh.mp > 1 else 0
    other_count, other_bytes, narrowed = 0, 0, 0
    if scope is Scope.MODEL and mesh.mp > 1:
        loss_bytes = (batch // mesh.dp) * seq * 4
        other_count, other_bytes = 2 + 3, 2 * act_bytes + 3 * loss_bytes
        narrowed = loss_bytes - loss_bytes // 4 * min(4, np.dtype(cfg.compute_dtype.value).itemsize)
    dp_bytes = local_grad_bytes if mesh.dp > 1 else 0
    in_compute = local_grad_bytes if local_grad_bytes_in_compute_dtype is None else local_grad_bytes_in_compute_dtype
    dp_narrow = min(in_compute, dp_bytes) if mesh.dp > 1 and grad_accum == 1 else dp_bytes
    a = grad_accum
    layer = (a * layer_count, a * layer_count * act_bytes)
    gathers = fsdp_comm(fsdp, cfg.remat, a) if fsdp is not None and mesh.dp > 1 else {}
    return ExpectedComm(*layer, a * other_count, a * other_bytes, dp_bytes, a * narrowed, dp_narrow, **gathers)
