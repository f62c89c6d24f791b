"""Prefill and KV-cache decoding: every strategy's decode logits equal the full-sequence forward at each position,
greedy tokens equal the single device's, and sampling keeps what it should (f32, tiny preset)."""

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_devices, skip_without_xmap

from kernels.attention import cached_attention, causal_attention
from kernels.rotary import apply_rotary, apply_rotary_at
from model.config import ConfigError, Head, Mesh, Remat, Residual, Strategy, Variant, apply_overrides, get_preset
from model.decode import Sampler, check_generation, generate, kv_cache_bytes, make_decoder, nucleus_logits
from model.gptj import logits_fn
from model.sharding import TensorParallel

PRESET = get_preset("tiny")
LOGITS_RTOL = 1e-5  # the loss's bound in tests/test_equivalence.py, on every position's logits
PROMPT, NEW, CONTEXT = 8, 4, 16


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@functools.cache
def decoder(residual: Residual, head: Head, strategy: Strategy):
    variant = Variant(residual, head, strategy, Remat.NONE)
    mesh = Mesh(1, 1) if strategy is Strategy.SINGLE else PRESET.mesh
    return make_decoder(PRESET, variant, mesh)


def token_ids(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, PRESET.model.vocab, (PRESET.batch, PROMPT + NEW)).astype(np.int32)


@functools.cache
def full_forward(residual: Residual, head: Head) -> np.ndarray:
    """The training model's logits [B, T, V] of the whole sequence, on one device."""
    dec = decoder(residual, head, Strategy.SINGLE)
    fn = hk.without_apply_rng(hk.transform(lambda ids: logits_fn(dec.cfg, TensorParallel(), ids)))
    return np.asarray(jax.jit(fn.apply)(dec.program.init_params(0), jnp.asarray(token_ids())))


def decode_logits(residual: Residual, head: Head, strategy: Strategy) -> list[np.ndarray]:
    """Logits [B, V] of the prompt's last position, then of each fed token's."""
    dec, ids = decoder(residual, head, strategy), token_ids()
    params = dec.init_params(0)
    logits, cache = dec.prefill(params, ids[:, :PROMPT], CONTEXT)
    out = [np.asarray(logits)]
    for t in range(PROMPT, PROMPT + NEW):
        logits, cache = dec.step(params, cache, ids[:, t])
        out.append(np.asarray(logits))
    assert int(np.asarray(cache.pos)) == PROMPT + NEW
    return out


def assert_decode_matches_forward(residual: Residual, head: Head, strategy: Strategy) -> None:
    reference = full_forward(residual, head)
    positions = range(PROMPT - 1, PROMPT + NEW)
    errors = [
        relative_error(got, reference[:, t]) for got, t in zip(decode_logits(residual, head, strategy), positions)
    ]
    print(f"{strategy.value} {residual.value}-{head.value}: worst logits relative error {max(errors):.2e}")
    assert max(errors) <= LOGITS_RTOL, errors


CASES = [(r, Head.H256, s) for r in Residual for s in (Strategy.SINGLE, Strategy.PJIT, Strategy.SHARD_MAP)]
CASES += [(Residual.PARALLEL, Head.H128, Strategy.SHARD_MAP), (Residual.SERIAL, Head.H128, Strategy.PJIT)]


@pytest.mark.parametrize("residual, head, strategy", CASES, ids=[f"{r.value}-{h.value}-{s.value}" for r, h, s in CASES])
def test_decode_logits_equal_the_full_forward(residual, head, strategy):
    require_devices(1 if strategy is Strategy.SINGLE else PRESET.mesh.devices)
    assert_decode_matches_forward(residual, head, strategy)


@pytest.mark.parametrize("residual", list(Residual), ids=lambda r: r.value)
def test_xmap_decode_logits_equal_the_full_forward(residual):
    skip_without_xmap()
    require_devices(PRESET.mesh.devices)
    assert_decode_matches_forward(residual, Head.H256, Strategy.XMAP)


# The published runs' options at once: a local window in every second layer (GPT-Neo), ReLU, tied embeddings and an
# attention width other than d_model (MaxText).
OPTIONS = ["local_attention_window=3", "local_attention_every=2", "activation=relu", "tied_embeddings=true"]
OPTIONS.append("attention_heads=8")  # 8 x 256 = 2048 wide at d_model 1024


@pytest.mark.parametrize("strategy", [Strategy.PJIT, Strategy.SHARD_MAP], ids=lambda s: s.value)
def test_decode_with_the_model_options_equals_the_full_forward(strategy):
    require_devices(PRESET.mesh.devices)
    preset = apply_overrides(PRESET, OPTIONS)
    variant = Variant(Residual.SERIAL, Head.H256, strategy, Remat.NONE)
    dec, ids = make_decoder(preset, variant, PRESET.mesh), token_ids()
    single = make_decoder(preset, variant.replace(strategy=Strategy.SINGLE), Mesh(1, 1))
    fn = hk.without_apply_rng(hk.transform(lambda i: logits_fn(single.cfg, TensorParallel(), i)))
    reference = np.asarray(jax.jit(fn.apply)(single.program.init_params(0), jnp.asarray(ids)))
    params = dec.init_params(0)
    logits, cache = dec.prefill(params, ids[:, :PROMPT], CONTEXT)
    errors = [relative_error(np.asarray(logits), reference[:, PROMPT - 1])]
    for t in range(PROMPT, PROMPT + NEW):
        logits, cache = dec.step(params, cache, ids[:, t])
        errors.append(relative_error(np.asarray(logits), reference[:, t]))
    assert max(errors) <= LOGITS_RTOL, errors


