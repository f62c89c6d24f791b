"""The record schema: what every writer produces conforms to it, the store refuses what does not, older versions
upgrade, and every field name follows the naming rule."""

import dataclasses
import functools
import json
import re
import sys
import types
from pathlib import Path

import jax
import pytest
from conftest import require_devices

from bench.analysis.hlo import CollectiveKind
from bench.launch.local import ProcessExit, RunPlan, record_unrecorded
from bench.launch.sweep import QUICK, Job, run_job
from bench.measure.pipeline import measure
from bench.measure.session import Diagnosis, Session
from bench.records.context import failed_record
from bench.records.schema import (
    FIELDS,
    SCHEMA_VERSION,
    V2_NAMES,
    Memory,
    RecordKind,
    comm_dtype_key,
    comm_key,
    field_type,
    section_fields,
    upgrade,
    validate,
)
from bench.records.store import append_record, load_records, results_path
from bench.tpu_aot.compile import compile_record
from model.config import Scope, Variant, get_preset

PRESET = get_preset("tiny")
VARIANT = Variant.parse("parallel-h256-shard_map-full")
# The example records as the first wave committed them (schema version 1: the cpu sweep and the v3-256 compiles of
# 2026-11-29), kept when reports/example was regenerated, so that the upgrade keeps being tested on real files.
V1_FILES = [
    Path(__file__).parent / "data" / "records" / "v1" / name / "results.jsonl"
    for name in ("example", "example-tpu-aot")
]


@pytest.fixture(scope="module")
def measured() -> dict:
    require_devices(PRESET.mesh.devices)
    record = measure(VARIANT, PRESET, PRESET.mesh, Scope.MODEL, steps=2, warmup=1, overhead=True)
    assert record["status"] == "ok", record.get("error")
    return record


def placeholder(error: str = "process killed after the 900 s per-variant limit") -> dict:
    return failed_record(VARIANT, PRESET, PRESET.mesh, Scope.MODEL, 0, jax.__version__, error)


def test_a_measured_record_conforms(measured):
    assert validate(measured) == []
    assert measured["kind"] == "measured" and measured["backend"] == "cpu"
    assert measured["comm_matches_model"] is True and measured["comm_differences"] == []
    assert measured["model_flops_per_s_total"] == pytest.approx(
        measured["model_flops_per_step_total"] / measured["step_median_s"]
    )
    assert "timed_steps" not in measured and measured["steps_timed"] == 2


def test_a_tpu_aot_shaped_record_conforms():
    """The compile-only writer, compiling for the host's CPU devices as if they were the topology's."""
    require_devices(PRESET.mesh.devices)
    record = compile_record(PRESET, VARIANT, PRESET.mesh, "v3:2x2", jax.devices()[: PRESET.mesh.devices])
    assert record["status"] == "ok", record.get("error")
    assert validate(record) == []
    assert record["kind"] == "tpu-aot" and record["backend"] == "tpu" and record["topology"] == "v3:2x2"
    assert record["hbm_bytes_per_device"] == 16 * 2**30 and isinstance(record["fits_hbm"], bool)


def test_a_failed_placeholder_conforms_with_its_multi_process_fields():
    record = placeholder() | {"failed_processes": [1], "process_count": 2, "process_errors": {"1": "killed"}}
    assert validate(record) == []
    assert record["kind"] == "failed-placeholder" and record["status"] == "failed"


def test_the_sweep_placeholder_carries_the_childs_jax_version(tmp_path):
    job = Job("current", VARIANT, repeat=0)
    dying = [sys.executable, "-c", "import sys; sys.exit(139)"]
    run_job(job, QUICK, python=sys.executable, out=tmp_path, extra=[], timeout_s=60, command_override=dying)
    (record,) = load_records(tmp_path).records
    assert validate(record) == []
    assert record["kind"] == "failed-placeholder" and record["jax"] == jax.__version__ and "code 139" in record["error"]


def test_the_launcher_placeholder_conforms(tmp_path):
    plan = RunPlan([VARIANT], PRESET, PRESET.mesh, Scope.MODEL, 0, tmp_path, timeout_s=60)
    record_unrecorded(plan, 0, [ProcessExit(0, -9, killed_by_launcher=True), ProcessExit(1, 0, False)])
    (record,) = load_records(tmp_path).records
    assert validate(record) == [] and record["kind"] == "failed-placeholder" and record["failed_processes"] == [0]


