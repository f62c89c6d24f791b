"""What a strategy runs: a loss over a batch (the whole model, or one block) and the AdamW update.

A program is independent of partitioning: ``loss(tp)`` gives the loss under a tensor-parallel view, and every
strategy starts from the same global parameters made by ``init_params``.

A step's batch has a leading micro-batch axis: every array is [A, B, ...] with A = ``grad_accum`` micro-batches of
B sequences each. ``accumulate`` runs the loss and gradients of each micro-batch and averages them (in f32); the
drivers then reduce over dp and update once per step, as GPT-J did (mesh-transformer-jax, gradient accumulation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from model.config import Dtype, ModelConfig, Preset, Scope
from model.gptj import block_loss, model_loss
from model.sharding import TensorParallel, decay_mask

_LOSSES = {Scope.MODEL: model_loss, Scope.BLOCK: block_loss}

# Logical dims of each batch array, for the sharding rules.
BATCH_AXES: dict[Scope, dict[str, tuple[str, ...]]] = {
    Scope.MODEL: {"inputs": ("batch", "seq"), "targets": ("batch", "seq")},
    Scope.BLOCK: {"x": ("batch", "seq", "embed"), "cotangent": ("batch", "seq", "embed")},
}

Params = Any
Batch = dict[str, Any]


@dataclass(frozen=True)
class Program:
    cfg: ModelConfig
    scope: Scope
    batch: int  # global sequences per micro-step
    seq: int
    learning_rate: float
    weight_decay: float
    grad_accum: int = 1  # micro-batches per step
    grad_accum_dtype: Dtype = Dtype.FLOAT32  # the running sum's
    unroll_accum: bool = False  # the micro-batch loop unrolled (for XLA's cost analysis) instead of a lax.scan

    @classmethod
    def from_preset(cls, preset: Preset, cfg: ModelConfig, scope: Scope = Scope.MODEL) -> Program:
        preset.check_scope(scope)
        return cls(
            cfg,
            scope,
            preset.batch,
            preset.seq,
            preset.learning_rate,
            preset.weight_decay,
            preset.grad_accum,
            preset.grad_accum_dtype,
            preset.unroll_accum,
        )

    @property
    def tokens_per_step(self) -> int:
        return self.grad_accum * self.batch * self.seq

    @property
    def batch_axes(self) -> dict[str, tuple[str, ...]]:
        return BATCH_AXES[self.scope]

    def transformed(self, tp: TensorParallel) -> hk.Transformed:
        loss = _LOSSES[self.scope]
        return hk.without_apply_rng(hk.transform(lambda batch: loss(self.cfg, tp, batch)))

    def loss_fn(self, tp: TensorParallel) -> Callable[[Params, Batch], jnp.ndarray]:
        return self.transformed(tp).apply

    def example_batch(self, seed: int = 0) -> Batch:
        """Synthetic data made here (no downloads), global shapes [A, B, ...], as numpy."""
        rng = np.random.default_rng(seed)
        micro = (self.grad_accum, self.batch)
        if self.scope is Scope.MODEL:
            tokens = rng.integers(0, self.cfg.vocab, size=(*micro, self.seq + 1), dtype=np.int32)
            return {"inputs": tokens[..., :-1], "targets": tokens[..., 1:]}  # [A, B, T]
        shape = (*micro, self.seq, self.cfg.d_model)  # [A, B, T, D]
        return {
            "x": rng.standard_normal(shape, dtype=np.float32),
            "cotangent": rng.standard_normal(shape, dtype=np.float32),
        }

    def batch_shapes(self) -> Batch:
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self.example_batch())

    def micro_batch_shapes(self) -> Batch:
        """One micro-batch: what the loss function takes."""
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), self.batch_shapes())

    def init_params(self, seed: int = 0) -> Params:
        """Global parameters, initialised once in the single-device view (strategies place or slice them)."""
        batch = jax.tree_util.tree_map(lambda a: jnp.asarray(a[0]), self.example_batch())
        return jax.jit(self.transformed(TensorParallel()).init)(jax.random.PRNGKey(seed), batch)

    def param_shapes(self) -> Params:
        """Global parameter shapes without allocating (``jax.eval_shape``)."""
        init = self.transformed(TensorParallel()).init
        return jax.eval_shape(init, jax.random.PRNGKey(0), self.micro_batch_shapes())

    def optimizer(self) -> optax.GradientTransformation:
        # GPT-J: AdamW, weight decay on matrices only. (GPT-J also clipped the global norm to 1; a clip needs a
        # cross-shard norm and changes no FLOP or collective count that matters here, so it is left out.)
        adamw = optax.adamw(self.learning_rate, weight_decay=self.weight_decay, mask=decay_mask)
        return adamw._replace(update=jax.named_scope("optimizer")(adamw.update))  # for bench.analysis.components


GradFn = Callable[[Params, Batch], tuple[jnp.ndarray, Params]]


def accumulate(
    grad_fn: GradFn,
    params: Params,
    batch: Batch,
    unroll: bool = False,
    constrain: Callable[[Any], Any] = lambda t: t,
    sum_dtype: Dtype = Dtype.FLOAT32,
) -> tuple[jnp.ndarray, Params]:
    """Mean loss and gradients over the leading micro-batch axis of ``batch`` ([A, B, ...]).

    Each micro-batch's loss is a mean over its B sequences, and all have the same size, so the mean over the A
    micro-batches is the loss of the whole A x B batch and its gradient the mean of theirs. Sums are kept in
    ``sum_dtype`` whatever the parameter dtype, and the mean is returned in it: the drivers' one dp reduction then
    moves that dtype, as GPT-J's ``pmean`` of its bf16 sum did. A = 1 calls ``grad_fn`` once, with no loop (the
    programs of a step without accumulation). ``constrain`` is applied to the running sums (the pjit driver keeps
    them sharded per replica).
    GPT-J did the same (mesh-transformer-jax ``mesh_transformer/transformer_shard.py``, ``CausalTransformer.train``:
    ``lax.scan`` over micro-batches summing gradients, a plain call when there is one, then one ``pmean`` over the
    batch axis), summing in bf16 (the ``gptj-6b`` preset's ``grad_accum_dtype``).
    """
    steps = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if steps == 1:
        return grad_fn(params, jax.tree_util.tree_map(lambda a: a[0], batch))

    def add(total: Any, micro: Batch) -> tuple[Any, None]:
        value = grad_fn(params, micro)
        return constrain(jax.tree_util.tree_map(lambda t, v: t + v.astype(dtype), total, value)), None

    dtype = jnp.dtype(sum_dtype.value)
    shapes = jax.eval_shape(grad_fn, params, jax.tree_util.tree_map(lambda a: a[0], batch))
    total = constrain(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, dtype), shapes))
    if unroll:  # every micro-step in the program, for XLA's cost analysis
        for i in range(steps):
            total, _ = add(total, jax.tree_util.tree_map(lambda a, i=i: a[i], batch))
    else:
        total, _ = jax.lax.scan(add, total, batch)
    return jax.tree_util.tree_map(lambda t: t / steps, total)


def count_params(params: Params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
