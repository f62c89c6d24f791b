"""``python -m bench.gpu --out DIR``: the suite on one GPU, end to end, in one command; ``--dry-run`` on CPU.

No nox: the lent machine has its own Python with JAX; dm-haiku and jmp come as carried wheels (README, "Measuring
on a GPU"). The probe (bench.gpu.probe) reads the device, times a bf16 matmul and sizes the batch; each planned run
(bench.gpu.plan.PLAN, in its order) is one process (bench.gpu.one) that measures as ``bench run`` does and appends
its record to ``DIR/results.jsonl``; runs that would not end within ``--budget-s`` are recorded as skipped.
REPORT.md and its plots follow (bench.report, as for every kind of run), within the device tool's limits on
what comes back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.gpu import plan
from bench.gpu.plan import DEVICE_FILE
from bench.records.schema import RecordKind
from bench.records.store import RESULTS, append_record, load_records
from model.config import Scope, Variant

DEFAULT_BUDGET_S = 420  # the device tool's 8-minute command, less a minute for the wheels, the report and start-up
DRY_RUN_BUDGET_S = 90  # the dry run is a test of the path: the first runs, the refusals, and the budget's skips
DEFAULT_TRACE_DIR = Path("/tmp/gptj-bench-gpu-trace")  # outside --out: a trace is larger than what comes back
ERROR_TAIL_CHARS = 2000
GPU_MEMORY_FRACTION = 0.95  # of the GPU's memory for JAX's allocator (XLA_PYTHON_CLIENT_MEM_FRACTION), unless set


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where REPORT.md, results.jsonl and plots go")
    parser.add_argument("--dry-run", action="store_true", help="the same path on CPU at tiny sizes, 1-2 steps")
    parser.add_argument(
        "--budget-s",
        type=float,
        help=f"seconds for the whole run (default {DEFAULT_BUDGET_S}; {DRY_RUN_BUDGET_S} with --dry-run)",
    )
    parser.add_argument("--trace-dir", type=Path, default=DEFAULT_TRACE_DIR, help="where the XProf trace goes")
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = DRY_RUN_BUDGET_S if args.dry_run else DEFAULT_BUDGET_S
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s}")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty: a run writes into an empty or new directory")
    return args


def child_env(dry_run: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    else:  # JAX's allocator takes 75% of the GPU by default; the batch is sized to what it may take
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(GPU_MEMORY_FRACTION))
    return env


def run_probe(args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.gpu.probe", *(["--dry-run"] if args.dry_run else [])]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.budget_s, env=child_env(args.dry_run)
        )
    except subprocess.TimeoutExpired:
        return {"error": f"the probe did not finish within --budget-s {args.budget_s:.0f}"}
    sys.stderr.write(done.stderr[-ERROR_TAIL_CHARS:])
    if done.returncode != 0:
        return {"error": f"the probe exited with {done.returncode}: {done.stderr[-ERROR_TAIL_CHARS:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def placeholder(name: str, sizing: plan.Sizing, batch: int, jax_version: str | None, error: str) -> dict[str, Any]:
    """A run's record where its process wrote none: skipped, timed out, or crashed."""
    from bench.records.context import failed_record

    preset = plan.preset_for(sizing, batch)
    variant = Variant.parse(name)
    return failed_record(variant, preset, preset.mesh, Scope.MODEL, 0, jax_version, error, RecordKind.MEASURED)


def run_child(
    args: argparse.Namespace, name: str, batch: int, matmul: dict, profile: bool, left_s: float
) -> str | None:
    """Runs one planned run in its own process; the error where it wrote no record of its own."""
    command = [sys.executable, "-m", "bench.gpu.one", "--variant", name, "--batch", str(batch), "--out", str(args.out)]
    command += ["--matmul", json.dumps(matmul)]
    command += ["--trace-dir", str(args.trace_dir)] if profile else []
    command += ["--dry-run"] if args.dry_run else []
    before = _record_count(args.out)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=max(left_s, 1.0), env=child_env(args.dry_run)
        )
    except subprocess.TimeoutExpired:
        return f"timed out: the run's process was stopped at the end of the time budget ({left_s:.0f} s left)"
    if _record_count(args.out) > before:
        return None
    return f"the run's process exited with {done.returncode} and wrote no record: {done.stderr[-ERROR_TAIL_CHARS:]}"


