import json

import pytest

from bench.measure import pipeline as bench_run
from bench.records.context import base_record, new_run_dir
from bench.records.schema import SCHEMA_VERSION
from bench.records.store import RecordNotSaved, append_record, finished_keys, load_records, results_path
from model.config import Mesh, Scope, Variant, get_preset

PRESET = get_preset("tiny")


def record(variant: str, status: str = "ok", repeat: int = 0, **extra) -> dict:
    head = {
        "schema_version": SCHEMA_VERSION,
        "kind": "measured",
        "variant": variant,
        "preset": "tiny",
        "scope": "model",
    }
    return head | {
        "jax": "0.1",
        "status": status,
        "timestamp_utc": "2026-11-29T00:00:00+00:00",
        "repeat": repeat,
        **extra,
    }


def test_append_keeps_earlier_records_and_is_loadable_by_pandas(tmp_path):
    pandas = pytest.importorskip("pandas")
    append_record(tmp_path, record("a", tokens_per_s=1.0))
    append_record(tmp_path, record("b", tokens_per_s=2.0))
    frame = pandas.read_json(results_path(tmp_path), lines=True)
    assert list(frame["variant"]) == ["a", "b"]
    assert not list(tmp_path.glob(".results.*.tmp"))  # no temporary file left behind


def test_a_record_the_run_directory_refuses_is_kept_and_the_error_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTJ_BENCH_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    results_path(run_dir).mkdir(parents=True)  # results.jsonl is a directory: neither read nor replaced
    with pytest.raises(RecordNotSaved) as caught:
        append_record(run_dir, record("a", tokens_per_s=1.0))
    kept = caught.value.kept_at
    assert kept is not None and kept.parent == tmp_path / "cache" / "unsaved"
    assert json.loads(kept.read_text())["variant"] == "a"
    assert f"the record is kept at {kept}" in str(caught.value) and f"cat {kept} >> " in str(caught.value)


def test_append_never_glues_onto_a_damaged_last_line(tmp_path):
    results_path(tmp_path).write_text(json.dumps(record("a")) + "\n" + '{"variant": "half')
    append_record(tmp_path, record("b"))
    loaded = load_records(tmp_path)
    assert [r["variant"] for r in loaded.records] == ["a", "b"]
    assert loaded.skipped == ["results.jsonl line 2: not JSON (Unterminated string starting at)"]


def test_load_names_what_it_skips(tmp_path):
    lines = [json.dumps(record("a")), "[1, 2]", json.dumps(record("b") | {"schema_version": 0})]
    results_path(tmp_path).write_text("\n".join(lines) + "\n")
    loaded = load_records(tmp_path)
    assert [r["variant"] for r in loaded.records] == ["a"]
    assert loaded.skipped == [
        "results.jsonl line 2: not a JSON object",
        f"results.jsonl line 3: schema_version 0, expected {SCHEMA_VERSION}",
    ]


def test_a_record_without_required_fields_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks required fields"):
        append_record(tmp_path, {"variant": "a"})


def test_resume_keys_are_ok_records_only(tmp_path):
    append_record(tmp_path, record("a"))
    append_record(tmp_path, record("b", status="failed"))
    append_record(tmp_path, record("a", repeat=1))
    append_record(tmp_path, record("a") | {"jax": "0.2"})
    append_record(tmp_path, record("a") | {"preset": "gpt-neo-2.7b"})
    preset = record("a")["preset"]
    want = {("a", 0, "0.1", preset), ("a", 1, "0.1", preset), ("a", 0, "0.2", preset), ("a", 0, "0.1", "gpt-neo-2.7b")}
    assert {key[:4] for key in finished_keys(tmp_path)} == want


def test_resume_keys_tell_apart_the_sizes_and_meshes_of_one_variant(tmp_path):
    from bench.records.context import failed_record
    from bench.records.store import record_key
    from model.config import apply_overrides

    preset, variant = get_preset("tiny"), Variant.parse("parallel-h256-pjit-none")
    bigger = apply_overrides(preset, ["n_layers=4"])

    def planned(p, mesh):  # the key of the head a run would write, as --resume asks
        return record_key(failed_record(variant, p, mesh, Scope.MODEL, 0, "0.1", None))

    head = failed_record(variant, preset, Mesh(2, 4), Scope.MODEL, 0, "0.1", None)
    append_record(tmp_path, head | {"status": "ok"})
    done = finished_keys(tmp_path)
    assert planned(preset, Mesh(2, 4)) in done
    assert planned(bigger, Mesh(2, 4)) not in done  # another size: not yet run
    assert planned(preset, Mesh(1, 8)) not in done  # another mesh: not yet run


def test_new_run_directories_never_collide(tmp_path):
    first, second = new_run_dir(tmp_path), new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_step_stats_by_hand():
    stats = bench_run.step_stats([4.0, 1.0, 2.0, 3.0])
    assert stats["step_median_s"] == 2.5 and stats["step_min_s"] == 1.0 and stats["step_max_s"] == 4.0
    assert stats["step_iqr_s"] == pytest.approx(3.75 - 1.25)  # statistics.quantiles, exclusive method


def fake_measure(fail: set[str]):
    def measure(variant, preset, mesh, scope, steps, warmup, repeat=0, overhead=False, peak=None, **_options):
        out = base_record(variant, preset, mesh, scope, repeat)
        if variant.name in fail:
            out["error"] = "RuntimeError: forced"
        else:
            out["status"] = "ok"
        return out

    return measure


def test_a_failure_is_recorded_and_the_next_variant_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "measure", fake_measure({"parallel-h256-pjit-none"}))
    variants = [Variant.parse("parallel-h256-pjit-none"), Variant.parse("serial-h256-pjit-none")]
    bench_run.run_variants(variants, PRESET, Mesh(2, 4), Scope.MODEL, 1, 0, tmp_path, resume=False)
    records = load_records(tmp_path).records
    assert [(r["variant"], r["status"]) for r in records] == [
        ("parallel-h256-pjit-none", "failed"),
        ("serial-h256-pjit-none", "ok"),
    ]
    assert records[0]["error"] == "RuntimeError: forced"


def test_resume_skips_ok_variants_and_retries_failed_ones(tmp_path, monkeypatch):
    variants = [Variant.parse("parallel-h256-pjit-none"), Variant.parse("serial-h256-pjit-none")]
    monkeypatch.setattr(bench_run, "measure", fake_measure({"parallel-h256-pjit-none"}))
    bench_run.run_variants(variants, PRESET, Mesh(2, 4), Scope.MODEL, 1, 0, tmp_path, resume=False)
    monkeypatch.setattr(bench_run, "measure", fake_measure(set()))
    rerun = bench_run.run_variants(variants, PRESET, Mesh(2, 4), Scope.MODEL, 1, 0, tmp_path, resume=True)
    assert [r["variant"] for r in rerun] == ["parallel-h256-pjit-none"]
    assert len(load_records(tmp_path).records) == 3  # nothing overwritten
