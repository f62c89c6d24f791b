"""bench.measure.profile (capture) and bench.analysis.profile (summary): a real CPU trace of a shard_map psum step,
and the formulas and parsers it is summarised with."""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require_devices
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bench.analysis import hlo, profile
from bench.measure import profile as capture
from model import compat

DEVICES = 8
STEPS = 2
# Checked by hand: jaxlib 0.4.30's default CPU client puts no per-HLO-op events in a trace; its thunk runtime (the
# default in 0.10.2) does.
CPU_EMITS_OP_EVENTS = compat.version_tuple(
    jax.__version__
) > compat.LAST_XMAP_JAX or "--xla_cpu_use_thunk_runtime=true" in os.environ.get("XLA_FLAGS", "")


def _require_plugin() -> None:
    try:
        capture.load_converter()
    except capture.ProfilerPluginMissingError as err:
        pytest.skip(f"profiler plugin not installed in this environment: {err}")


def _psum_step():
    """A jitted shard_map step with one all-reduce, and its inputs already laid out on the mesh."""
    mesh = Mesh(np.array(jax.devices()[:DEVICES]), ("mp",))

    def body(x, w):  # x [B, D/8], w [D/8, F] on each device
        return jax.lax.psum(jnp.tanh(x @ w), "mp")  # [B, F], summed over the mesh

    step = jax.jit(compat.shard_map(body, mesh=mesh, in_specs=(P(None, "mp"), P("mp", None)), out_specs=P()))
    x = jax.device_put(jnp.ones((64, 256)), NamedSharding(mesh, P(None, "mp")))
    w = jax.device_put(jnp.ones((256, 64)), NamedSharding(mesh, P("mp", None)))
    jax.block_until_ready(step(x, w))  # compile outside the trace
    return step, (x, w)


@pytest.fixture(scope="module")
def psum_trace(tmp_path_factory) -> Path:
    require_devices(DEVICES)
    step, args = _psum_step()
    return capture.capture_trace(step, args, steps=STEPS, log_dir=tmp_path_factory.mktemp("profile"))


# ---------------------------------------------------------------------------------------------------- real trace


def test_capture_writes_one_xplane_per_call(psum_trace, tmp_path):
    assert psum_trace.name.endswith(".xplane.pb") and psum_trace.stat().st_size > 0
    step, args = _psum_step()
    first = capture.capture_trace(step, args, steps=1, log_dir=tmp_path)
    second = capture.capture_trace(step, args, steps=1, log_dir=tmp_path)  # often within the same second
    assert first.is_file() and second.is_file()


def test_summary_of_real_psum_trace(psum_trace):
    _require_plugin()
    if not CPU_EMITS_OP_EVENTS:
        with pytest.raises(capture.NoOpEventsError, match="no per-op timings"):
            capture.summarise_trace(psum_trace)
        return
    summary = capture.summarise_trace(psum_trace, top_n=50)
    # XProf builds op statistics from device planes only; a CPU trace has none, so the trace events are used.
    assert summary.tool_used is profile.ProfileTool.TRACE_VIEWER
    assert summary.op_count > 0 and summary.total_op_time_us > 0
    assert 0 <= summary.collective_share <= 1 and 0 <= summary.compute_share <= 1
    assert summary.collective_share + summary.compute_share == pytest.approx(1.0)
    assert len(summary.top_ops) == summary.op_count  # top_n=50 shows every op, so the totals must add up
    assert sum(op.self_time_us for op in summary.top_ops) == pytest.approx(summary.total_op_time_us)
    collectives = [op for op in summary.top_ops if op.is_collective]
    assert sum(op.self_time_us for op in collectives) == pytest.approx(summary.collective_time_us)
    all_reduces = [op for op in collectives if op.category == "all-reduce"]
    assert len(all_reduces) == 1, summary.top_ops
    assert all_reduces[0].occurrences == DEVICES * STEPS  # one psum per device per step
    assert summary.collective_time_us > 0


def test_record_fields_are_flat_json(psum_trace):
    _require_plugin()
    if not CPU_EMITS_OP_EVENTS:
        pytest.skip(f"JAX {jax.__version__}'s CPU traces hold no op events to summarise (checked in the test above)")
    fields = capture.summarise_trace(psum_trace, top_n=3).as_record_fields()
    assert all(key.startswith("profile_") for key in fields)
    assert json.loads(json.dumps(fields)) == fields
    assert fields["profile_trace_path"] == str(psum_trace)
    assert len(fields["profile_top_ops"]) == 3


# ---------------------------------------------------------------------------------------------------- formulas


