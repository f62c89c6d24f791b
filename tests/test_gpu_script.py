"""``python -m bench.gpu``: its plan and budget logic (pure), and its ``--dry-run`` end to end on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import plan
from bench.records.schema import validate
from bench.records.store import load_records
from bench.report.load import DEVICE_FILE
from bench.report.write import REPORT
from kernels.choice import AttentionKernel
from model.config import Dtype, Variant

REPO = Path(__file__).resolve().parents[1]


# --- the plan (pure) -------------------------------------------------------------------------------------------


def test_gptj_configuration_runs_first_on_every_kernel_then_is_traced():
    names = [run.variant for run in plan.PLAN]
    kernels = [Variant.parse(n).attention_kernel for n in names[: len(plan.KERNELS)]]
    assert kernels == list(plan.KERNELS)
    assert {Variant.parse(n).replace(attention_kernel=AttentionKernel.reference).name for n in names[:4]} == {
        plan.GPTJ_CONFIG
    }
    traced = [run for run in plan.PLAN if run.profile]
    assert traced == [plan.PLAN[len(plan.KERNELS)]] and traced[0].variant.endswith("+best")


def test_the_plan_holds_each_axis_pair_and_no_xmap():
    resolved = [plan.resolve(run, AttentionKernel.reference) for run in plan.PLAN]
    variants = [Variant.parse(name) for name in resolved]
    assert {v.remat.value for v in variants} == {"none", "full", "dots", "attn"}
    assert {v.residual.value for v in variants} == {"parallel", "serial"}
    assert {v.head.value for v in variants} == {"h128", "h256"}
    assert {v.strategy.value for v in variants} == {"pjit", "shard_map"}
    assert sum(v.strategy.value == "shard_map" for v in variants) == 1


def test_the_gpu_preset_is_gptj_6b_dimensions_in_bf16_with_f32_weights():
    preset = plan.preset_for(plan.GPU, batch=8)
    model = preset.model
    assert (model.d_model, model.d_ff, preset.seq, model.vocab) == (4096, 16384, 2048, 50400)
    assert 4 <= model.n_layers <= 8
    assert (model.compute_dtype, model.param_dtype) == (Dtype.BFLOAT16, Dtype.FLOAT32)
    assert (preset.mesh.dp, preset.mesh.mp, preset.batch) == (1, 1, 8)


def test_best_kernel_is_the_fastest_gptj_configuration_run():
    rates = {
        "parallel-h256-pjit-full": 100.0,
        "parallel-h256-pjit-full+cudnn": 300.0,
        "parallel-h256-pjit-full+xla": 200.0,
        "parallel-h256-pjit-none": 900.0,  # another configuration: not a candidate
    }
    assert plan.best_kernel(rates) is AttentionKernel.cudnn
    assert plan.best_kernel({"parallel-h256-pjit-none": 1.0}) is None
    traced = plan.PLAN[len(plan.KERNELS)]
    assert plan.resolve(traced, AttentionKernel.cudnn) == "parallel-h256-pjit-full+cudnn"
    assert plan.resolve(traced, None) is None


def test_skip_reason_lets_the_first_run_start_and_stops_one_that_would_overrun():
    assert plan.skip_reason(10.0, 420.0, []) is None
    assert plan.skip_reason(300.0, 420.0, [60.0, 100.0]) is None  # 120 s left, the longest took 100
    reason = plan.skip_reason(350.0, 420.0, [60.0, 100.0])
    assert reason is not None and "70 s" in reason and "100 s" in reason
    assert plan.skip_reason(421.0, 420.0, []) is not None


def test_batch_to_fill_is_the_largest_batch_under_the_fraction_of_the_limit():
    # 10 GiB fixed + 3 GiB per sequence, 100 GiB limit: 0.9 x 100 = 90 -> (90 - 10) / 3 = 26.7 -> 26
    gib = 2**30
    assert plan.batch_to_fill(13 * gib, 16 * gib, 100 * gib) == 26
    assert plan.batch_to_fill(95 * gib, 99 * gib, 100 * gib) == 1  # even one does not fit: tried, and recorded
    with pytest.raises(ValueError, match="did not grow"):
        plan.batch_to_fill(5, 5, 100)


def test_out_dir_problems_names_each_limit(tmp_path):
    for i in range(9):
        (tmp_path / f"f{i}.txt").write_text("x")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("x")
    (tmp_path / "bad name.txt").write_text("x")
    problems = plan.out_dir_problems(tmp_path)
    assert any("11 files" in p for p in problems)
    assert any("a/b/c/x.txt: more than 2 folders down" in p for p in problems)
    assert any("bad name.txt: a name outside" in p for p in problems)
    assert plan.out_dir_problems(tmp_path / "a") == []  # from a, b/c/x.txt is 2 folders down: it comes back


# --- the dry run, end to end -----------------------------------------------------------------------------------

DRY_RUN_BUDGET_S = 60  # enough for the probe and the first run here; the rest is skipped, as the budget says


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu") / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "bench.gpu", "--dry-run", "--out", str(out), "--budget-s", str(DRY_RUN_BUDGET_S)]
    command += ["--trace-dir", str(tmp_path_factory.mktemp("trace"))]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return out, done


def test_dry_run_records_every_planned_run_in_the_schema(dry_run):
    out, done = dry_run
    assert done.returncode == 0, done.stderr[-3000:]
    records = load_records(out).records
    assert len(records) == len(plan.PLAN)
    for record in records:
        assert validate(record) == [], record["variant"]
    first = records[0]
    assert first["variant"] == plan.GPTJ_CONFIG and first["status"] == "ok", first.get("error")
    assert first["mfu_matmul"] > 0 and first["matmul_flops_per_s_per_device"] > 0 and first["compile_s"] > 0
    for record in records:
        if record["status"] != "ok":
            assert record["error"], record["variant"]
        if record.get("skipped_reason"):
            assert record["status"] == "failed" and record["error"].startswith("skipped: ")


def test_dry_run_refuses_gpu_only_kernels_with_their_reason(dry_run):
    out, _ = dry_run
    by_name = {r["variant"]: r for r in load_records(out).records}
    cudnn, pallas = by_name["parallel-h256-pjit-full+cudnn"], by_name["parallel-h256-pjit-full+pallas"]
    assert cudnn["status"] == pallas["status"] == "failed"
    assert "'cudnn' runs on GPU only" in cudnn["error"]
    assert "'pallas' runs on GPU and TPU" in pallas["error"]


def test_dry_run_report_names_the_h200_row_and_fits_the_device_tools_limits(dry_run):
    out, _ = dry_run
    report = (out / REPORT).read_text()
    assert report.splitlines()[0].endswith("(gpu)")  # written by bench.report, as every kind of run is
    assert "hardware-table row **NVIDIA H200 SXM**" in report and "989 TFLOP/s" in report
    assert "measured matmul ceiling" in report and "xmap: not run" in report
    assert "'cudnn' runs on GPU only" in report
    facts = json.loads((out / DEVICE_FILE).read_text())
    assert facts["dry_run"] is True and facts["batch"] == plan.DRY_RUN_BATCH
    assert plan.out_dir_problems(out) == []


def test_one_traced_run_breaks_its_trace_down_by_component(tmp_path):
    """The traced run of the plan, alone (the dry run's budget may skip it): bench.gpu.one with a trace."""
    matmul = json.dumps(
        {"matmul_flops_per_s_per_device": 1e10, "matmul_source": "a test's stand-in, not a measurement"}
    )
    command = [sys.executable, "-m", "bench.gpu.one", "--variant", plan.GPTJ_CONFIG, "--batch", "2", "--dry-run"]
    command += ["--out", str(tmp_path / "out"), "--matmul", matmul, "--trace-dir", str(tmp_path / "trace")]
    done = subprocess.run(command, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = load_records(tmp_path / "out").records
    assert validate(record) == [] and record["status"] == "ok", record.get("error")
    ms = record["profile_component_s_per_step_per_device"]
    assert {"qkv_proj", "ff_in", "ff_out"} <= set(ms) and all(v >= 0 for v in ms.values())
    assert record["profile_component_matched_frac"] > 0.99
    assert record["mfu_matmul"] == pytest.approx(record["model_flops_per_s_total"] / 1e10)


def test_without_a_gpu_and_without_dry_run_it_says_so_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench.gpu", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
    assert done.returncode == 1
    assert "not a GPU: on CPU run with --dry-run" in (out / REPORT).read_text()
    assert not (out / "results.jsonl").exists()
