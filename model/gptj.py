"""The GPT-J model in dm-haiku, written once for every strategy.

Named scopes (``jax.named_scope``) mark which block component each op belongs to; with haiku's module names they
reach the HLO's ``metadata={op_name=...}``, where ``bench.analysis.components`` reads them (its ``SCOPES`` table
lists them: keep the two in step).

Shape letters: B batch (per data-parallel replica in the local view), T sequence, D model, H heads, K head dim,
F feed-forward, V vocabulary, L layers. H, F and V are the per-shard sizes in the local view (shard_map, xmap)
and the whole sizes in the global view (single, pjit); see ``model.sharding.TensorParallel``.
"""

from __future__ import annotations

import functools
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from kernels.attention import attention, cached_attention
from kernels.rotary import apply_rotary, apply_rotary_at
from model.config import Activation, ModelConfig, Remat, Residual
from model.kv_cache import KVCache
from model.sharding import PARAM_AXES, TensorParallel


def _dtype(cfg: ModelConfig) -> jnp.dtype:
    return jnp.dtype(cfg.compute_dtype.value)


class _Module(hk.Module):
    def __init__(self, cfg: ModelConfig, tp: TensorParallel, name: str):
        super().__init__(name=name)
        self.cfg, self.tp = cfg, tp

    def param(self, leaf: str, global_shape: tuple[int, ...], init: hk.initializers.Initializer) -> jnp.ndarray:
        """A parameter in the compute dtype, of its local shape under the tensor-parallel view, gathered over dp."""
        shape = self.tp.local_shape(PARAM_AXES[leaf], global_shape)
        value = hk.get_parameter(leaf, shape, jnp.dtype(self.cfg.param_dtype.value), init)
        return self.tp.gather(value.astype(_dtype(self.cfg)), PARAM_AXES[leaf])  # FSDP: gathered for this layer


def _normal(fan_in: int) -> hk.initializers.Initializer:
    return hk.initializers.TruncatedNormal(stddev=1.0 / np.sqrt(fan_in))


