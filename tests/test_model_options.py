"""The model options beyond GPT-J's (attention width, ReLU, tied embeddings, local attention): each computes under
every strategy what it computes on one device, and on one device what a hand-written computation does."""

import dataclasses
import functools

import haiku as hk
import jax
import numpy as np
import pytest
from conftest import require_devices, skip_without_xmap

from bench.analysis import flops
from bench.compile.step import static_flop_fields
from kernels.attention import causal_attention
from model.config import (
    ConfigError,
    Layout,
    Mesh,
    ModelConfig,
    Strategy,
    Variant,
    apply_overrides,
    get_preset,
    model_for,
    validate_run,
)
from model.gptj import Embed, FeedForward, LayerNorm, block_stack, logits_fn
from model.program import Program, count_params
from model.sharding import TensorParallel
from model.strategies import make_driver

PRESET = get_preset("tiny")  # 2 layers, d_model 1024, seq 16, mesh dp=2 x mp=4
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4  # tests/test_equivalence.py's bounds for f32
WINDOW = 4  # keys a local layer's query sees, well inside tiny's 16 positions

# Each option alone, on the block the published runs that need it use (MaxText and GPT-Neo are serial).
OPTIONS = {
    # 4 heads of 128: an attention width of 512 at d_model 1024, split one head per mp shard
    "heads": ["attention_heads=4"],
    "relu": ["activation=relu"],
    "tied": ["tied_embeddings=true"],
    "local": [f"local_attention_window={WINDOW}", "local_attention_every=2"],
}


def variant(strategy: Strategy, layout: Layout = Layout.MEGATRON) -> Variant:
    return Variant.parse(f"serial-h128-{strategy.value}-full").replace(layout=layout)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@functools.cache
def run(option: str, strategy: Strategy, layout: Layout = Layout.MEGATRON) -> tuple[float, dict]:
    preset = apply_overrides(PRESET, OPTIONS[option])
    program = Program.from_preset(preset, model_for(preset, variant(strategy, layout)))
    driver = make_driver(strategy, program, preset.mesh, layout=layout)
    params, batch = program.init_params(seed=0), program.example_batch(seed=0)
    loss, grads = driver.grad_step()(driver.place_params(params), driver.place_batch(batch))
    return float(np.asarray(loss).reshape(-1)[0]), driver.to_global(grads)


def assert_matches_reference(option: str, strategy: Strategy, layout: Layout = Layout.MEGATRON) -> None:
    loss, grads = run(option, strategy, layout)
    ref_loss, ref_grads = run(option, Strategy.SINGLE)
    assert abs(loss - ref_loss) / abs(ref_loss) <= LOSS_RTOL
    errors = jax.tree_util.tree_map(relative_error, grads, ref_grads)
    assert max(jax.tree_util.tree_leaves(errors)) <= GRAD_RTOL, errors


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("strategy", [Strategy.PJIT, Strategy.SHARD_MAP], ids=lambda s: s.value)
def test_option_matches_single_device(strategy, option):
    require_devices(PRESET.mesh.devices)
    assert_matches_reference(option, strategy)


@pytest.mark.parametrize("strategy", [Strategy.PJIT, Strategy.SHARD_MAP], ids=lambda s: s.value)
def test_tied_embeddings_under_fsdp_match_single_device(strategy):
    """The one table is gathered over dp twice, at the lookup and at the LM head; its gradient sums both."""
    require_devices(PRESET.mesh.devices)
    assert_matches_reference("tied", strategy, Layout.FSDP)


@pytest.mark.parametrize("option", OPTIONS)
def test_xmap_option_matches_single_device(option):
    skip_without_xmap()
    require_devices(PRESET.mesh.devices)
    assert_matches_reference(option, Strategy.XMAP)


def test_each_option_changes_the_loss():
    """Otherwise the equalities above could hold of an option that is ignored."""
    default = Program.from_preset(PRESET, model_for(PRESET, variant(Strategy.SINGLE)))
    driver = make_driver(Strategy.SINGLE, default, Mesh())
    base, _ = driver.grad_step()(
        driver.place_params(default.init_params()), driver.place_batch(default.example_batch())
    )
    for option in OPTIONS:
        assert abs(run(option, Strategy.SINGLE)[0] - float(base)) > 1e-4, option