def test_self_times_hand_count():
    # parent [0,10) holds child [2,5) which holds grandchild [3,4), and sibling [6,8); then a lone event [12,13).
    events = [(0.0, 10.0), (2.0, 3.0), (3.0, 1.0), (6.0, 2.0), (12.0, 1.0)]
    assert profile.self_times_us(events) == [10 - 3 - 2, 3 - 1, 1, 2, 1]


def test_self_times_ignore_input_order_and_back_to_back_events():
    # [0,4) then [4,6) touch but do not nest; listed out of order.
    assert profile.self_times_us([(4.0, 2.0), (0.0, 4.0)]) == [2.0, 4.0]


def test_covered_share_hand_count():
    # two steps of 10 us; ops: [0, 4) and [2, 6) overlap (union 6), [12, 15), and [25, 30) outside every step
    steps = [(0.0, 10.0), (10.0, 10.0)]
    ops = [(2.0, 4.0), (0.0, 4.0), (12.0, 3.0), (25.0, 5.0)]
    assert profile.covered_share(ops, steps) == pytest.approx((6 + 3) / 20)
    # an op spanning the boundary of two steps counts in both
    assert profile.covered_share([(8.0, 4.0)], steps) == pytest.approx(4 / 20)
    assert profile.covered_share([], steps) is None and profile.covered_share(ops, []) is None


def test_a_real_trace_has_its_op_coverage_between_zero_and_one(psum_trace):
    if jax.__version__.startswith("0.4."):
        pytest.skip("jax 0.4.30's CPU runtime writes no per-op events (the summary test checks that refusal)")
    coverage = capture.trace_coverage(psum_trace)
    assert coverage is not None and 0 < coverage <= 1


def test_op_shares_hand_count():
    assert profile.op_shares([(30.0, True), (60.0, False), (10.0, True)]) == (100.0, 40.0, 0.4, 0.6)
    assert profile.op_shares([]) == (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "label",
    [
        "all-reduce",
        "all-gather-start",
        "reduce-scatter",
        "all_to_all",
        "collective-permute-done",
        "send",
        "recv-done",
        "all-reduce fusion",
    ],
)
def test_collective_labels(label):
    assert profile.is_collective(label)


@pytest.mark.parametrize("labels", [("fusion", "psum.7"), ("reduce",), ("sender_fusion",), ("custom-call",)])
def test_non_collective_labels(labels):
    assert not profile.is_collective(*labels)


HLO_TEXT = """\
HloModule jit_body, is_scheduled=true, entry_computation_layout={(f32[128,32]{1,0})->f32[128,128]{1,0}}

region_0.0 {
  psum.0 = f32[] parameter(0)
  ROOT add.0 = f32[] add(psum.0, psum.0)
}

ENTRY main.0_spmd {
  param.2 = f32[128,32]{1,0:T(8,128)} parameter(0), sharding={devices=[1,8]<=[8]}
  ynn_fusion = f32[128,128]{1,0} fusion(param.2, param.2), kind=kCustom, calls=fused_computation
  pair = (f32[2]{0}, /*index=1*/s32[]) tuple(ynn_fusion, ynn_fusion)
  ROOT psum.7 = f32[128,128]{1,0} all-reduce(ynn_fusion), channel_id=1, to_apply=region_0.0
}
"""


def test_instruction_opcodes_of_graph_viewer_text():
    # The first five lines are copied from a real module's short_txt (graph_viewer); the tuple line is added.
    assert hlo.instruction_opcodes(HLO_TEXT) == {
        "psum.0": "parameter",
        "add.0": "add",
        "param.2": "parameter",
        "ynn_fusion": "fusion",
        "pair": "tuple",
        "psum.7": "all-reduce",
    }


# ---------------------------------------------------------------------------------------------------- tool formats


def _hlo_stats_table(rows):
    # Column ids as xprof 2.24.2's hlo_stats tool names them (a subset; the real table has 29 columns).
    cols = [
        {"id": key, "label": key, "type": "string"}
        for key in ("rank", "program_id", "category", "hlo_op_name", "occurrences", "total_self_time")
    ]
    return json.dumps({"cols": cols, "rows": [{"c": [{"v": value} for value in row]} for row in rows]})