def project(cfg: ModelConfig, x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """``x @ w`` for x [B, T, N] and w [N, M]; with ``cfg.flat_tokens``, over the tokens as one [B*T, N] matrix."""
    if not cfg.flat_tokens:
        return x @ w
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


class LayerNorm(_Module):
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        d = self.cfg.d_model
        scale = self.param("scale", (d,), hk.initializers.Constant(1.0))
        offset = self.param("offset", (d,), hk.initializers.Constant(0.0))
        with jax.named_scope("layer_norm"):
            x32 = x.astype(jnp.float32)  # statistics in f32 whatever the compute dtype
            mean = x32.mean(-1, keepdims=True)
            var = jnp.square(x32 - mean).mean(-1, keepdims=True)
            normed = ((x32 - mean) * jax.lax.rsqrt(var + self.cfg.ln_eps)).astype(x.dtype)
            return normed * scale + offset


class Attention(_Module):
    """Column-parallel q/k/v (whole heads per shard), row-parallel output: returns this shard's partial sum."""

    def __call__(  # x: [B, T, D]
        self, x: jnp.ndarray, window: jnp.ndarray | None = None, cache: KVCache | None = None
    ) -> Any:
        """This shard's partial sum [B, T, D]; with a ``cache`` (decoding), that and the cache with x's keys and
        values written at its position."""
        cfg = self.cfg
        hk_dim = cfg.attention_width
        init = _normal(cfg.d_model)
        weights = [self.param(w, (cfg.d_model, hk_dim), init) for w in ("w_q", "w_k", "w_v")]
        with jax.named_scope("qkv_proj"):
            qkv = [project(cfg, x, w) for w in weights]  # 3 x [B, T, H*K]
        q, k, v = (t.reshape(*t.shape[:2], -1, cfg.d_head) for t in qkv)  # [B, T, H, K]
        q, k, v = (self.tp.constrain(t, ("batch", "seq", "heads", "head_dim")) for t in (q, k, v))
        if cache is not None:
            return self._decode(q, k, v, cache, window)
        with jax.named_scope("rotary"):
            q, k = apply_rotary(q, cfg.rotary_dim), apply_rotary(k, cfg.rotary_dim)
        with jax.named_scope("attn_core"):
            out = attention(q, k, v, cfg.attention_kernel, unroll_blocks=cfg.unroll_attention_blocks, window=window)
            out = _tag_attention_output(cfg, out)  # [B, T, H, K]
        return _out_proj(self, out)

    def _decode(
        self, q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, cache: KVCache, window: jnp.ndarray | None
    ) -> tuple[jnp.ndarray, KVCache]:
        """q, k, v [B, T, H, K] of positions pos .. pos+T-1: rotary at those positions, k and v written into the
        cache [B, C, H, K], q attending over every cached position up to its own."""
        cfg = self.cfg
        with jax.named_scope("rotary"):
            q, k = apply_rotary_at(q, cfg.rotary_dim, cache.pos), apply_rotary_at(k, cfg.rotary_dim, cache.pos)
        with jax.named_scope("attn_core"):
            cache = cache.write(k, v)
            out = cached_attention(q, cache.k, cache.v, cache.pos, window)  # [B, T, H, K]
        return _out_proj(self, out), cache


def _out_proj(attn: Attention, out: jnp.ndarray) -> jnp.ndarray:
    """The row-parallel output projection of attention ``out`` [B, T, H, K]: this shard's partial sum [B, T, D]."""
    cfg = attn.cfg
    hk_dim = cfg.attention_width
    out = out.reshape(*out.shape[:2], -1)  # [B, T, H*K]
    w_o = attn.param("w_o", (hk_dim, cfg.d_model), _normal(hk_dim))
    with jax.named_scope("out_proj"):
        return project(cfg, out, w_o)  # [B, T, D], partial over shards


class FeedForward(_Module):
    """Column-parallel in, row-parallel out. Returns this shard's partial sum; ``b_out`` is added after the
    all-reduce (``out_bias``) so that it is added once, not once per shard."""

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # x: [B, T, D]
        cfg = self.cfg
        w_in = self.param("w_in", (cfg.d_model, cfg.d_ff), _normal(cfg.d_model))
        with jax.named_scope("ff_in"):
            h = project(cfg, x, w_in)
        with jax.named_scope(cfg.activation.value):
            h = h + self.param("b_in", (cfg.d_ff,), hk.initializers.Constant(0.0))  # [B, T, F]
            h = self.tp.constrain(h, ("batch", "seq", "ff"))
            h = jax.nn.gelu(h, approximate=True) if cfg.activation is Activation.GELU else jax.nn.relu(h)
        w_out = self.param("w_out", (cfg.d_ff, cfg.d_model), _normal(cfg.d_ff))
        with jax.named_scope("ff_out"):
            return project(cfg, h, w_out)  # [B, T, D], partial

    def out_bias(self) -> jnp.ndarray:
        return self.param("b_out", (self.cfg.d_model,), hk.initializers.Constant(0.0))


class Block(_Module):
    """``window``: the keys each query sees in this layer (local attention), None for plain causal attention."""

    def __call__(self, x: jnp.ndarray, window: jnp.ndarray | None = None, cache: KVCache | None = None) -> Any:
        """[B, T, D] -> [B, T, D]; with a ``cache`` (decoding), the output and this layer's updated cache."""
        cfg, tp = self.cfg, self.tp
        attention_module = Attention(cfg, tp, "attn") if cache is None else _CachedAttention(cfg, tp, "attn", cache)
        attn = functools.partial(attention_module, window=window)
        ff = FeedForward(cfg, tp, "ff")
        x = tp.constrain(x, ("batch", "seq", "embed"))
        if cfg.residual is Residual.PARALLEL:
            # GPT-J: attention and feed-forward read the same LayerNorm output and their partial sums are added
            # before leaving the tensor-parallel region, so one all-reduce per layer forward (and one backward,
            # at tp.enter) instead of two each.
            h = tp.enter(LayerNorm(cfg, tp, "ln_1")(x))
            with jax.named_scope("residual"):  # the adds; the modules called inside carry their own scopes
                y = x + tp.exit(attn(h) + ff(h)) + ff.out_bias()
        else:
            with jax.named_scope("residual"):
                h = x + tp.exit(attn(tp.enter(LayerNorm(cfg, tp, "ln_1")(x))))
                y = h + tp.exit(ff(tp.enter(LayerNorm(cfg, tp, "ln_2")(h)))) + ff.out_bias()
        y = tp.constrain(y, ("batch", "seq", "embed"))
        return y if cache is None else (y, attention_module.updated_cache)


class Embed(_Module):
    """Vocab-parallel lookup: each shard holds V rows, looks up the ids it owns, and the shards' rows are summed."""

    def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:  # ids: [B, T] -> [B, T, D]
        cfg = self.cfg
        table = self.param("table", (cfg.vocab, cfg.d_model), hk.initializers.TruncatedNormal(stddev=0.02))
        rows = table.shape[0]
        local_ids = ids - self.tp.index() * rows
        owned = (local_ids >= 0) & (local_ids < rows)
        x = jnp.take(table, jnp.clip(local_ids, 0, rows - 1), axis=0) * owned[..., None].astype(table.dtype)
        return self.tp.exit(x)

    def attend(self, x: jnp.ndarray) -> jnp.ndarray:  # x: [B, T, D] -> logits [B, T, V]
        """The tied LM head: the same table, transposed, so each shard's logits are those of the rows it owns."""
        cfg = self.cfg
        table = self.param("table", (cfg.vocab, cfg.d_model), hk.initializers.TruncatedNormal(stddev=0.02))
        with jax.named_scope("lm_head"):
            logits = project(cfg, self.tp.enter(x), table.T)
            return self.tp.constrain(logits, ("batch", "seq", "vocab"))


class LMHead(_Module):
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # x: [B, T, D] -> logits [B, T, V]
        cfg = self.cfg
        logits = self.tp.enter(x) @ self.param("w", (cfg.d_model, cfg.vocab), _normal(cfg.d_model))
        logits = logits + self.param("b", (cfg.vocab,), hk.initializers.Constant(0.0))
        return self.tp.constrain(logits, ("batch", "seq", "vocab"))


def block_stack(cfg: ModelConfig, tp: TensorParallel, x: jnp.ndarray) -> jnp.ndarray:
    """L blocks, parameters stacked on a leading layer dim and scanned; remat wraps each block."""

    def one_block(x: jnp.ndarray) -> jnp.ndarray:
        return Block(cfg, tp, "block")(x)

    unroll = cfg.n_layers if cfg.unroll_layers else 1
    with jax.named_scope("layer_stack"):  # the slicing of stacked parameters and stacking of their gradients
        if not cfg.local_attention_window:
            return hk.layer_stack(cfg.n_layers, unroll=unroll, name="layers")(rematerialised(cfg, one_block))(x)
        return _windowed_stack(cfg, tp, x, unroll)


def _windowed_stack(cfg: ModelConfig, tp: TensorParallel, x: jnp.ndarray, unroll: int) -> jnp.ndarray:
    """Local and global layers in one scan: each layer's attention window is a per-layer input, so every layer is
    still one compiled block (a global layer's window is the whole context)."""

    def one_block(x: jnp.ndarray, window: jnp.ndarray) -> tuple[jnp.ndarray, None]:
        return Block(cfg, tp, "block")(x, window), None

    windows = jnp.asarray(cfg.layer_windows(), dtype=jnp.int32)  # [L]
    stack = hk.layer_stack(cfg.n_layers, with_per_layer_inputs=True, unroll=unroll, name="layers")
    return stack(rematerialised(cfg, one_block))(x, windows)[0]


def rematerialised(cfg: ModelConfig, fn):
    """``jax.checkpoint`` (through haiku) around a block, with the variant's policy of what it saves."""
    return fn if cfg.remat is Remat.NONE else hk.remat(fn, policy=_REMAT_POLICIES[cfg.remat]())


def logits_fn(cfg: ModelConfig, tp: TensorParallel, ids: jnp.ndarray) -> jnp.ndarray:
    embed = Embed(cfg, tp, "embed")
    x = embed(ids)  # [B, T, D]
    x = block_stack(cfg, tp, x)
    x = LayerNorm(cfg, tp, "ln_f")(x)
    return embed.attend(x) if cfg.tied_embeddings else LMHead(cfg, tp, "lm_head")(x)  # [B, T, V]


def cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray, tp: TensorParallel) -> jnp.ndarray:
    """Mean next-token loss from vocab-sharded logits [B, T, V] (Megatron's vocab-parallel cross-entropy)."""
    with jax.named_scope("loss"):
        return _cross_entropy(logits, targets, tp)