def _cfg(*overrides: str) -> ModelConfig:
    return model_for(apply_overrides(PRESET, list(overrides)), variant(Strategy.SINGLE))


def _apply(cfg: ModelConfig, fn, *args):
    transformed = hk.without_apply_rng(hk.transform(fn))
    params = transformed.init(jax.random.PRNGKey(1), *args)
    return params, np.asarray(transformed.apply(params, *args))


# --- each option against a hand-written computation ----------------------------------------------------------------


def test_attention_width_is_heads_times_head_dim():
    cfg = _cfg(*OPTIONS["heads"])
    assert (cfg.n_heads, cfg.attention_width, cfg.d_model) == (4, 512, 1024)
    shapes = Program.from_preset(PRESET, cfg).param_shapes()["layers/block/attn"]
    assert shapes["w_q"].shape == shapes["w_k"].shape == shapes["w_v"].shape == (2, 1024, 512)  # [L, D, H*K]
    assert shapes["w_o"].shape == (2, 512, 1024)  # [L, H*K, D]


def test_relu_feed_forward_is_the_hand_computation():
    cfg = _cfg("activation=relu")
    x = np.random.default_rng(0).standard_normal((2, 5, cfg.d_model), dtype=np.float32)  # [B, T, D]

    def ff(x):
        module = FeedForward(cfg, TensorParallel(), "ff")
        return module(x) + module.out_bias()

    params, out = _apply(cfg, ff, x)
    p = {k: np.asarray(v) for k, v in params["ff"].items()}
    hand = np.maximum(x @ p["w_in"] + p["b_in"], 0.0) @ p["w_out"] + p["b_out"]
    np.testing.assert_allclose(out, hand, rtol=1e-5, atol=1e-5)


def test_tied_lm_head_is_the_embedding_table_transposed():
    cfg = _cfg("tied_embeddings=true")
    ids = np.arange(12, dtype=np.int32)[None] % cfg.vocab  # [1, T]
    tp = TensorParallel()
    params, logits = _apply(cfg, lambda ids: logits_fn(cfg, tp, ids), ids)
    assert set(params) == {
        "embed",
        "layers/block/attn",
        "layers/block/ff",
        "layers/block/ln_1",
        "layers/block/ln_2",
        "ln_f",
    }  # no LM head of its own
    features_fn = hk.without_apply_rng(
        hk.transform(lambda ids: LayerNorm(cfg, tp, "ln_f")(block_stack(cfg, tp, Embed(cfg, tp, "embed")(ids))))
    )
    features = np.asarray(features_fn.apply(params, ids))  # [1, T, D]
    hand = features @ np.asarray(params["embed"]["table"]).T  # [1, T, V]
    np.testing.assert_allclose(logits, hand, rtol=1e-5, atol=1e-5)


def _masked_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, window: int) -> np.ndarray:
    """Attention with its mask written out position by position: t sees s when t - window < s <= t."""
    seq, d_head = q.shape[1], q.shape[-1]
    mask = np.zeros((seq, seq), dtype=bool)
    for t in range(seq):
        for s in range(seq):
            mask[t, s] = t - window < s <= t
    scores = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(d_head)
    scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk->bthk", weights, v)


@pytest.mark.parametrize("window", [1, WINDOW, 16])
def test_local_attention_is_the_hand_masked_attention(window):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 16, 3, 8), dtype=np.float32) for _ in range(3))  # [B, T, H, K]
    out = np.asarray(causal_attention(q, k, v, window))
    np.testing.assert_allclose(out, _masked_attention(q, k, v, window), rtol=1e-5, atol=1e-5)
    if window >= 16:  # a window as long as the sequence is plain causal attention
        np.testing.assert_allclose(out, np.asarray(causal_attention(q, k, v)), rtol=1e-6, atol=1e-6)


