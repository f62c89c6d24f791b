"""pytest-benchmark suite: the training step of every variant, timed through the same code path as `bench run`.

`nox -s benchmarks -- --benchmark-json out.json` keeps the timings; `--benchmark-compare` compares two runs.
In CI (`--benchmark-disable`) each benchmark runs its step once and still checks the result.
"""

import functools
from typing import Any

import numpy as np
import pytest
from conftest import current_jax_only_unless, require_devices, skip_without_xmap

from bench.measure.prepare import prepare
from model.config import Head, Remat, Residual, Strategy, Variant, all_variants, get_preset

TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


@pytest.fixture(scope="module")
def preset(request):
    return get_preset(request.config.getoption("--bench-preset"))


@functools.cache
def reference_loss(preset_name: str, variant: Variant, steps: int) -> float:
    """The single-device loss after the same number of training steps from the same start."""
    preset = get_preset(preset_name)
    single = prepare(preset, variant.replace(strategy=Strategy.SINGLE), preset.mesh.__class__(1, 1))
    for _ in range(steps):
        single.step()
    return single.loss


def benchmark_case(variant: Variant) -> Any:
    """One variant's benchmark: the test sessions run it once, as a test, for GPT-J's configuration under each
    strategy (every variant's loss and gradients are checked against the single device by
    tests/test_equivalence.py, so the others would add compile time, not coverage); `nox -s benchmarks` times all
    24. jax 0.4.30 runs xmap's alone (the others ran on current JAX)."""
    gptj = (variant.residual, variant.head, variant.remat) == (Residual.PARALLEL, Head.H256, Remat.FULL)
    marks = () if gptj else (pytest.mark.benchmark_extra,)
    marks += current_jax_only_unless(variant.strategy is Strategy.XMAP)
    return pytest.param(variant, id=variant.name, marks=marks)


@pytest.mark.parametrize("variant", [benchmark_case(v) for v in all_variants()])
def test_benchmark_train_step(benchmark, request, preset, variant):
    if variant.strategy is Strategy.XMAP:
        skip_without_xmap()
    require_devices(preset.mesh.devices)
    prepared = prepare(preset, variant, preset.mesh)
    steps = 0

    def step() -> None:
        nonlocal steps
        prepared.step()
        steps += 1

    rounds, warmup = request.config.getoption("--bench-rounds"), request.config.getoption("--bench-warmup")
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup, iterations=1)
    tokens = preset.tokens_per_step
    benchmark.extra_info.update(
        variant=variant.name,
        preset=preset.name,
        mesh=str(preset.mesh),
        tokens_per_step=tokens,
        compile_s=prepared.compile_s,
        comm_mp_allreduce_bytes_per_device=prepared.analysis.get("comm_mp_allreduce_bytes_per_device"),
        comm_wire_bytes_per_device=prepared.analysis.get("comm_wire_bytes_per_device"),
        mem_peak_estimate_bytes_per_device=prepared.analysis.get("mem_peak_estimate_bytes_per_device"),
    )
    if benchmark.stats is not None:
        benchmark.extra_info["tokens_per_s"] = tokens / benchmark.stats.stats.median
    # Checked after timing: the timed steps trained the model exactly as the single-device reference does.
    expected = reference_loss(preset.name, variant, steps)
    tolerance = TOLERANCE[preset.model.compute_dtype.value]
    assert np.isfinite(prepared.loss)
    assert abs(prepared.loss - expected) <= tolerance * abs(expected), (prepared.loss, expected, steps)