def _cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray, tp: TensorParallel) -> jnp.ndarray:
    logits = logits.astype(jnp.float32)
    rows = logits.shape[-1]
    shift = tp.pmax(jax.lax.stop_gradient(logits.max(-1)))  # [B, T]
    shifted = logits - shift[..., None]
    sum_exp = tp.exit(jnp.exp(shifted).sum(-1))  # [B, T]
    local_targets = targets - tp.index() * rows
    owned = (local_targets >= 0) & (local_targets < rows)
    picked = jnp.take_along_axis(shifted, jnp.clip(local_targets, 0, rows - 1)[..., None], axis=-1)[..., 0]
    target_logit = tp.exit(jnp.where(owned, picked, 0.0))  # [B, T]
    return (jnp.log(sum_exp) - target_logit).mean()


def model_loss(cfg: ModelConfig, tp: TensorParallel, batch: dict[str, jnp.ndarray]) -> jnp.ndarray:
    return cross_entropy(logits_fn(cfg, tp, batch["inputs"]), batch["targets"], tp)


def block_loss(cfg: ModelConfig, tp: TensorParallel, batch: dict[str, jnp.ndarray]) -> jnp.ndarray:
    """One block forward and backward: a scalar from its output against a fixed random cotangent. The block is
    layer 0's, which attends globally also where other layers are local."""
    block = rematerialised(cfg, lambda x: Block(cfg, tp, "block")(x))
    y = block(batch["x"].astype(_dtype(cfg)))  # [B, T, D]
    return (y.astype(jnp.float32) * batch["cotangent"]).mean()


