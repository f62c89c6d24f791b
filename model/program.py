"""What a strategy runs: a loss over a batch (the whole model, or one block) and the AdamW update.

A program is independent of partitioning: ``loss(tp)`` gives the loss under a tensor-parallel view, and every
strategy starts from the same global parameters made by ``init_params``.
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

from model.config import ModelConfig, Preset, Scope
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
    batch: int  # global sequences per step
    seq: int
    learning_rate: float
    weight_decay: float

    @classmethod
    def from_preset(cls, preset: Preset, cfg: ModelConfig, scope: Scope = Scope.MODEL) -> Program:
        return cls(cfg, scope, preset.batch, preset.seq, preset.learning_rate, preset.weight_decay)

    @property
    def batch_axes(self) -> dict[str, tuple[str, ...]]:
        return BATCH_AXES[self.scope]

    def transformed(self, tp: TensorParallel) -> hk.Transformed:
        loss = _LOSSES[self.scope]
        return hk.without_apply_rng(hk.transform(lambda batch: loss(self.cfg, tp, batch)))

    def loss_fn(self, tp: TensorParallel) -> Callable[[Params, Batch], jnp.ndarray]:
        return self.transformed(tp).apply

    def example_batch(self, seed: int = 0) -> Batch:
        """Synthetic data made here (no downloads), global shapes, as numpy."""
        rng = np.random.default_rng(seed)
        if self.scope is Scope.MODEL:
            tokens = rng.integers(0, self.cfg.vocab, size=(self.batch, self.seq + 1), dtype=np.int32)
            return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
        shape = (self.batch, self.seq, self.cfg.d_model)
        return {
            "x": rng.standard_normal(shape, dtype=np.float32),
            "cotangent": rng.standard_normal(shape, dtype=np.float32),
        }

    def batch_shapes(self) -> Batch:
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self.example_batch())

    def init_params(self, seed: int = 0) -> Params:
        """Global parameters, initialised once in the single-device view (strategies place or slice them)."""
        batch = jax.tree_util.tree_map(jnp.asarray, self.example_batch())
        return jax.jit(self.transformed(TensorParallel()).init)(jax.random.PRNGKey(seed), batch)

    def param_shapes(self) -> Params:
        """Global parameter shapes without allocating (``jax.eval_shape``)."""
        return jax.eval_shape(self.transformed(TensorParallel()).init, jax.random.PRNGKey(0), self.batch_shapes())

    def optimizer(self) -> optax.GradientTransformation:
        # GPT-J: AdamW, weight decay on matrices only. (GPT-J also clipped the global norm to 1; a clip needs a
        # cross-shard norm and changes no FLOP or collective count that matters here, so it is left out.)
        adamw = optax.adamw(self.learning_rate, weight_decay=self.weight_decay, mask=decay_mask)
        return adamw._replace(update=jax.named_scope("optimizer")(adamw.update))  # for bench.analysis.components


def count_params(params: Params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
