"""The CPU peak a record is measured against: measured for the run (or read from the cross-run cache only when
asked, and then said), refused above the theoretical peak, kept in RUN_DIR/peaks.jsonl and reused; the harness
overhead as paired ratios; the report's drift warnings."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import SESSION_CACHE

from bench.cli.main import main
from bench.launch import sweep as sweep_module
from bench.measure import calibrate
from bench.measure import pipeline as bench_run
from bench.records.context import base_record
from bench.records.peakfile import PEAK_FILE, PeakEntry, append_peak, read_peaks
from bench.records.schema import validate
from bench.records.store import load_records
from bench.report.sections.environment import peak_section, peak_warnings, per_run_peak_spreads
from model.config import Mesh, Scope, Variant, get_preset

PRESET = get_preset("tiny")
MESH = Mesh(1, 1)  # one device compiles fastest; the peak is per device either way
VARIANT = Variant.parse("parallel-h256-pjit-none")
USER_CACHE = Path(os.path.expanduser("~")) / ".cache" / "gptj-bench" / calibrate.CACHE_FILE


def fast_calibration(mp: pytest.MonkeyPatch) -> None:
    """Small GEMMs (tests need a positive figure, not the machine's peak); see tests/test_hardware.py's FAST."""
    mp.setattr(calibrate, "DEFAULT_SIZES", (64, 128))
    mp.setattr(calibrate, "DEFAULT_REPEATS", 2)
    mp.setattr(calibrate, "SINGLE_DEVICE_SIZE", 128)


@pytest.fixture
def fast(monkeypatch):
    fast_calibration(monkeypatch)


def _stat(path: Path) -> tuple[bool, float | None]:
    return (path.exists(), path.stat().st_mtime_ns if path.exists() else None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real measured tiny run, with --peak-cache and --overhead, and the user's cache file around it."""
    out = tmp_path_factory.mktemp("run")
    before = _stat(USER_CACHE)
    # The real calibration, not fast_calibration: the run's MFU is checked against it (above 100% stops the run),
    # and small GEMMs are dispatch-bound, an underestimate that made a tiny run's MFU read 143% under load.
    records = bench_run.run_variants(
        [VARIANT], PRESET, MESH, Scope.MODEL, 2, 1, out, resume=False, overhead=True, peak_cache=True
    )
    return SimpleNamespace(out=out, records=records, before=before, after=_stat(USER_CACHE))


def fake_measure(variant, preset, mesh, scope, steps, warmup, repeat=0, overhead=False, peak=None, **_options):
    return {**base_record(variant, preset, mesh, scope, repeat), **peak, "status": "ok"}


# --- the user's calibration -----------------------------------------------------------------------------------------


def test_tests_point_the_cache_at_their_own_directory():
    assert os.environ[calibrate.CACHE_ENV] == SESSION_CACHE
    assert calibrate.cache_path() == Path(SESSION_CACHE) / calibrate.CACHE_FILE
    assert calibrate.cache_path() != USER_CACHE


def test_a_measured_tiny_run_leaves_the_users_calibration_alone(tiny_run):
    (record,) = tiny_run.records
    assert record["status"] == "ok", record.get("error")
    assert tiny_run.after == tiny_run.before  # neither created nor modified
    assert (Path(SESSION_CACHE) / calibrate.CACHE_FILE).exists()  # --peak-cache wrote the session's cache


def test_the_mfu_is_against_the_peak_measured_in_the_run_just_before_its_timed_steps(tiny_run, monkeypatch):
    (record,) = tiny_run.records
    peak = record["peak_run_flops_per_s_per_device"]
    assert peak > 0 and 0 < record["peak_run_s"] and "GEMM calibration" in record["peak_run_source"]
    assert record["mfu"] == pytest.approx(record["model_flops_per_s_total"] / (MESH.devices * peak))
    assert record["hfu"] == pytest.approx(record["hardware_flops_per_s_total"] / (MESH.devices * peak))
    # the per-run GEMMs come after the compile and analysis, and right before the first warm-up or timed step
    order = []
    real_peak, real_steps = bench_run.per_run_peak_fields, bench_run.time_steps
    monkeypatch.setattr(bench_run, "per_run_peak_fields", lambda *a: order.append("peak") or real_peak(*a))
    monkeypatch.setattr(bench_run, "time_steps", lambda *a: order.append("steps") or real_steps(*a))
    fields = {"peak_flops_per_s_per_device": peak, "peak_source": "the tiny run's"}
    measured = bench_run.measure(VARIANT, PRESET, MESH, Scope.MODEL, 1, 0, peak=fields)
    assert measured["status"] == "ok", measured.get("error")
    assert order == ["peak", "steps"]


def test_the_paired_harness_overhead_has_a_spread(tiny_run):
    (record,) = tiny_run.records
    assert record["status"] == "ok", record.get("error")
    assert record["harness_overhead_pairs"] == bench_run.OVERHEAD_PAIRS
    low, median, high = (
        record[k] for k in ("harness_overhead_min_frac", "harness_overhead_frac", "harness_overhead_max_frac")
    )
    assert all(math.isfinite(x) for x in (low, median, high))
    assert low <= median <= high
    assert record["bare_loop_step_s"] > 0
    assert validate(record) == []


# --- a loaded or cached calibration never reaches a record unannounced ------------------------------------------------


def test_without_the_flag_the_peak_is_measured_for_the_run_written_and_reused(tmp_path, fast, monkeypatch):
    monkeypatch.setattr(bench_run, "measure", fake_measure)
    calibrate.calibrate_cpu_peak("float32", [_cpu(0)])  # a cache entry that must not be used
    (first,) = bench_run.run_variants([VARIANT], PRESET, MESH, Scope.MODEL, 1, 0, tmp_path, resume=False)
    assert first["peak_from_cache"] is False and first["peak_file"] == PEAK_FILE
    (entry,) = read_peaks(tmp_path)
    assert (entry.when, entry.devices, entry.dtype) == ("start", 1, "float32")
    assert first["peak_flops_per_s_per_device"] == entry.flops_per_device > 0
    assert first["peak_measured_utc"] == entry.measured_utc
    assert first["peak_load_avg_before"] >= 0 and first["peak_load_avg_after"] >= 0
    assert "peak_theoretical_source" in first
    other = Variant.parse("serial-h256-pjit-none")
    (second,) = bench_run.run_variants([other], PRESET, MESH, Scope.MODEL, 1, 0, tmp_path, resume=False)
    assert len(read_peaks(tmp_path)) == 1  # reused, not measured again
    assert second["peak_measured_utc"] == first["peak_measured_utc"]
    assert all(validate(r) == [] for r in load_records(tmp_path).records)


def test_with_the_flag_the_cached_peak_says_so(tmp_path, fast, monkeypatch):
    monkeypatch.setattr(bench_run, "measure", fake_measure)
    cached = calibrate.calibrate_cpu_peak("float32", [_cpu(0)])
    (record,) = bench_run.run_variants(
        [VARIANT], PRESET, MESH, Scope.MODEL, 1, 0, tmp_path, resume=False, peak_cache=True
    )
    assert record["peak_from_cache"] is True and record["peak_file"] is None
    assert record["peak_flops_per_s_per_device"] == cached.flops_per_device
    assert "--peak-cache" in record["peak_source"]
    assert not (tmp_path / PEAK_FILE).exists()


# --- the theoretical ceiling ----------------------------------------------------------------------------------------


def test_a_calibration_above_the_theoretical_peak_is_refused(tmp_path, fast, monkeypatch):
    monkeypatch.setattr(calibrate, "theoretical_per_device", lambda devices: (1.0, "a 1 FLOP/s test ceiling"))
    with pytest.raises(calibrate.PeakAboveTheoretical, match="exceeds the theoretical"):
        calibrate.measure_cpu_peak("float32", [_cpu(0)])

    def must_not_measure(*args, **kwargs):
        raise AssertionError("a variant was measured against a refused peak")

    monkeypatch.setattr(bench_run, "measure", must_not_measure)
    (record,) = bench_run.run_variants([VARIANT], PRESET, MESH, Scope.MODEL, 1, 0, tmp_path, resume=False)
    assert record["status"] == "failed" and "PeakAboveTheoretical" in record["error"]
    assert "peak_flops_per_s_per_device" not in record and "mfu" not in record
    assert read_peaks(tmp_path) == []


def test_a_cached_calibration_above_the_theoretical_peak_is_refused(fast, monkeypatch):
    calibrate.calibrate_cpu_peak("float32", [_cpu(0)])
    monkeypatch.setattr(calibrate, "theoretical_per_device", lambda devices: (1.0, "a 1 FLOP/s test ceiling"))
    with pytest.raises(calibrate.PeakAboveTheoretical):
        calibrate.calibrate_cpu_peak("float32", [_cpu(0)])


# --- the calibrate subcommand and the sweep ------------------------------------------------------------------------


def test_calibrate_reuses_the_start_entry_and_appends_the_end(tmp_path, fast):
    args = ["calibrate", "--preset", "tiny", "--mesh", "dp=1,mp=1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert main(args + ["--when", "start"]) == 0
    assert main(args + ["--when", "end"]) == 0
    assert [e.when for e in read_peaks(tmp_path)] == ["start", "end"]
    assert not list(tmp_path.glob(".peaks.jsonl.*"))  # no temporary file left behind


def test_the_sweep_calibrates_each_environment_before_its_first_variant_and_after_its_last(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(sweep_module.subprocess, "run", fake_run)
    monkeypatch.setattr(sweep_module, "env_variants", lambda env, plan: [VARIANT])
    pythons = {"current": "python-a", "xmap": "python-b"}
    # the reference variants alone: the kernel part between them and the end calibration is tests/test_sweep.py's
    plan = dataclasses.replace(sweep_module.QUICK, kernels=())
    sweep_module.sweep(plan, pythons, tmp_path, [], timeout_s=10)
    kinds = [(argv[0], argv[3], next(a for a in argv if a.startswith("--when=") or a == "run")) for argv in calls]
    assert kinds[:2] == [("python-a", "calibrate", "--when=start"), ("python-b", "calibrate", "--when=start")]
    assert kinds[-2:] == [("python-a", "calibrate", "--when=end"), ("python-b", "calibrate", "--when=end")]
    assert [k[1] for k in kinds[2:-2]] == ["run", "run"]
    assert all(f"--out={tmp_path}" in argv for argv in calls)


# --- the report ------------------------------------------------------------------------------------------------------


def entry(when: str, gflops: float, jax: str = "0.10.2", load: float = 0.5) -> PeakEntry:
    return PeakEntry(
        when, jax, jax, f"python-{jax}", "float32", 8, gflops * 1e9, calibrate.METHOD, "GEMM calibration (test)",
        "2026-12-01T00:00:00+00:00", load, load, None, "no theoretical peak: test",
    )  # fmt: skip


def test_a_drift_over_the_sweep_marks_mfu_uncertain(tmp_path):
    run = SimpleNamespace(run_dir=tmp_path, measured=())
    append_peak(tmp_path, entry("start", 20.0))
    append_peak(tmp_path, entry("end", 20.8))  # 4%: within the limit
    assert peak_warnings(run) == []
    append_peak(tmp_path, entry("end", 18.0))  # the later end entry counts too: -10%
    (warning,) = peak_warnings(run)
    assert warning.startswith("MFU uncertain: the CPU peak drifted -10.0% over the sweep")
    assert "MFU uncertain" in "\n".join(peak_section(run))


def test_a_drift_is_no_doubt_where_every_mfu_is_against_its_own_runs_peak(tmp_path):
    ok = [{"status": "ok", "jax": "0.10.2", "peak_run_flops_per_s_per_device": g * 1e9} for g in (19.0, 21.0)]
    run = SimpleNamespace(run_dir=tmp_path, measured=(*ok, {"status": "failed", "jax": "0.10.2"}))
    append_peak(tmp_path, entry("start", 20.0))
    append_peak(tmp_path, entry("end", 18.0))
    (warning,) = peak_warnings(run)
    assert warning.startswith("The CPU peak drifted -10.0% over the sweep") and "does not move it" in warning
    (spread,) = per_run_peak_spreads(run)
    assert "jax 0.10.2 19.0 to 21.0 GFLOP/s per device over 2 runs (10.5% spread)" in spread
    assert spread in "\n".join(peak_section(run))
    without = SimpleNamespace(run_dir=tmp_path, measured=(*ok, {"status": "ok", "jax": "0.10.2"}))
    assert peak_warnings(without)[0].startswith("MFU uncertain") and per_run_peak_spreads(without) == []


def test_environments_whose_peaks_differ_are_flagged_with_their_loads(tmp_path):
    run = SimpleNamespace(run_dir=tmp_path, measured=())
    append_peak(tmp_path, entry("start", 20.0, "0.10.2", load=0.5))
    append_peak(tmp_path, entry("start", 16.0, "0.4.30", load=3.0))
    (warning,) = peak_warnings(run)
    assert "differ by 25.0%" in warning and "more load" in warning and "uncertain" in warning
    section = "\n".join(peak_section(run))
    assert "16.0" in section and "20.0" in section and "0.50 -> 0.50" in section


def test_unreadable_lines_of_the_peak_file_are_skipped(tmp_path):
    append_peak(tmp_path, entry("start", 20.0))
    with open(tmp_path / PEAK_FILE, "a", encoding="utf-8") as f:
        f.write("{not json\n" + json.dumps({"when": "start"}) + "\n")
    assert len(read_peaks(tmp_path)) == 1


def _cpu(i: int):
    import jax

    return jax.local_devices(backend="cpu")[i]
