"""The trace summariser on a trace of the model itself: the tiny preset, 2 steps, as `bench run --profile` does."""

import jax
import pytest
from conftest import require_devices

from bench.measure.prepare import prepare
from bench.measure.profile import NoOpEventsError, capture_trace, summarise_trace
from model.config import Variant, get_preset


def test_two_steps_of_the_tiny_preset_are_summarised(tmp_path):
    preset = get_preset("tiny")
    require_devices(preset.mesh.devices)
    prepared = prepare(preset, Variant.parse("parallel-h256-shard_map-none"), preset.mesh)
    prepared.step()  # compiled and warm before the trace
    trace = capture_trace(prepared.step, (), 2, tmp_path)
    if jax.__version__.startswith("0.4."):
        # jax 0.4.30's CPU runtime writes no per-op events unless XLA_FLAGS has --xla_cpu_use_thunk_runtime=true.
        with pytest.raises(NoOpEventsError):
            summarise_trace(trace)
        return
    summary = summarise_trace(trace)
    assert summary.op_count > 0 and summary.top_ops
    assert summary.collective_share + summary.compute_share == pytest.approx(1.0)
    assert 0 < summary.collective_share < 1  # the mp all-reduces of the block are in the trace
    assert any(op.is_collective for op in summary.top_ops)
