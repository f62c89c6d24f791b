"""Prefill and KV-cache decoding for every strategy: the training model's layers (model.gptj.decode_logits) driven
as the training step is (model.strategies), and sampling.

A decoder is built for one variant on one mesh. ``prefill`` runs the prompt [B, P] through the model once, writing
every layer's keys and values into a cache of C positions; each ``step`` feeds one token per sequence at the cache's
position and appends its keys and values. Both return the logits [B, V] of the last position they fed. The cache is
split over dp by sequence and over mp by whole heads (model.sharding.CACHE_AXES); the logits come back split over
mp by vocabulary, as the LM head makes them. Both take the training parameters unstacked once into one tree per
layer (``init_params``, model.gptj.unstack_layers) and a cache of one k and v per layer, which the step donates: it
reads each weight where it lies and writes each layer's new position in place, copying neither.

Layouts by strategy: single and pjit hold global arrays (pjit with NamedShardings); shard_map the same global arrays,
its body the local view; xmap holds parameters as [mp, ...local] (model.strategies.XmapDriver) and each layer's
cache as [dp, mp, B/dp, C, H/mp, K], its named axes leading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from model.config import ConfigError, Mesh, Preset, Strategy, Variant, model_for
from model.gptj import decode_logits, unstack_layers
from model.kv_cache import KVCache
from model.program import Params, Program
from model.sharding import CACHE_AXES, DP, MP, TensorParallel, param_specs, spec_for
from model.strategies import Driver, XmapDriver, make_driver

CACHE_SPEC = spec_for(CACHE_AXES)  # each layer's k and v
IDS_SPEC = PartitionSpec(DP, None)  # [B, T]
LOGITS_SPEC = PartitionSpec(DP, MP)  # [B, V]


def kv_cache_bytes(cfg: Any, batch: int, context: int, dtype: Any) -> int:
    """Bytes of the whole cache, over all devices: keys and values of every layer, sequence, position and head.
    2 x L x B x C x H x K x bytes per element (GPT-J-6B, B=1, C=2048, bf16: 2 x 28 x 2048 x 16 x 256 x 2 = 939.5 MB)."""
    return 2 * cfg.n_layers * batch * context * cfg.n_heads * cfg.d_head * np.dtype(dtype).itemsize


def check_generation(context: int, batch: int, prompt_tokens: int, max_new_tokens: int) -> None:
    """The sizes a generation needs, checked before anything compiles."""
    if batch < 1:
        raise ConfigError(f"batch {batch}: a generation needs at least 1 sequence")
    if prompt_tokens < 1:
        raise ConfigError(f"prompt of {prompt_tokens} tokens: a prompt needs at least 1 token")
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: generate at least 1 token")
    if prompt_tokens + max_new_tokens > context:
        raise ConfigError(
            f"a prompt of {prompt_tokens} tokens and {max_new_tokens} new ones need {prompt_tokens + max_new_tokens} "
            f"positions; the context holds {context}: shorten the prompt or generate at most "
            f"{max(context - prompt_tokens, 0)} tokens"
        )


@dataclass(frozen=True)
class Sampler:
    """Greedy at temperature 0; otherwise softmax(logits / temperature) restricted to the top-p nucleus (Holtzman
    et al. 2019, arXiv:1904.09751: the smallest set of tokens whose probabilities sum to at least top_p)."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"temperature {self.temperature}: must be at least 0 (0: greedy)")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p {self.top_p}: must be in (0, 1] (1: the whole vocabulary)")

    def sample(self, key: jax.Array, logits: jnp.ndarray) -> jnp.ndarray:
        """One token per sequence from logits [B, V]: [B] int32. ``key`` is used only when sampling."""
        if self.temperature == 0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return jax.random.categorical(key, nucleus_logits(logits / self.temperature, self.top_p)).astype(jnp.int32)


def nucleus_logits(logits: jnp.ndarray, top_p: float) -> jnp.ndarray:
    """Logits [B, V] with every token outside the top-p nucleus set to -inf. A token is kept when the probability
    of the tokens ranked above it is below top_p, so the most likely token is always kept."""
    logits = logits.astype(jnp.float32)
    order = jnp.argsort(-logits, axis=-1)  # [B, V]
    ranked = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(ranked, axis=-1)
    above = jnp.cumsum(probs, axis=-1) - probs  # mass ranked above each token
    keep_ranked = above < top_p
    keep = jnp.zeros_like(keep_ranked).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_ranked)
    return jnp.where(keep, logits, -jnp.inf)