def test_layer_one_is_local_and_layer_zero_global():
    """GPT-Neo's [["global", "local"], 16]: layer 0 global, layer 1 local (layer_windows), as the model runs it: with
    every layer local, position t sees tokens t - 2 (window - 1) .. t through two layers; with layer 0 global, all."""
    assert _cfg(*OPTIONS["local"]).layer_windows() == (PRESET.model.context, WINDOW)
    ids = np.arange(16, dtype=np.int32)[None] % PRESET.model.vocab  # [1, T]
    last, reach = 15, 2 * (WINDOW - 1)

    def last_logits_change(cfg: ModelConfig, position: int) -> bool:
        params, logits = _apply(cfg, lambda ids: logits_fn(cfg, TensorParallel(), ids), ids)
        changed = ids.copy()
        changed[0, position] = (ids[0, position] + 1) % cfg.vocab
        fn = hk.without_apply_rng(hk.transform(lambda ids: logits_fn(cfg, TensorParallel(), ids)))
        return not np.allclose(np.asarray(fn.apply(params, changed))[0, last], logits[0, last], atol=1e-6)

    all_local = _cfg(f"local_attention_window={WINDOW}", "local_attention_every=1")
    assert not last_logits_change(all_local, last - reach - 1)
    assert last_logits_change(all_local, last - reach)
    assert last_logits_change(_cfg(*OPTIONS["local"]), 0)


# --- FLOPs of the options --------------------------------------------------------------------------------------------


def test_parameter_count_with_attention_width_and_tied_embeddings():
    # a parallel block has GPT-J's Hugging Face layout, so the model's own parameter tree counts as the formula
    cfg = model_for(
        apply_overrides(PRESET, ["attention_heads=4", "tied_embeddings=true"]),
        Variant.parse("parallel-h128-single-full"),
    )
    counted = count_params(Program.from_preset(PRESET, cfg).param_shapes())
    assert counted == flops.gptj_param_count(2, 1024, 1024, 256, attn_width=512, tied_embeddings=True)


def test_static_flops_count_local_layers_over_their_window():
    preset = apply_overrides(PRESET, OPTIONS["local"])
    program = Program.from_preset(preset, model_for(preset, variant(Strategy.SINGLE)))
    fields = static_flop_fields(program)
    tokens = preset.batch * preset.seq
    expected = flops.hardware_flops(
        fields["n_params"], 2, 1024, 16, tokens, remat=True, local_layers=1, local_window=WINDOW
    )
    assert fields["hardware_flops_per_step_total"] == expected


# --- bad input -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["activation=rleu"], r"unknown activation 'rleu'; valid activation values: gelu, relu"),
        (["tied_embeddings=yes"], r"--set tied_embeddings=yes: expected true or false"),
        (["attention_heads=-1"], r"attention_heads -1 must be at least 0 \(0: d_model / d_head\)"),
        (["attention_heads=2"], r"n_heads 2 \(attention_heads\) is not divisible by mp=4"),
        (["local_attention_window=-1", "local_attention_every=2"], r"must be at least 0 \(both 0: no local"),
        (["local_attention_window=4", "local_attention_every=-2"], r"must be at least 0 \(both 0: no local"),
        (["local_attention_window=4"], r"window 4 with local_attention_every 0: set both .* or neither"),
        (["local_attention_every=2"], r"window 0 with local_attention_every 2: set both .* or neither"),
        (["local_attention_window=4", "local_attention_every=3"], r"every 3 is more than n_layers 2"),
    ],
)
def test_bad_options_are_refused_with_what_is_valid(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_run(apply_overrides(PRESET, overrides), variant(Strategy.PJIT), PRESET.mesh, 8)


def test_local_attention_on_another_kernel_is_refused():
    preset = apply_overrides(PRESET, OPTIONS["local"])
    with pytest.raises(
        ConfigError, match="local attention runs on the reference attention kernel only, not 'blockwise'"
    ):
        validate_run(preset, Variant.parse("serial-h128-pjit-full+blockwise"), PRESET.mesh, 8)


def test_defaults_keep_gpt_j_heads():
    cfg = dataclasses.replace(ModelConfig())
    assert (cfg.n_heads, cfg.attention_width, cfg.n_local_layers) == (16, 4096, 0)
    assert set(cfg.layer_windows()) == {cfg.context}
