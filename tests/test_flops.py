"""FLOP formulas against hand counts, GPT-J's published figures, and XLA's own count on a real compile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from bench.analysis import flops
from bench.hardware import baseline
from bench.hardware import table as hardware
from model import compat

GPTJ_N_HF = 6_050_882_784
GPTJ_TOKENS_PER_S = 151_000


# --- formulas against hand counts ---------------------------------------------------------------------------------


def test_flops_6n_hand_count():
    # 6 x 10 params x 7 tokens = 420
    assert flops.flops_6n(10, 7) == 420


def test_flops_6n_reproduces_gptj_5_4_pflops():
    # 6 x 6,050,882,784 x 151,000 = 5,482,099,802,304,000 FLOP/s; the article prints "5.4 PFLOPs" (truncated).
    value = flops.flops_6n(GPTJ_N_HF, GPTJ_TOKENS_PER_S)
    assert value == 5_482_099_802_304_000
    assert int(value / 1e14) / 10 == baseline.EFFECTIVE_PFLOPS.value
    # the README's count (6,053,381,344) gives 5,484,363,497,664,000: the same published figure
    assert int(baseline.effective_flops_per_s(baseline.N_PARAMS_README.value) / 1e14) / 10 == 5.4


def test_model_flops_hand_count():
    # N=10, L=2, d=3, seq=4: 6x10 + 12x2x3x4 = 60 + 288 = 348 per token; x 5 tokens = 1740
    assert flops.model_flops(10, 2, 3, 4, 5) == 1740


def test_hardware_flops_hand_count():
    # remat adds 2N + 4 L d seq = 20 + 96 = 116 per token: (348 + 116) x 5 = 2320
    assert flops.hardware_flops(10, 2, 3, 4, 5, remat=True) == 2320
    assert flops.hardware_flops(10, 2, 3, 4, 5, remat=False) == flops.model_flops(10, 2, 3, 4, 5)


def test_hardware_flops_gptj_shape_is_7_9_not_8_1_pflops():
    # (8 x 6,050,882,784 + 16 x 28 x 4096 x 2048) x 151,000
    #   = (48,407,062,272 + 3,758,096,384) x 151,000 = 52,165,158,656 x 151,000 = 7,876,938,957,056,000 FLOP/s.
    # GPT-J's real shape gives 7.88 PFLOP/s (58.6% of 13.44), not the article's 8.1 (see the next test).
    value = flops.hardware_flops(GPTJ_N_HF, 28, 4096, 2048, GPTJ_TOKENS_PER_S, remat=True)
    assert value == 7_876_938_957_056_000


def test_gptj_8_1_pflops_uses_benchmark_py_attention_constants():
    # benchmark.py's attn term hard-codes 32 x 5120: (48,407,062,272 + 16 x 32 x 5120 x 2048 = 5,368,709,120)
    #   x 151,000 = 53,775,771,392 x 151,000 = 8,120,141,480,192,000 FLOP/s -> "8.1 PFLOPs", 60.4% of 13.44.
    value = baseline.hardware_flops_per_s_total(as_benchmark_py=True)
    assert value == 8_120_141_480_192_000
    assert round(value / 1e15, 1) == baseline.HARDWARE_PFLOPS.value
    assert round(baseline.utilisation(value), 2) == 0.60


def test_benchmarks_md_ratio_implies_benchmark_py_attention():
    # benchmarks.md, 6B on v3-32: effective 7.05692e14, MXU 1.04523e15, params 6,053,381,856. MXU/effective =
    # (8N + A)/(6N) gives A per token; it matches 16 x 32 x 5120 x 2048, not 16 x 28 x 4096 x 2048.
    n = 6_053_381_856
    implied = 1.04523e15 / 7.05692e14 * 6 * n - 8 * n
    assert implied == pytest.approx(16 * 32 * 5120 * 2048, rel=1e-3)
    assert implied != pytest.approx(16 * 28 * 4096 * 2048, rel=1e-1)


def test_gptj_param_count_hf_layout():
    # 28 x 201,355,264 per block + 206,438,400 embedding + 8,192 ln_f + 206,488,800 head = 6,050,882,784
    assert flops.gptj_param_count(28, 4096, 16384, 50400) == GPTJ_N_HF
    assert baseline.N_PARAMS_HF == GPTJ_N_HF


@pytest.mark.parametrize("bad", [dict(n_params=0), dict(n_layers=-1), dict(seq=0)])
def test_formulas_reject_non_positive_shapes(bad):
    args = dict(n_params=10, n_layers=2, attn_width=3, seq=4, tokens=5) | bad
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be > 0"):
        flops.model_flops(**args)


# --- utilisation -----------------------------------------------------------------------------------------------------


def test_mfu_gptj_6n_on_gptj_basis():
    # 5,482,099,802,304,000 / (256 x 52.5e12 = 13.44e15) = 0.40789...
    assert baseline.utilisation(baseline.effective_flops_per_s()) == pytest.approx(0.407894, abs=1e-6)
    assert flops.mfu(5.4821e15, 256, 52.5e12) == pytest.approx(5.4821e15 / 13.44e15)


def test_mfu_above_one_is_a_bug_not_a_result():
    with pytest.raises(flops.UtilisationError, match="bug in the suite.*counted more than once.*peak is wrong"):
        flops.mfu(2e12, 1, 1e12, peak_source="test peak")
    with pytest.raises(flops.UtilisationError, match="HFU"):
        flops.hfu(9e12, 8, 1e12)


def test_mfu_unknown_peak_is_none_and_bad_devices_raise():
    assert flops.mfu(1e12, 8, None) is None
    assert flops.hfu(1e12, 8, None) is None
    with pytest.raises(ValueError, match="devices must be > 0"):
        flops.mfu(1e12, 0, 1e12)


def test_theoretical_peak_bases():
    # GPT-J basis 256 x 52.5e12 = 13.44e15 ("13.4 PFLOPs"); spec basis 256 x 61.5e12 = 15.744e15.
    assert baseline.theoretical_flops_per_s() == pytest.approx(13.44e15)
    assert round(baseline.theoretical_flops_per_s() / 1e15, 1) == baseline.THEORETICAL_PFLOPS.value
    assert baseline.theoretical_flops_per_s(hardware.PeakBasis.SPEC) == pytest.approx(15.744e15)


# --- XLA's count ------------------------------------------------------------------------------------------------------


def test_xla_flops_total_accepts_both_jax_formats():
    # model.compat.cost_dict is the one place that turns either jax version's answer into one dict
    assert flops.xla_flops_total(compat.cost_dict({"flops": 12.0})) == 12.0  # jax 0.10.2
    assert flops.xla_flops_total(compat.cost_dict([{"flops": 12.0}])) == 12.0  # jax 0.4.30 compiled
    assert flops.xla_flops_total(compat.cost_dict(None)) is None
    assert flops.xla_flops_total(compat.cost_dict([])) is None
    assert flops.xla_flops_total(compat.cost_dict([None])) is None
    assert flops.xla_flops_total({"bytes accessed": 4.0}) is None
    assert flops.xla_flops_total({"flops": -1.0}) is None  # XLA's "unknown cost"
    with pytest.raises(ValueError, match="2 entries"):
        compat.cost_dict([{"flops": 1.0}, {"flops": 1.0}])


def test_cost_analysis_of_a_compiled_and_a_lowered_stage_is_one_dict():
    lowered = jax.jit(lambda x: x @ x).lower(jnp.ones((N_SIDE, N_SIDE)))
    for stage in (lowered, lowered.compile()):
        costs = compat.cost_analysis(stage)
        assert isinstance(costs, dict) and "flops" in costs


def test_scale_loop_flops_hand_count_and_checks():
    # 100 counted with a body of 30 once, 4 trips: 100 + 30 x 3 = 190
    assert flops.scale_loop_flops(100, 30, 4) == 190
    with pytest.raises(ValueError, match="must already include the body once"):
        flops.scale_loop_flops(10, 30, 4)
    with pytest.raises(ValueError, match="trip_count must be > 0"):
        flops.scale_loop_flops(100, 30, 0)


N_SIDE, TRIPS = 128, 5
MATMUL_FLOPS = 2 * N_SIDE**3


def _scanned(x, ws):
    return lax.scan(lambda carry, w: (carry @ w, None), x, ws)[0]


def _unrolled(x, ws):
    for i in range(TRIPS):
        x = x @ ws[i]
    return x


def _lowered_flops(fn, *args):
    return flops.xla_flops_total(compat.cost_analysis(jax.jit(fn).lower(*args)))


def test_xla_counts_a_scan_body_once_and_scale_loop_flops_corrects_it():
    # Pins the finding the correction relies on: if XLA starts counting trip counts, this fails (and the correction
    # would then double count).
    x, ws = jnp.ones((N_SIDE, N_SIDE)), jnp.ones((TRIPS, N_SIDE, N_SIDE))
    scanned = _lowered_flops(_scanned, x, ws)
    body = _lowered_flops(lambda x, w: x @ w, x, ws[0])
    unrolled = _lowered_flops(_unrolled, x, ws)
    assert body == MATMUL_FLOPS
    assert unrolled == TRIPS * MATMUL_FLOPS
    assert scanned == pytest.approx(MATMUL_FLOPS, abs=16)  # + a few FLOPs of loop counter on jax 0.4.30
    assert flops.scale_loop_flops(scanned, body, TRIPS) == pytest.approx(unrolled, rel=1e-6)


def test_compiled_flops_is_per_device_or_refuses_uncounted_matmuls():
    x, ws = jnp.ones((N_SIDE, N_SIDE)), jnp.ones((TRIPS, N_SIDE, N_SIDE))
    compiled = jax.jit(_scanned).lower(x, ws).compile()
    counted = flops.compiled_flops(compiled.as_text(), compat.cost_analysis(compiled))
    if "__onednn$" in compiled.as_text():  # jax 0.4.30 on CPU: dots become oneDNN calls XLA counts as -1
        assert counted is None
    else:
        assert counted == pytest.approx(MATMUL_FLOPS, abs=16)


def test_static_flops_count_the_tokens_of_every_micro_batch():
    import dataclasses

    from bench.compile.step import static_flop_fields
    from model.config import Variant, get_preset, model_for
    from model.program import Program

    preset = get_preset("tiny")
    cfg = model_for(preset, Variant.parse("parallel-h256-single-full"))
    one = static_flop_fields(Program.from_preset(preset, cfg))
    four = static_flop_fields(Program.from_preset(dataclasses.replace(preset, grad_accum=4), cfg))
    assert (one["tokens_per_step"], four["tokens_per_step"]) == (4 * 16, 4 * 4 * 16)
    for key in ("flops_6n_per_step_total", "model_flops_per_step_total", "hardware_flops_per_step_total"):
        assert four[key] == pytest.approx(4 * one[key], rel=1e-12)
    # tiny: 2 layers, d_model 1024, seq 16; 4 micro-batches of 4 sequences
    assert four["hardware_flops_per_step_total"] == flops.hardware_flops(one["n_params"], 2, 1024, 16, 256, remat=True)


# --- attention width, local layers, tied embeddings (model.config.ModelConfig's options) -----------------------------


def test_attention_flops_use_the_attention_width_and_local_windows():
    # 4 x width 5 x (2 global layers x seq 4) = 160; one of the two local over 3 keys: 4 x 5 x (4 + 3) = 140
    assert flops.attention_forward_flops_per_token(2, 5, 4) == 160
    assert flops.attention_forward_flops_per_token(2, 5, 4, local_layers=1, local_window=3) == 140
    # a window longer than the sequence sees the sequence
    assert flops.attention_forward_flops_per_token(2, 5, 4, local_layers=1, local_window=10) == 160
    with pytest.raises(ValueError, match="local layers"):
        flops.attention_forward_flops_per_token(2, 5, 4, local_layers=3, local_window=3)
    with pytest.raises(ValueError, match="local layers"):
        flops.attention_forward_flops_per_token(2, 5, 4, local_layers=1)


def test_model_and_hardware_flops_with_local_layers_hand_count():
    # N=10, L=2, width 5, seq 4, one local layer over 3 keys: 6x10 + 3x140 = 480 per token; x 5 tokens = 2400.
    # Remat adds 2x10 + 140 = 160 per token: 2400 + 800 = 3200.
    local = dict(local_layers=1, local_window=3)
    assert flops.model_flops(10, 2, 5, 4, 5, **local) == 2400
    assert flops.hardware_flops(10, 2, 5, 4, 5, remat=True, **local) == 3200
    assert flops.hardware_flops(10, 2, 5, 4, 5, remat=False, **local) == 2400


def test_gptj_param_count_with_attention_width_and_tied_embeddings():
    # L=1, d=2, d_ff=3, V=5, H K=4: block 2x2 + 4x2x4 + (2x3 + 3) + (3x2 + 2) = 4 + 32 + 9 + 8 = 53;
    # embedding 5x2 = 10, ln_f 4, LM head 2x5 + 5 = 15: 82 in all, 67 with the head tied to the embedding
    assert flops.gptj_param_count(1, 2, 3, 5, attn_width=4) == 82
    assert flops.gptj_param_count(1, 2, 3, 5, attn_width=4, tied_embeddings=True) == 67
    assert flops.gptj_param_count(1, 2, 3, 5) == flops.gptj_param_count(1, 2, 3, 5, attn_width=2)


def test_local_attention_saved_frac_by_hand():
    # T = 4, window 2: the band is keys 1, 2, 2, 2 of the 16 pairs; half the layers local
    assert flops.local_attention_saved_frac(4, 2, n_layers=2, n_local_layers=1) == pytest.approx(0.5 * (1 - 7 / 16))
    # GPT-Neo's window at GPT-J's context, alternate layers of 28: (256 x 257 / 2 + 1792 x 256) / 2048^2 in the band
    saved = flops.local_attention_saved_frac(2048, 256, n_layers=28, n_local_layers=14)
    assert saved == pytest.approx(0.5 * (1 - 491_648 / 4_194_304))
    assert flops.local_attention_saved_frac(2048, 2048, 28, 14) == pytest.approx(0.5 * (1 - 2049 / 4096))  # causal
    with pytest.raises(ValueError):
        flops.local_attention_saved_frac(256, 512, 28, 14)