class Decoder:
    """Prefill and decode steps of one variant on one mesh (see the module docstring for the layouts)."""

    def __init__(self, preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any] | None = None):
        self.cfg = model_for(preset, variant)
        self.variant, self.mesh_shape = variant, mesh
        self.program = Program.from_preset(preset, self.cfg)
        self.driver: Driver = make_driver(variant.strategy, self.program, mesh, devices, variant.layout)
        self.devices = list(self.driver.mesh.devices.flat)
        # the decode step's parameters, specified from the global ones (their layer dim leads)
        self.param_specs = param_specs(jax.eval_shape(unstack_layers, self.program.param_shapes()), variant.layout)
        self._run = self._compiled()

    # --- the program ------------------------------------------------------------------------------------------

    def _apply(self, tp: TensorParallel) -> Callable[[Params, jnp.ndarray, KVCache], tuple[jnp.ndarray, KVCache]]:
        fn = hk.without_apply_rng(hk.transform(lambda *args: decode_logits(self.cfg, tp, *args)))

        def run(params: Params, ids: jnp.ndarray, cache: KVCache) -> tuple[jnp.ndarray, KVCache]:
            outside, layers = params
            logits, cache = fn.apply(outside, layers, ids, cache)  # [B, T, V]
            return logits[:, -1], cache  # [B, V]

        return run

    def _unstacked(self, params: Params) -> Params:
        """The training parameters as the decode step takes them (model.gptj.unstack_layers)."""
        return unstack_layers(params, layer_dim=1 if self._is_xmap() else 0)

    def _cache_specs(self, pos: Any) -> KVCache:
        layers = (CACHE_SPEC,) * self.cfg.n_layers
        return KVCache(layers, layers, pos)

    def _compiled(self) -> Callable:
        driver, strategy = self.driver, self.variant.strategy
        if strategy is Strategy.SINGLE:
            return jax.jit(self._apply(driver.tp), donate_argnums=(2,))
        if strategy is Strategy.PJIT:
            named = lambda spec: NamedSharding(driver.mesh, spec)  # noqa: E731
            cache = jax.tree_util.tree_map(named, self._cache_specs(PartitionSpec()), is_leaf=_is_spec)
            params = driver._named(self.param_specs)
            return jax.jit(
                self._apply(driver.tp),
                in_shardings=(params, named(IDS_SPEC), cache),
                out_shardings=(named(LOGITS_SPEC), cache),
                donate_argnums=(2,),
            )
        if strategy is Strategy.SHARD_MAP:
            cache = self._cache_specs(PartitionSpec())
            fn = driver._shard_map(
                self._apply(driver.tp),
                in_specs=(self.param_specs, IDS_SPEC, cache),
                out_specs=(LOGITS_SPEC, cache),
            )
            return jax.jit(fn, donate_argnums=(2,))
        return self._xmapped()

    def _xmapped(self) -> Callable:
        driver: XmapDriver = self.driver  # type: ignore[assignment]
        layers = ({0: DP, 1: MP},) * self.cfg.n_layers
        cache_axes = KVCache(layers, layers, {})
        in_axes = (driver._axes(self.param_specs, MP), {0: DP}, cache_axes)
        out_axes = ({0: DP, 1: MP}, cache_axes)
        return driver._xmap(self._apply(driver.tp), in_axes, out_axes, donate_argnums=(2,))

    # --- layouts ----------------------------------------------------------------------------------------------

    def _is_xmap(self) -> bool:
        return self.variant.strategy is Strategy.XMAP

    def _cache_shape(self, batch: int, length: int) -> tuple[int, ...]:
        """One layer's k (or v)."""
        cfg, dp, mp = self.cfg, self.mesh_shape.dp, self.mesh_shape.mp
        if self._is_xmap():
            return (dp, mp, batch // dp, length, cfg.n_heads // mp, cfg.d_head)
        return (batch, length, cfg.n_heads, cfg.d_head)

    def _ids(self, ids: Any) -> jnp.ndarray:
        ids = np.asarray(ids, np.int32)
        if self._is_xmap():  # [B, T] -> [dp, B/dp, T]
            return jnp.asarray(ids.reshape(self.mesh_shape.dp, -1, ids.shape[-1]))
        return jnp.asarray(ids)

    def _logits(self, logits: jnp.ndarray) -> jnp.ndarray:
        if self._is_xmap():  # [dp, mp, B/dp, V/mp] -> [B, V]
            dp, mp, rows, cols = logits.shape
            return jnp.transpose(logits, (0, 2, 1, 3)).reshape(dp * rows, mp * cols)
        return logits

    def _check_batch(self, batch: int) -> None:
        if batch % self.mesh_shape.dp:
            raise ConfigError(f"batch {batch} is not divisible by dp={self.mesh_shape.dp}")

    # --- the interface ----------------------------------------------------------------------------------------

    def init_params(self, seed: int = 0) -> Params:
        """The training model's initial parameters (model.program.Program.init_params) as ``decode_params``
        gives them."""
        return self.decode_params(self.program.init_params(seed))

    def decode_params(self, params: Params) -> Params:
        """Training-layout parameters (stacked layers, e.g. a converted checkpoint) placed for this strategy, then
        unstacked once (``_unstacked``): what ``prefill`` and ``step`` take."""
        placed = self.driver.place_params(params)
        if self._is_xmap():  # xmap's parameters are plain arrays, [mp, ...local]
            return jax.jit(self._unstacked)(placed)
        return jax.jit(self._unstacked, out_shardings=self.driver._named(self.param_specs))(placed)

    def init_cache(self, batch: int, length: int) -> KVCache:
        """An empty cache of ``length`` positions for ``batch`` sequences, in the compute dtype."""
        self._check_batch(batch)
        return KVCache.zeros(self.cfg.n_layers, self._cache_shape(batch, length), self.cfg.compute_dtype.value)

    def prefill(self, params: Params, ids: Any, context: int | None = None) -> tuple[jnp.ndarray, KVCache]:
        """The prompt ids [B, P] through the model into a new cache of ``context`` positions (default the model's
        context): the logits [B, V] of its last position and the cache."""
        ids = np.asarray(ids)
        context = self.cfg.context if context is None else context
        if ids.shape[1] > context:
            raise ConfigError(f"a prompt of {ids.shape[1]} tokens is longer than the context {context}")
        return self._call(params, ids, self.init_cache(ids.shape[0], context))

    def step(self, params: Params, cache: KVCache, tokens: Any) -> tuple[jnp.ndarray, KVCache]:
        """One token per sequence, tokens [B], at the cache's position: the logits [B, V] and the cache with it
        appended. The cache passed in is donated."""
        return self._call(params, jnp.asarray(tokens, jnp.int32)[:, None], cache)

    def _call(self, params: Params, ids: Any, cache: KVCache) -> tuple[jnp.ndarray, KVCache]:
        logits, cache = self._run(params, self._ids(ids), cache)
        return self._logits(logits), cache

    def abstract_cache(self, batch: int, length: int) -> KVCache:
        """Shapes (and, outside xmap, shardings) of a cache, for lowering without arrays."""
        self._check_batch(batch)
        dtype = jnp.dtype(self.cfg.compute_dtype.value)
        shape = self._cache_shape(batch, length)
        layers = self.cfg.n_layers
        if self.variant.strategy in (Strategy.SINGLE, Strategy.XMAP):
            k = (jax.ShapeDtypeStruct(shape, dtype),) * layers
            return KVCache(k, k, jax.ShapeDtypeStruct((), jnp.int32))
        named = lambda spec: NamedSharding(self.driver.mesh, spec)  # noqa: E731
        k = (jax.ShapeDtypeStruct(shape, dtype, sharding=named(CACHE_SPEC)),) * layers
        return KVCache(k, k, jax.ShapeDtypeStruct((), jnp.int32, sharding=named(PartitionSpec())))

    def _abstract_ids(self, batch: int, tokens: int) -> jax.ShapeDtypeStruct:
        if self._is_xmap():
            return jax.ShapeDtypeStruct((self.mesh_shape.dp, batch // self.mesh_shape.dp, tokens), jnp.int32)
        if self.variant.strategy is Strategy.SINGLE:
            return jax.ShapeDtypeStruct((batch, tokens), jnp.int32)
        return jax.ShapeDtypeStruct((batch, tokens), jnp.int32, sharding=NamedSharding(self.driver.mesh, IDS_SPEC))

    def lower_step(self, batch: int, context: int) -> Any:
        """The decode step, lowered from shapes alone (a TPU topology's devices need no arrays): jax.stages.Lowered."""
        return self.lower_prefill(batch, 1, context)

    def lower_prefill(self, batch: int, prompt_tokens: int, context: int) -> Any:
        params = jax.eval_shape(self._unstacked, self.driver.abstract_args()[0])
        if not self._is_xmap():
            params = jax.tree_util.tree_map(_with_sharding, params, self.driver._named(self.param_specs))
        return self._run.lower(params, self._abstract_ids(batch, prompt_tokens), self.abstract_cache(batch, context))


def make_decoder(preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any] | None = None) -> Decoder:
    return Decoder(preset, variant, mesh, devices)


def generate(
    decoder: Decoder,
    params: Params,
    prompt: Any,
    max_new_tokens: int,
    sampler: Sampler,
    key: jax.Array,
    context: int | None = None,
) -> np.ndarray:
    """``max_new_tokens`` tokens after each prompt [B, P]: [B, N] int32. ``key`` is split once per token."""
    prompt = np.asarray(prompt)
    context = decoder.cfg.context if context is None else context
    check_generation(context, prompt.shape[0], prompt.shape[1], max_new_tokens)
    logits, cache = decoder.prefill(params, prompt, context)
    tokens = []
    for i in range(max_new_tokens):
        key, sub = jax.random.split(key)
        token = sampler.sample(sub, logits)  # [B]
        tokens.append(np.asarray(token))
        if i + 1 < max_new_tokens:
            logits, cache = decoder.step(params, cache, token)
    return np.stack(tokens, axis=1)


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def _with_sharding(shape: jax.ShapeDtypeStruct, sharding: NamedSharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding)