# --- named remat policies (kept below the model so that its source lines, which the lowered program's locations
# cite and the TPU compile cache keys on, stay where they were) ---------------------------------------------------

ATTENTION_OUTPUT = "attention_output"  # the checkpoint_name of the attention core's output [B, T, H, K]

_REMAT_POLICIES = {  # Remat -> a factory of its jax.checkpoint policy (None: save nothing)
    Remat.FULL: lambda: None,
    Remat.DOTS: lambda: jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    Remat.ATTN: lambda: jax.checkpoint_policies.save_only_these_names(ATTENTION_OUTPUT),
}


def _tag_attention_output(cfg: ModelConfig, out: jnp.ndarray) -> jnp.ndarray:
    """Names the attention output for the ``attn`` policy; only there, so the other programs keep their jaxpr."""
    return checkpoint_name(out, ATTENTION_OUTPUT) if cfg.remat is Remat.ATTN else out


# --- decoding: the same modules, with a KV cache threaded through the layer stack -------------------------------


class _CachedAttention(Attention):
    """Attention decoding with a layer's cache, given at construction so that the block calls it as it calls
    Attention; the updated cache is kept for the block to return. (Training builds Attention itself, so its programs
    trace exactly as before.)"""

    def __init__(self, cfg: ModelConfig, tp: TensorParallel, name: str, cache: KVCache):
        super().__init__(cfg, tp, name)
        self.cache, self.updated_cache = cache, None

    def __call__(self, x: jnp.ndarray, window: jnp.ndarray | None = None) -> jnp.ndarray:  # type: ignore[override]
        out, self.updated_cache = super().__call__(x, window, self.cache)
        return out


def decode_logits(
    cfg: ModelConfig, tp: TensorParallel, layers: tuple[Any, ...], ids: jnp.ndarray, cache: KVCache
) -> tuple[jnp.ndarray, KVCache]:
    """Logits [B, T, V] of ``ids`` [B, T] at positions cache.pos .. cache.pos+T-1, and the cache with their keys
    and values written: prefill (T = the prompt) and one decode step (T = 1) alike. Called inside ``hk.transform``,
    whose parameters are the model's outside the layer stack; ``layers`` holds each layer's (``unstack_layers``) and
    ``cache`` each layer's k and v [B, C, H, K]. The layers are unrolled, each one the same Block applied with its
    own parameters, so that a decode step reads every weight where it lies: a layer sliced out of stacked parameters
    (a scan, or an unrolled layer_stack) is a copy of its weights at every step on XLA CPU, whose dots read no slice
    in place. Local layers keep their window (model.config.ModelConfig.layer_windows)."""
    block = hk.without_apply_rng(hk.transform(lambda x, window, c: Block(cfg, tp, "block")(x, window, c)))
    embed = Embed(cfg, tp, "embed")
    x = embed(ids)  # [B, T, D]
    written = []
    for layer, (params, window) in enumerate(zip(layers, cfg.layer_windows())):
        x, layer_cache = block.apply(params, x, window if cfg.local_attention_window else None, cache.of_layer(layer))
        written.append(layer_cache)
    x = LayerNorm(cfg, tp, "ln_f")(x)
    logits = embed.attend(x) if cfg.tied_embeddings else LMHead(cfg, tp, "lm_head")(x)  # [B, T, V]
    return logits, cache.with_layers(written).advance(ids.shape[1])


LAYER_STACK = "layers"  # the name of block_stack's hk.layer_stack: the prefix of its parameters' module names


def unstack_layers(params: Any, layer_dim: int = 0) -> tuple[Any, tuple[Any, ...]]:
    """The training parameters as decoding takes them: (those outside the layer stack, one tree per layer). A layer's
    tree is what a lone Block's transform takes (its module names without the stack's prefix) and each leaf is that
    layer's slice along ``layer_dim`` (0; 1 where xmap's mp dim leads). Done once, outside the decode step."""
    prefix = LAYER_STACK + "/"
    outside = {name: leaves for name, leaves in params.items() if not name.startswith(prefix)}
    stacked = {name[len(prefix) :]: leaves for name, leaves in params.items() if name.startswith(prefix)}
    layers = jax.tree_util.tree_leaves(stacked)[0].shape[layer_dim]
    take = lambda layer: lambda a: jax.lax.index_in_dim(a, layer, layer_dim, keepdims=False)  # noqa: E731
    return outside, tuple(jax.tree_util.tree_map(take(layer), stacked) for layer in range(layers))
