"""The trace summariser and the measured component breakdown on a trace of the model itself: the tiny preset,
2 steps, as `bench run --profile` does."""

import jax
import pytest
from conftest import require_devices

from bench.compile.step import mesh_ids
from bench.measure.prepare import prepare
from bench.measure.profile import NoOpEventsError, capture_trace, component_fields, summarise_trace, trace_op_rows
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


def test_the_measured_breakdown_labels_the_step_program_by_block_component(tmp_path):
    if jax.__version__.startswith("0.4."):
        pytest.skip("jax 0.4.30's default CPU runtime writes no per-op events (the test above checks the refusal)")
    preset = get_preset("tiny")
    require_devices(preset.mesh.devices)
    prepared = prepare(preset, Variant.parse("serial-h256-pjit-none"), preset.mesh)
    prepared.step()
    rows, tool = trace_op_rows(capture_trace(prepared.step, (), 2, tmp_path))
    text = prepared.compiled.as_text()
    fields = component_fields(rows, text, mesh_ids(prepared.driver), 2, preset.mesh.devices, tool)
    parts = fields["profile_component_s_per_step_per_device"]
    # every op the step ran is an op of its optimized HLO, and the block's matmuls and mp all-reduces are found
    assert fields["profile_component_matched_frac"] > 0.99
    for label in ("qkv_proj", "out_proj", "ff_in", "ff_out", "elementwise", "optimizer", "collective mp"):
        assert parts[label] > 0, label
    # the step program's op time, per step and device, is what the components sum to
    step_us = sum(row.self_time_us for row in rows if row.program == text.split()[1].rstrip(","))
    assert sum(parts.values()) == pytest.approx(step_us * 1e-6 / (2 * preset.mesh.devices), rel=1e-9)
    assert fields["profile_component_basis"].startswith("measured")
