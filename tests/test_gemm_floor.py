"""bench.analysis.gemms and bench.measure.gemm_floor: the dots of a compiled step, found with their shapes,
dimension numbers, components and loop trip counts, and each timed alone (``bench run --gemm-floor``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from conftest import require_devices

from bench.analysis.gemms import program_gemms
from bench.measure.gemm_floor import gemm_floor_fields
from bench.measure.pipeline import measure
from bench.report.sections.profiles import _floors
from model.config import Mesh, Scope, Variant, apply_overrides, get_preset


def _compiled_text(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_every_dot_is_found_with_its_dimension_numbers_and_trip_count():
    def program(x, w, v):
        with jax.named_scope("ff_in"):
            h = x @ w  # [8, 32] x [32, 16]

        def body(carry, _):
            with jax.named_scope("attn_core"):
                return jnp.einsum("bij,bjk->bik", carry, v), None  # batched, 3 times

        y, _ = jax.lax.scan(body, h.reshape(2, 4, 16), None, length=3)
        return y

    x, w, v = jnp.ones((8, 32)), jnp.ones((32, 16)), jnp.ones((2, 16, 16))
    found = program_gemms(_compiled_text(program, x, w, v))
    by_shape = {(g.lhs, g.rhs): g for g in found.gemms}
    plain = by_shape[((8, 32), (32, 16))]
    assert plain.component == "ff_in" and plain.executions == 1 and plain.flops == 2 * 8 * 16 * 32
    assert (plain.lhs_contracting, plain.rhs_contracting, plain.lhs_batch) == ((1,), (0,), ())
    batched = next(g for g in found.gemms if g.lhs_batch)
    assert batched.executions == 3 and batched.flops == 2 * 2 * 4 * 16 * 16
    assert batched.lhs_dtype == batched.rhs_dtype == batched.out_dtype == "f32"
    assert found.untimed_matmuls == 0


def test_the_floor_times_each_distinct_dot_once_and_sums_them_per_step():
    def program(a, b, c):
        return (a @ b) @ c, a @ b.T  # two distinct forms; XLA may merge or keep them, each is found as compiled

    a, b, c = jnp.ones((64, 64)), jnp.ones((64, 64)), jnp.ones((64, 32))
    text = _compiled_text(program, a, b, c)
    gemms = program_gemms(text).gemms
    fields = gemm_floor_fields(text, devices=1, platform="cpu", peak_flops_per_s_per_device=1e12, repeats=2)
    assert fields["gemm_floor_dots"] == len(gemms) >= 2
    assert fields["gemm_floor_distinct_dots"] == len({g.signature for g in gemms})
    assert fields["gemm_floor_s_per_step"] > 0
    assert sum(fields["gemm_floor_component_s_per_step"].values()) == pytest.approx(fields["gemm_floor_s_per_step"])
    flops = sum(g.flops * g.executions for g in gemms)
    assert fields["gemm_floor_flops_per_s_total"] == pytest.approx(flops / fields["gemm_floor_s_per_step"])
    # simulated CPU devices share the cores: eight devices' dots take their turns
    assert fields["gemm_floor_peak_frac"] == pytest.approx(fields["gemm_floor_flops_per_s_total"] / 1e12)
    eight = gemm_floor_fields(text, devices=8, platform="cpu", peak_flops_per_s_per_device=1e12 / 8, repeats=2)
    assert eight["gemm_floor_dots"] == 8 * fields["gemm_floor_dots"]
    assert eight["gemm_floor_peak_frac"] == pytest.approx(eight["gemm_floor_flops_per_s_total"] / 1e12)


def test_a_measured_record_carries_the_floor_of_its_block_by_component():
    require_devices(1)
    preset = apply_overrides(get_preset("tiny"), ["seq=8"])
    record = measure(
        Variant.parse("parallel-h128-pjit-none"), preset, Mesh(), Scope.BLOCK, 2, 1, gemm_floor=True, peak=None
    )
    assert record["status"] == "ok", record.get("error")
    parts = record["gemm_floor_component_s_per_step"]
    assert {"qkv_proj", "out_proj", "ff_in", "ff_out", "attn_scores", "attn_values"} <= set(parts)
    # fwd + bwd: q, k, v, out, ff in and out forward, two each backward, and the four attention dots
    assert record["gemm_floor_dots"] == 6 * 3 + 2 * 3
    assert 0 < record["gemm_floor_step_frac"] and 0 < record["gemm_floor_peak_frac"]


def test_the_report_splits_hfu_into_the_floors_two_shares():
    record = {
        "variant": "parallel-h256-pjit-none",
        "jax": "0.10.2",
        "status": "ok",
        "step_median_s": 1.0,
        "hfu": 0.6,
        "gemm_floor_s_per_step": 0.8,
        "gemm_floor_peak_frac": 0.75,
        "gemm_floor_step_frac": 0.8,
        "gemm_floor_component_s_per_step": {"ff_out": 0.3, "qkv_proj": 0.2},
        "gemm_floor_untimed_matmuls": 0,
    }
    text = "\n".join(_floors([record]))
    assert "| 0.10.2 " in text and "MEASURED" in text and "| 60%" in text and "| 75%" in text and "| 80%" in text
    assert text.index("qkv_proj ms") < text.index("ff_out ms")  # in the order the block runs