def test_hlo_stats_rows_to_summary():
    text = _hlo_stats_table(
        [
            (1, "7", "convolution", "dot.1", 4, 300.0),
            (2, "7", "all-reduce", "all-reduce.2", 4, 100.0),
            (3, "7", "IDLE", "IDLE", 0, 600.0),  # idle time is not op time
        ]
    )
    (rows,) = profile.parse_gviz_tables(text, "hlo_stats")
    ops = profile.ops_from_hlo_stats(rows)
    assert [op.name for op in ops] == ["dot.1", "all-reduce.2"]
    summary = profile.summarise_ops(ops, top_n=1, tool=profile.ProfileTool.HLO_STATS, trace_path=Path("t.xplane.pb"))
    assert (summary.total_op_time_us, summary.collective_time_us) == (400.0, 100.0)
    assert (summary.collective_share, summary.compute_share) == (0.25, 0.75)
    assert [(op.name, op.share, op.is_collective) for op in summary.top_ops] == [("dot.1", 0.75, False)]


def test_record_fields_keep_numbers_numbers():
    ops = [
        profile.OpRow("dot.1", "7", "convolution", 4, 300.0),
        profile.OpRow("all-reduce.2", "7", "all-reduce", 4, 100),
    ]
    fields = profile.summarise_ops(ops, 2, profile.ProfileTool.HLO_STATS, Path("t.xplane.pb")).as_record_fields()
    assert fields["profile_op_count"] == 2 and type(fields["profile_op_count"]) is int
    for key in ("profile_op_time_s_total", "profile_collective_time_s_total", "profile_collective_frac"):
        assert type(fields[key]) is float, key
    assert type(fields["profile_compute_frac"]) is float
    assert fields["profile_collective_frac"] == 0.25
    assert fields["profile_op_time_s_total"] == pytest.approx(400e-6)  # the rows' 300 + 100 us, in seconds
    assert isinstance(fields["profile_top_ops"], list)
    top = fields["profile_top_ops"][1]
    assert top == {
        "name": "all-reduce.2",
        "program": "7",
        "category": "all-reduce",
        "occurrences": 4,
        "self_time_s": pytest.approx(100e-6),
        "op_time_frac": 0.25,
        "is_collective": True,
    }
    assert (type(top["occurrences"]), type(top["self_time_s"])) == (int, float)


def test_gviz_list_of_tables_and_null_cells():
    table = {"cols": [{"id": "a"}, {"id": "b"}], "rows": [{"c": [{"v": 1}, None]}]}
    assert profile.parse_gviz_tables(json.dumps([table, table]), "t") == [[{"a": 1, "b": None}]] * 2


@pytest.mark.parametrize("text", ["a,b\n1,2", json.dumps({"rows": []}), json.dumps([{"cols": []}])])
def test_unknown_tool_format_is_named(text):
    with pytest.raises(profile.UnknownToolFormatError, match="tool_x"):
        profile.parse_gviz_tables(text, "tool_x")


def test_hlo_stats_missing_columns():
    with pytest.raises(profile.UnknownToolFormatError, match="total_self_time"):
        profile.ops_from_hlo_stats([{"hlo_op_name": "dot.1"}])


def test_trace_without_events_list():
    with pytest.raises(profile.UnknownToolFormatError, match="traceEvents"):
        profile.hlo_op_events({"events": []})


# ---------------------------------------------------------------------------------------------------- bad input


def test_tensorboard_command_binds_localhost():
    assert capture.tensorboard_command is profile.tensorboard_command  # one definition, re-exported for the pipeline
    command = profile.tensorboard_command(Path("/runs/my run"), port=6007)
    assert command == "tensorboard --logdir '/runs/my run' --host localhost --port 6007"
    with pytest.raises(ValueError, match="port"):
        profile.tensorboard_command(Path("x"), port=0)


@pytest.mark.parametrize(
    "trace, log_dir",
    [
        ("/runs/a/plugins/profile/2026_01_01/host.xplane.pb", "/runs/a"),
        ("runs/plugins/profile/r/h.xplane.pb", "runs"),
        ("/tmp/elsewhere/h.xplane.pb", "/tmp/elsewhere"),  # not under plugins/profile: its own folder
        ("plugins/profile/r/h.xplane.pb", "."),  # LOG_DIR is the working directory
    ],
)
def test_trace_log_dir(trace, log_dir):
    assert profile.trace_log_dir(trace) == Path(log_dir)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="xplane.pb"):
        capture.summarise_trace(tmp_path / "trace.json.gz")
    with pytest.raises(FileNotFoundError, match="no trace"):
        capture.summarise_trace(tmp_path / "missing.xplane.pb")
    (tmp_path / "x.xplane.pb").write_bytes(b"")
    with pytest.raises(ValueError, match="top_n"):
        capture.summarise_trace(tmp_path / "x.xplane.pb", top_n=0)
    with pytest.raises(ValueError, match="steps"):
        capture.capture_trace(lambda: None, (), steps=0, log_dir=tmp_path)