def test_the_watchdog_placeholder_conforms(tmp_path):
    make_record = functools.partial(failed_record, VARIANT, PRESET, PRESET.mesh, Scope.MODEL, 0, jax.__version__)
    session = types.SimpleNamespace(failure_context=(make_record, tmp_path), process_count=2, phase="step 3")
    Session._write_failed_record(session, Diagnosis((1,), "process 1 stopped"), "error: process 1 stopped")
    (record,) = load_records(tmp_path).records
    assert validate(record) == [] and record["kind"] == "failed-placeholder"
    assert record["error"] == "process 1 stopped" and record["failure_phase"] == "step 3"
    assert record["failed_processes"] == [1] and record["process_count"] == 2


def test_an_undeclared_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="comm_mp_allreduce_byte is not a declared field"):
        append_record(tmp_path, placeholder() | {"comm_mp_allreduce_byte": 1})
    assert not results_path(tmp_path).exists()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("devices", "8", "devices is str '8', expected int"),
        ("devices", True, "devices is bool True, expected int"),  # a bool is an int to Python, not here
        ("steps_timed", 2.0, "steps_timed is float 2.0, expected int"),
        ("compile_s", None, "compile_s is null, expected float"),
        ("kind", "measured-ish", "kind is 'measured-ish', expected one of"),
    ],
)
def test_a_wrong_type_is_refused(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        append_record(tmp_path, placeholder() | {key: value})


def test_floats_accept_ints_and_nullable_fields_accept_null():
    assert (
        validate(placeholder() | {"compile_s": 3, "mfu": None, "error": None, "comm_dtype_bf16_bytes_per_device": 8})
        == []
    )


def test_comm_keys_by_hand():
    assert comm_key("mp", CollectiveKind.ALL_REDUCE, "bytes") == "comm_mp_allreduce_bytes_per_device"
    assert comm_key(None, CollectiveKind.COLLECTIVE_PERMUTE, "count") == "comm_collectivepermute_count"
    assert comm_key("dpmp", None, "wire_bytes") == "comm_dpmp_wire_bytes_per_device"
    assert comm_dtype_key("bf16") == "comm_dtype_bf16_bytes_per_device"
    with pytest.raises(ValueError, match="axis 'dp\\+mp'"):
        comm_key("dp+mp", CollectiveKind.ALL_REDUCE, "bytes")
    with pytest.raises(ValueError, match="metric 'payload'"):
        comm_key("mp", CollectiveKind.ALL_REDUCE, "payload")


def test_every_measured_comm_key_is_declared(measured):
    assert [k for k in measured if k.startswith("comm_") and field_type(k) is None] == []


@pytest.mark.parametrize("path", V1_FILES, ids=lambda p: p.parent.name)
def test_every_v1_example_line_upgrades_to_a_conforming_record(path):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines and {r["schema_version"] for r in lines} == {1}
    for old in lines:
        new = upgrade(old)
        assert validate(new) == [], old["variant"]
        assert new["schema_version"] == SCHEMA_VERSION
    loaded = load_records(path.parent)
    assert loaded.skipped == [] and len(loaded.records) == len(lines)


def test_upgrade_renames_splits_and_names_the_kind():
    v1 = {
        "schema_version": 1, "variant": "a", "preset": "tiny", "scope": "model", "status": "ok", "jax": "0.4.30",
        "timestamp_utc": "2026-11-29T00:00:00+00:00", "backend": "tpu-aot", "timed_steps": 5, "steps_timed": 5,
        "flops_6n": 1.0, "model_flops": 2.0, "hardware_flops": 3.0, "xla_flops": 4.0,
        "comm_mismatch": [
            "XLA combined mp all-reduces into tuple all-reduces: 3 fewer ops than arrays reduced",
            "mp all-reduce payload 8 bytes in the HLO, 16 expected",
        ],
    }  # fmt: skip
    new = upgrade(v1)
    assert validate(new) == []
    assert new["kind"] == RecordKind.TPU_AOT.value and new["backend"] == "tpu" and "timed_steps" not in new
    rates = ("flops_6n_per_s_total", "model_flops_per_s_total", "hardware_flops_per_s_total", "xla_flops_per_s_total")
    assert [new[k] for k in rates] == [1.0, 2.0, 3.0, 4.0]
    assert new["comm_matches_model"] is False
    assert new["comm_differences"] == ["mp all-reduce payload 8 bytes in the HLO, 16 expected"]
    assert new["comm_notes"] == [v1["comm_mismatch"][0]]


def test_upgrade_turns_a_v1_sweep_placeholder_into_a_failed_placeholder():
    v1 = {
        "schema_version": 1, "variant": "parallel-h128-xmap-none", "preset": "tiny", "scope": "model", "repeat": 0,
        "timestamp_utc": "2026-11-29T06:02:00+00:00", "environment": "xmap", "status": "failed", "error": "killed",
    }  # fmt: skip
    new = upgrade(v1)
    assert validate(new) == []
    assert new["kind"] == "failed-placeholder" and new["jax"] == "0.4.30" and "environment" not in new


def test_pandas_loads_a_written_file_with_numeric_columns(tmp_path, measured):
    pandas = pytest.importorskip("pandas")
    append_record(tmp_path, measured)
    append_record(tmp_path, placeholder())
    frame = pandas.read_json(results_path(tmp_path), lines=True)
    assert list(frame["kind"]) == ["measured", "failed-placeholder"]
    for column in (
        "tokens_per_s",
        "step_median_s",
        "mfu",
        "model_flops_per_s_total",
        comm_key("mp", None, "wire_bytes"),
    ):
        assert pandas.api.types.is_numeric_dtype(frame[column]), column
    assert frame["devices"].dtype.kind == "i" and frame.loc[0, "steps_timed"] == 2


def test_a_foreign_or_damaged_line_is_still_skipped(tmp_path):
    lines = [json.dumps(placeholder()), json.dumps(placeholder() | {"schema_version": 99}), '{"half']
    results_path(tmp_path).write_text("\n".join(lines) + "\n" + json.dumps(placeholder() | {"nonsense": 1}) + "\n")
    loaded = load_records(tmp_path)
    assert len(loaded.records) == 1
    assert loaded.skipped[0] == f"results.jsonl line 2: schema_version 99, expected {SCHEMA_VERSION}"
    assert loaded.skipped[1].startswith("results.jsonl line 3: not JSON")
    assert loaded.skipped[2] == "results.jsonl line 4: departs from the schema: nonsense is not a declared field"


def test_every_record_head_says_its_gradient_accumulation():
    accumulating = dataclasses.replace(PRESET, grad_accum=4)
    head = failed_record(VARIANT, accumulating, PRESET.mesh, Scope.MODEL, 0, jax.__version__, "killed")
    assert validate(head) == [] and head["grad_accum"] == 4
    assert placeholder()["grad_accum"] == 1


def test_records_from_before_accumulation_upgrade_to_grad_accum_1():
    v1 = {
        "schema_version": 1, "variant": "parallel-h128-xmap-none", "preset": "tiny", "scope": "model", "repeat": 0,
        "timestamp_utc": "2026-11-29T06:02:00+00:00", "environment": "xmap", "status": "failed", "error": "killed",
    }  # fmt: skip
    assert upgrade(v1)["grad_accum"] == 1
    v2 = placeholder()
    del v2["grad_accum"]
    assert upgrade(v2)["grad_accum"] == 1
    assert upgrade(placeholder() | {"grad_accum": 16})["grad_accum"] == 16


def test_every_record_head_names_its_attention_kernel_and_older_ones_upgrade_to_the_reference():
    assert placeholder()["attention_kernel"] == "reference"
    blockwise = Variant.parse(f"{VARIANT.name}+blockwise")
    head = failed_record(blockwise, PRESET, PRESET.mesh, Scope.MODEL, 0, jax.__version__, "killed")
    assert validate(head) == [] and (head["variant"], head["attention_kernel"]) == (blockwise.name, "blockwise")
    older = placeholder()
    del older["attention_kernel"]
    assert upgrade(older)["attention_kernel"] == "reference"
    assert upgrade(head)["attention_kernel"] == "blockwise"
    assert validate(head | {"attention_kernel": "flash"}) == [
        "attention_kernel is 'flash', expected one of ['blockwise', 'cudnn', 'pallas', 'reference', 'xla']"
    ]


# Every committed report's records, written at schema version 2: they keep loading under the current version.
V2_FILES = sorted((Path(__file__).parents[1] / "reports").glob("**/results.jsonl"))


@pytest.mark.parametrize("path", V2_FILES, ids=lambda p: str(p.parent.relative_to(p.parents[2])))
def test_every_committed_record_loads_under_the_current_version(path):
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    loaded = load_records(path.parent)
    assert loaded.skipped == [] and len(loaded.records) == len(lines)
    assert {r["schema_version"] for r in loaded.records} == {SCHEMA_VERSION}


def test_a_v2_record_upgrades_to_the_naming_rule():
    v2 = {
        "schema_version": 2, "kind": "measured", "variant": "a", "preset": "tiny", "scope": "model", "status": "ok",
        "timestamp_utc": "2026-12-01T00:00:00+00:00", "step_s_median": 0.5, "xla_flops_per_step": 8.0,
        "xla_optimal_seconds_per_step": 0.25, "mem_peak_estimate_bytes": 100, "comm_bytes_total": 64,
        "comm_count_total": 3, "comm_mp_allreduce_bytes": 32, "comm_mp_wire_bytes": 48.0,
        "comm_dp_exposed_wire_bytes": 16.0, "comm_dtype_bf16_bytes": 32, "comm_mp_allreduce_count": 2,
        "profile_total_op_time_us": 2500.0, "profile_component_ms_per_step": {"ff_in": 3.0},
        "gemm_floor_component_ms_per_step": {"ff_in": 2.0}, "kv_cache_bytes": 10,
        "profile_top_ops": [{"name": "dot", "self_time_us": 1000.0, "share": 0.4}],
        "xla_cost_points": [{"layers": 2, "microsteps": 1, "xla_flops_per_step": 1.0,
                             "xla_bytes_accessed_per_step": 2.0, "xla_optimal_seconds_per_step": 0.1}],
    }  # fmt: skip
    new = upgrade(v2)
    assert validate(new) == []
    assert new["schema_version"] == SCHEMA_VERSION
    assert (new["step_median_s"], new["xla_flops_per_step_total"], new["xla_optimal_s_per_step_per_device"]) == (
        0.5, 8.0, 0.25,
    )  # fmt: skip
    assert new["mem_peak_estimate_bytes_per_device"] == 100 and new["kv_cache_bytes_total"] == 10
    assert (new["comm_bytes_per_device"], new["comm_count"], new["comm_mp_allreduce_count"]) == (64, 3, 2)
    for key in ("comm_mp_allreduce_bytes", "comm_mp_wire_bytes", "comm_dp_exposed_wire_bytes", "comm_dtype_bf16_bytes"):
        assert new[f"{key}_per_device"] == v2[key]
    assert new["profile_op_time_s_total"] == pytest.approx(2.5e-3)  # microseconds to seconds
    assert new["profile_component_s_per_step_per_device"] == {"ff_in": pytest.approx(3e-3)}  # ms to s
    assert new["gemm_floor_component_s_per_step"] == {"ff_in": pytest.approx(2e-3)}
    assert new["profile_top_ops"] == [{"name": "dot", "self_time_s": pytest.approx(1e-3), "op_time_frac": 0.4}]
    assert new["xla_cost_points"] == [
        {"layers": 2, "microsteps": 1, "xla_flops_per_step_per_device": 1.0,
         "xla_bytes_accessed_per_step_per_device": 2.0, "xla_optimal_s_per_step_per_device": 0.1}
    ]  # fmt: skip
    assert not [k for k in new if k in V2_NAMES]


def naming_problems(name: str) -> list[str]:
    """How a field name departs from the naming rule (bench.records.schema's docstring)."""
    words = name.split("_")
    problems = []
    if found := set(words) & {"us", "ms", "seconds", "share", "over"}:
        problems.append(f"spells a unit or quotient as {sorted(found)}")
    if re.search(r"_s_(median|min|max|iqr|p\d+)(_|$)|_(frac|ratio)_", name):
        problems.append("puts a statistic or a word after its unit")
    counted = {"bytes", "flops"} & set(words) and not name.endswith(("_source", "_ratio", "_frac"))
    if counted and not name.endswith(("_per_device", "_total")) and name not in ONE_MACHINE:
        problems.append("counts bytes or FLOPs without _per_device or _total")
    priced = name.startswith(("xla_optimal", "component_", "hlo_roofline", "decode_projected_", "profile_"))
    seconds = any(w == "s" and words[i - 1] != "per" for i, w in enumerate(words) if i)  # _s, not a rate's _per_s
    if priced and seconds and not name.endswith(("_per_device", "_total")):
        problems.append("a time priced or profiled for one device's program without _per_device or _total")
    return problems


ONE_MACHINE = {"copy_bandwidth_bytes_per_s"}  # this machine's memory bandwidth: neither one device's nor a sum


def test_every_field_name_follows_the_naming_rule():
    names = [*FIELDS, comm_dtype_key("bf16")]
    assert {name: naming_problems(name) for name in names if naming_problems(name)} == {}


@pytest.mark.parametrize(
    "name", ["step_s_median", "profile_component_ms_per_step", "xla_flops_per_step", "component_seconds_per_step",
             "xla_optimal_s_per_step", "profile_collective_share", "projected_over_published", "comm_mp_wire_bytes"],
)  # fmt: skip
def test_the_naming_rule_refuses_version_2_spellings(name):
    assert naming_problems(name)


def test_a_section_is_written_by_its_declared_names():
    assert section_fields(Memory, mem_temp_bytes_per_device=1) == {"mem_temp_bytes_per_device": 1}
    with pytest.raises(TypeError, match="Memory declares no field"):
        section_fields(Memory, mem_temp_bytes=1)
