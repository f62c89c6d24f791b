"""A variant's failure is recorded and the run goes on; a bug in the suite stops the run (bench.compile.failure).

The bug is injected: a function of the suite patched to raise ``KeyError`` for one variant. The failures a variant
can have are real ones: XLA refusing a compile, and the suite's own refusal of a kernel the platform lacks.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from bench.compile.failure import EXIT_SUITE_FAULT, CompilerRefused, variant_failures
from bench.measure import pipeline
from bench.records.schema import Status
from bench.records.store import load_records
from model.config import ConfigError, Mesh, Scope, Variant, get_preset

REPO = Path(__file__).resolve().parents[1]
FIRST, BUGGY, LAST = "parallel-h256-pjit-none", "serial-h256-pjit-none", "parallel-h128-pjit-none"
PRESET = get_preset("tiny")
ONE_DEVICE = Mesh(dp=1, mp=1)

# `bench run` in a child process whose prepare() has a bug for one variant, BUGGY: a KeyError from the suite
INJECTED_BUG = f"""
import sys
import bench.measure.prepare as prepare_module
real = prepare_module.prepare
def prepare(preset, variant, mesh, scope):
    if variant.name == {BUGGY!r}:
        return {{}}["a key the suite forgot"]
    return real(preset, variant, mesh, scope)
prepare_module.prepare = prepare
from bench.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_in_the_suite_stops_the_run_with_its_traceback_and_keeps_the_records(tmp_path):
    args = ["run", "--variant", FIRST, "--variant", BUGGY, "--variant", LAST, "--preset", "tiny"]
    args += ["--mesh", "dp=1,mp=1", "--steps", "1", "--warmup", "0", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", INJECTED_BUG, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == EXIT_SUITE_FAULT, result.stderr[-2000:]
    assert "Traceback (most recent call last)" in result.stderr
    assert "KeyError: 'a key the suite forgot'" in result.stderr
    assert f"intact in {tmp_path}; rerun with --resume --out {tmp_path}" in result.stderr.splitlines()[-1]
    loaded = load_records(tmp_path)
    assert not loaded.skipped
    # the variant before the bug is recorded ok; none for the buggy one, and the run stopped there
    assert [(r["variant"], r["status"]) for r in loaded.records] == [(FIRST, Status.OK.value)]


def test_the_sweep_stops_when_a_variant_stops_on_a_bug(tmp_path, monkeypatch):
    from bench.launch import sweep

    job = types.SimpleNamespace(variant=Variant.parse(BUGGY), env="current", repeat=0)
    bug = subprocess.CompletedProcess([], EXIT_SUITE_FAULT, "", "Traceback ...\nKeyError: 'x'\n")
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: bug)
    with pytest.raises(RuntimeError, match=f"{BUGGY} \\(current\\) stopped on a bug in the suite"):
        sweep.run_job(job, sweep.QUICK, sys.executable, tmp_path, [], 60.0, command_override=["true"])
    assert not load_records(tmp_path).records  # no failed record stands in for a bug


def _measure(variant: Variant) -> dict:
    peak = {"peak_flops_per_s_per_device": 1e12, "peak_source": "a test's"}
    return pipeline.measure(variant, PRESET, ONE_DEVICE, Scope.MODEL, steps=1, warmup=0, peak=peak)


def test_a_compile_xla_refuses_is_recorded_as_a_failed_variant(monkeypatch):
    """A real XLA error: the compile is given an option XLA does not have."""
    from bench.measure import prepare as prepare_module

    real_lower = prepare_module.lower

    def lower_refused(driver, program):
        lowered, state, batch = real_lower(driver, program)
        refused = types.SimpleNamespace(compile=lambda: lowered.compile({"xla_no_such_option_anywhere": "1"}))
        return refused, state, batch

    monkeypatch.setattr(prepare_module, "lower", lower_refused)
    record = _measure(Variant.parse(FIRST))
    assert record["status"] == Status.FAILED.value
    assert isinstance(record["error"], str) and record["error"]
    assert record["error"].split(":")[0] in {t.__name__ for t in variant_failures()}


def test_a_kernel_the_platform_lacks_is_recorded_as_a_failed_variant():
    record = _measure(Variant.parse(FIRST + "+cudnn"))
    assert record["status"] == Status.FAILED.value
    assert record["error"].startswith("ConfigError: ") and "GPU only" in record["error"]


def test_a_bug_inside_measure_is_raised_not_recorded(monkeypatch):
    from bench.measure import prepare as prepare_module

    monkeypatch.setattr(prepare_module, "make_driver", lambda *a, **k: {}["injected"])
    with pytest.raises(KeyError, match="injected"):
        _measure(Variant.parse(FIRST))


@pytest.mark.parametrize(
    "error, recorded",
    [(KeyError("a key the suite forgot"), False), (TypeError("a bug"), False), (CompilerRefused("v3"), True)],
    ids=["KeyError", "TypeError", "CompilerRefused"],
)
def test_a_tpu_compile_records_only_a_variants_failure(monkeypatch, error, recorded):
    from bench.tpu_aot import compile as aot_compile

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(aot_compile, "_main_compile", fail)
    device = types.SimpleNamespace(device_kind="TPU v3")
    args = (PRESET, Variant.parse(FIRST), ONE_DEVICE, "v3:2x2", [device])
    if not recorded:
        with pytest.raises(type(error)):
            aot_compile.compile_record(*args)
        return
    record = aot_compile.compile_record(*args)
    assert record["status"] == Status.FAILED.value and record["error"] == f"CompilerRefused: {error}"


def test_the_failures_are_the_compiler_s_memory_the_platform_s_and_time():
    from model import compat

    failures = variant_failures()
    assert set(compat.compiler_errors()) <= set(failures)
    assert {CompilerRefused, MemoryError, ConfigError, NotImplementedError, TimeoutError} <= set(failures)
    assert not {KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError} & set(failures)
