"""``python -m bench sweep``: every variant, each in its own process, in both JAX environments, then the report.

One process per variant keeps one variant's memory and compile caches from disturbing another's timing, and a
crash costs one record, not the sweep. ``--repeats R`` runs the whole job list R times in rotating order, so
slow drifts of a noisy machine spread over all variants instead of landing on a few. xmap exists only on
jax 0.4.30, and its ratios are only fair against pjit and shard_map measured there, so the xmap environment
also measures those (``--quick`` leaves them out and the report says so).

Each environment's CPU peak is measured by the sweep itself (``python -m bench calibrate``) before its first
variant, into RUN_DIR/peaks.jsonl, and the variants reuse it; it is measured again at the end, so the report can
say how far the peak drifted over the sweep.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.records.context import failed_record
from bench.records.runspec import flag_argv, run_argv
from bench.records.store import append_record, load_records
from model.config import Scope, Strategy, Variant, all_variants, get_preset

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Job:
    env: str  # "current" | "xmap"
    variant: Variant
    repeat: int


@dataclass(frozen=True)
class SweepPlan:
    preset: str
    steps: int
    warmup: int
    repeats: int
    xmap_baselines: bool  # measure pjit and shard_map in the xmap environment too


QUICK = SweepPlan("tiny", steps=3, warmup=1, repeats=1, xmap_baselines=False)
FULL = SweepPlan("cpu", steps=5, warmup=1, repeats=1, xmap_baselines=True)


def env_variants(env: str, plan: SweepPlan) -> list[Variant]:
    variants = all_variants()
    if env == "current":
        return [v for v in variants if v.strategy is not Strategy.XMAP]
    return [v for v in variants if v.strategy is Strategy.XMAP or plan.xmap_baselines]


def rotated(items: list, repeat: int, repeats: int) -> list:
    """Repeat r starts 1/R of the way further along the list."""
    shift = (repeat * math.ceil(len(items) / repeats)) % len(items) if items else 0
    return items[shift:] + items[:shift]


def jobs(plan: SweepPlan, envs: list[str]) -> list[Job]:
    base = [(env, v) for env in envs for v in env_variants(env, plan)]
    return [Job(env, v, r) for r in range(plan.repeats) for env, v in rotated(base, r, plan.repeats)]


def command(job: Job, plan: SweepPlan, python: str, out: Path, extra: list[str]) -> list[str]:
    """The job's ``bench run``; ``extra``: the sweep's ``--set`` overrides, as KEY=VALUE."""
    run = run_argv(
        variant=[job.variant.name], preset=plan.preset, overrides=extra, steps=plan.steps, warmup=plan.warmup,
        repeat=job.repeat, out=str(out), resume=True,
    )  # fmt: skip
    return [python, "-m", "bench", *run]


def calibrate_command(plan: SweepPlan, python: str, out: Path, extra: list[str], when: str) -> list[str]:
    """The environment's ``bench calibrate``: the peak for the preset's dtype and device count, into ``out``."""
    flags = flag_argv(preset=plan.preset, overrides=extra)
    return [python, "-m", "bench", "calibrate", *flags, f"--out={out}", f"--when={when}"]


def calibrate(plan: SweepPlan, pythons: dict[str, str], out: Path, extra: list[str], when: str, timeout_s: float):
    """One calibration per environment; a failed one is reported, and that environment's runs measure their own."""
    for env, python in pythons.items():
        argv = calibrate_command(plan, python, out, extra, when)
        try:
            result = subprocess.run(argv, cwd=REPO, timeout=timeout_s, stderr=subprocess.PIPE, text=True)
        except subprocess.TimeoutExpired:
            print(f"sweep: {env} peak calibration ({when}) killed after {timeout_s:.0f} s", file=sys.stderr)
            continue
        sys.stderr.write(result.stderr)
        if result.returncode != 0:
            print(f"sweep: {env} peak calibration ({when}) failed with code {result.returncode}", file=sys.stderr)


@functools.cache
def jax_version_of(python: str) -> str | None:
    """The JAX version an environment's python imports (asked once per python); None where it cannot say."""
    try:
        result = subprocess.run(
            [python, "-c", "import jax; print(jax.__version__)"], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _failed_record(job: Job, plan: SweepPlan, python: str, error: str) -> dict:
    """The placeholder for a child that died without its record: its variant as ``bench run`` would have run it."""
    preset = get_preset(plan.preset)
    return failed_record(job.variant, preset, preset.mesh, Scope.MODEL, job.repeat, jax_version_of(python), error)


def run_job(
    job: Job,
    plan: SweepPlan,
    python: str,
    out: Path,
    extra: list[str],
    timeout_s: float,
    command_override: list[str] | None = None,
) -> None:
    """One variant in its own process. If the process dies without writing its record, record that."""
    before = len(load_records(out).records)
    argv = command_override or command(job, plan, python, out, extra)
    try:
        result = subprocess.run(argv, cwd=REPO, timeout=timeout_s, stderr=subprocess.PIPE, text=True)
    except subprocess.TimeoutExpired:
        error = f"process killed after the {timeout_s:.0f} s per-variant limit"
    else:
        sys.stderr.write(result.stderr)
        if result.returncode == 0:
            return  # recorded, or skipped by --resume
        error = f"process exited with code {result.returncode}: {result.stderr.strip()[-500:]}"
    if len(load_records(out).records) == before:
        append_record(out, _failed_record(job, plan, python, error))


def sweep(plan: SweepPlan, pythons: dict[str, str], out: Path, extra: list[str], timeout_s: float) -> None:
    planned = jobs(plan, list(pythons))
    print(f"sweep: {len(planned)} runs of preset {plan.preset} into {out}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    calibrate(plan, pythons, out, extra, "start", timeout_s)
    for i, job in enumerate(planned, 1):
        print(f"[{i}/{len(planned)}] {job.env}: {job.variant.name} (repeat {job.repeat})", file=sys.stderr)
        run_job(job, plan, pythons[job.env], out, extra, timeout_s)
    calibrate(plan, pythons, out, extra, "end", timeout_s)


def plan_from_args(
    quick: bool, preset: str | None, steps: int | None, warmup: int | None, repeats: int | None
) -> SweepPlan:
    plan = QUICK if quick else FULL
    given = dict(preset=preset, steps=steps, warmup=warmup, repeats=repeats)
    return dataclasses.replace(plan, **{k: v for k, v in given.items() if v is not None})