def _record_count(out: Path) -> int:
    path = out / RESULTS
    return len(path.read_text().splitlines()) if path.exists() else 0


def _ok_rates(out: Path) -> dict[str, float]:
    return {r["variant"]: r["tokens_per_s"] for r in load_records(out).records if r.get("status") == "ok"}


def run_plan(args: argparse.Namespace, facts: dict[str, Any], start: float) -> None:
    sizing = plan.DRY_RUN if args.dry_run else plan.GPU
    batch = facts["batch"]
    matmul = {k: facts[k] for k in ("matmul_flops_per_s_per_device", "matmul_source")}
    walls: list[float] = []
    for planned in plan.PLAN:
        name = plan.resolve(planned, plan.best_kernel(_ok_rates(args.out)))
        if name is None:
            name = planned.variant.partition("+")[0]
            reason = "no run of GPT-J's configuration succeeded, so there is no best kernel to trace"
        else:
            refusal = kernel_refusal(name, facts["platform"])
            if refusal is not None:  # refused before a process starts, in the words bench run records
                append_record(args.out, placeholder(name, sizing, batch, facts.get("jax"), refusal))
                print(f"{name}: refused ({refusal})", file=sys.stderr)
                continue
            reason = plan.skip_reason(time.perf_counter() - start, args.budget_s, walls)
        if reason is not None:
            record = placeholder(name, sizing, batch, facts.get("jax"), f"skipped: {reason}")
            append_record(args.out, record | {"skipped_reason": reason})
            print(f"{name}: skipped ({reason})", file=sys.stderr)
            continue
        began = time.perf_counter()
        left = args.budget_s - (began - start)
        error = run_child(args, name, batch, matmul, planned.profile, left)
        walls.append(time.perf_counter() - began)
        if error is not None:
            append_record(args.out, placeholder(name, sizing, batch, facts.get("jax"), error))
        last = load_records(args.out).records[-1]
        outcome = "ok" if last["status"] == "ok" else f"FAILED {' '.join(str(last.get('error')).split())[:300]}"
        print(f"{name}: {outcome} ({walls[-1]:.0f} s)", file=sys.stderr)


def kernel_refusal(name: str, platform: str) -> str | None:
    """Why this JAX on ``platform`` cannot run the variant's attention kernel (model.config.check_kernel_runs)."""
    from model.config import ConfigError, check_kernel_runs

    try:
        check_kernel_runs(Variant.parse(name).attention_kernel, platform)
    except ConfigError as error:
        return f"ConfigError: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    facts = run_probe(args)
    facts["budget_s"], facts["dry_run"] = args.budget_s, args.dry_run
    (args.out / DEVICE_FILE).write_text(json.dumps(facts, indent=1) + "\n")
    if "error" not in facts:
        run_plan(args, facts, start)
    lock = args.out / f".{RESULTS.removesuffix('.jsonl')}.lock"  # the store's, empty once every writer is done
    if lock.exists() and lock.stat().st_size == 0:
        lock.unlink()
    facts["elapsed_s"] = time.perf_counter() - start
    (args.out / DEVICE_FILE).write_text(json.dumps(facts, indent=1) + "\n")
    # the report in its own process, as every kind of run's (bench.report reads this package's plan: no cycle)
    subprocess.run([sys.executable, "-m", "bench", "report", str(args.out)], check=False)
    problems = plan.out_dir_problems(args.out)
    for problem in problems:
        print(f"--out {args.out}: {problem}", file=sys.stderr)
    print(f"bench.gpu: {facts['elapsed_s']:.0f} s; report in {args.out / 'REPORT.md'}", file=sys.stderr)
    return 1 if problems or "error" in facts else 0


if __name__ == "__main__":
    sys.exit(main())