def greedy(strategy: Strategy) -> np.ndarray:
    dec = decoder(Residual.PARALLEL, Head.H256, strategy)
    prompt = token_ids(1)[:, :PROMPT]
    return generate(dec, dec.init_params(0), prompt, NEW, Sampler(), jax.random.PRNGKey(0), CONTEXT)


@pytest.mark.parametrize("strategy", [Strategy.PJIT, Strategy.SHARD_MAP, Strategy.XMAP], ids=lambda s: s.value)
def test_greedy_tokens_equal_the_single_device(strategy):
    if strategy is Strategy.XMAP:
        skip_without_xmap()
    require_devices(PRESET.mesh.devices)
    reference = greedy(Strategy.SINGLE)
    assert reference.shape == (PRESET.batch, NEW)
    np.testing.assert_array_equal(greedy(strategy), reference)


def test_rotary_at_an_offset_is_the_full_sequence_rotary_sliced():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 12, 3, 16)), jnp.float32)  # [B, T, H, K]
    np.testing.assert_allclose(apply_rotary_at(x, 8, 0), apply_rotary(x, 8), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(apply_rotary_at(x[:, 5:], 8, 5), apply_rotary(x, 8)[:, 5:], rtol=1e-5, atol=1e-5)


def test_cached_attention_over_a_filled_cache_is_causal_attention():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 6, 2, 8)), jnp.float32) for _ in range(3))
    cache_k = jnp.zeros((2, 10, 2, 8)).at[:, :6].set(k)  # positions past the fill hold zeros, never read
    cache_v = jnp.full((2, 10, 2, 8), 1e6).at[:, :6].set(v)
    np.testing.assert_allclose(cached_attention(q, cache_k, cache_v, 0), causal_attention(q, k, v), atol=1e-5)
    last = cached_attention(q[:, 5:], cache_k, cache_v, 5)  # the last position alone, at its offset
    np.testing.assert_allclose(last, causal_attention(q, k, v)[:, 5:], atol=1e-5)


def test_kv_cache_bytes_by_hand():
    cfg = get_preset("gptj-6b").model
    # GPT-J-6B at batch 1 and 2048 positions in bf16: keys and values x 28 layers x 2048 x 16 heads x 256 x 2 bytes
    assert kv_cache_bytes(cfg, 1, 2048, "bfloat16") == 2 * 28 * 2048 * 16 * 256 * 2 == 939_524_096
    assert kv_cache_bytes(cfg, 8, 128, "float32") == 2 * 28 * 8 * 128 * 16 * 256 * 4


def test_temperature_zero_is_greedy():
    logits = jnp.asarray([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    np.testing.assert_array_equal(Sampler().sample(jax.random.PRNGKey(0), logits), [1, 0])


def test_top_p_keeps_exactly_the_smallest_nucleus():
    probs = np.array([[0.05, 0.5, 0.15, 0.3]])  # ranked: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    logits = jnp.asarray(np.log(probs), jnp.float32)
    kept = lambda p: set(np.flatnonzero(np.isfinite(np.asarray(nucleus_logits(logits, p))[0])))  # noqa: E731
    assert kept(0.5) == {1}  # 0.5 alone reaches 0.5
    assert kept(0.8) == {1, 3}  # 0.5 + 0.3 = 0.8
    assert kept(0.81) == {1, 3, 2}
    assert kept(1.0) == {0, 1, 2, 3}
    assert kept(0.01) == {1}  # the most likely token always stays


def test_sampling_is_determined_by_the_key():
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((4, 50)), jnp.float32)
    sampler = Sampler(temperature=1.0, top_p=0.9)
    a, b = (sampler.sample(jax.random.PRNGKey(7), logits) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    draws = {tuple(np.asarray(sampler.sample(jax.random.PRNGKey(k), logits))) for k in range(20)}
    assert len(draws) > 1  # the key matters: not greedy in disguise
    nucleus = np.isfinite(np.asarray(nucleus_logits(logits, 0.9)))
    assert all(nucleus[row, token] for draw in draws for row, token in enumerate(draw))


@pytest.mark.parametrize(
    "temperature, top_p, message",
    [(-0.5, 1.0, "temperature"), (1.0, 0.0, "top-p"), (1.0, 1.5, "top-p"), (float("nan"), 1.0, "temperature")],
)
def test_sampler_refuses_bad_settings(temperature, top_p, message):
    with pytest.raises(ConfigError, match=message):
        Sampler(temperature=temperature, top_p=top_p)


@pytest.mark.parametrize(
    "batch, prompt, new, message",
    [(0, 4, 1, "batch"), (1, 0, 1, "prompt"), (1, 4, 0, "max-new-tokens"), (1, 60, 8, "context holds 64")],
)
def test_generation_sizes_are_checked(batch, prompt, new, message):
    with pytest.raises(ConfigError, match=message):
        check_generation(PRESET.model.context, batch, prompt, new)


def test_a_prompt_longer_than_the_context_is_refused():
    dec = decoder(Residual.PARALLEL, Head.H256, Strategy.SINGLE)
    with pytest.raises(ConfigError, match="longer than the context"):
        dec.prefill(None, np.zeros((1, 20), np.int32), 16)
