"""``python -m bench sweep``: every variant, each in its own process, in both JAX environments, then the report.

One process per variant keeps one variant's memory and compile caches from disturbing another's timing, and a
crash costs one record, not the sweep. ``--repeats R`` runs the whole job list R times in rotating order, so
slow drifts of a noisy machine spread over all variants instead of landing on a few. xmap exists only on
jax 0.4.30, and its ratios are only fair against pjit and shard_map measured there, so the xmap environment
also measures those (``--quick`` leaves them out and the report says so).

Each environment's CPU peak is measured by the sweep itself (``python -m bench calibrate``) before its first
variant, into RUN_DIR/peaks.jsonl, and the variants reuse it; it is measured again at the end, so the report can
say how far the peak drifted over the sweep.

After the reference variants, the kernel part compares each attention kernel of the plan against ``reference`` on
two variants: GPT-J's configuration (parallel-h256-xmap-full, in the xmap environment) and the sweep's fastest
reference variant (the highest median tokens/s of any variant in any environment, from the sweep's own records),
each in one environment: the first that has it, current JAX before jax 0.4.30 (where the xla kernel does not exist),
once whatever ``--repeats``. Per variant the runs are the kernels with one fresh reference run in their middle (k1,
reference, k2), so each kernel is paired with a reference measured next to it, not with the sweep's record of the
variant from up to twenty minutes earlier. FULL makes 5 runs; a reference on each side of every kernel would make
them 7, and the fastest variant in both environments more, past the time the kernel part may add to the main job (a
cpu-preset run took about 20 s at batch 8 on the 2-core machine it was sized on). The kernel part is a run directory
of its own, RUN_DIR/kernels/ (KERNEL_DIR), sharing the sweep's start peaks: its reference reruns are not repeats of
the 24-variant sweep, so the sweep's noise, effects and ranking stay its own. Which kernels an environment refuses
is asked once per environment (one process, no compile); each refusal is recorded (kind ``refused``, failed, with
the message ``bench run`` would refuse it with), not run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compile.failure import EXIT_SUITE_FAULT
from bench.projection.throughput import GPTJ_VARIANT
from bench.records.context import failed_record
from bench.records.peakfile import append_peak, read_peaks
from bench.records.runspec import flag_argv, run_argv
from bench.records.schema import KERNEL_DIR, RecordKind, Status
from bench.records.store import append_record, load_records, record_key
from kernels.choice import AttentionKernel
from model.config import Preset, Scope, Strategy, Variant, all_variants, apply_overrides, get_preset

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Job:
    env: str  # "current" | "xmap"
    variant: Variant
    repeat: int
    refusal: str | None = None  # why this environment cannot run the variant's kernel: recorded, not run


NON_REFERENCE_KERNELS = tuple(k for k in AttentionKernel if k is not AttentionKernel.reference)


@dataclass(frozen=True)
class SweepPlan:
    preset: str
    steps: int
    warmup: int
    repeats: int
    xmap_baselines: bool  # measure pjit and shard_map in the xmap environment too
    # compared against the reference in the kernel part (each run, or recorded as refused where it cannot run)
    kernels: tuple[AttentionKernel, ...] = NON_REFERENCE_KERNELS
    # (environment, variant) runs that also capture an XProf trace after their timed steps (``bench run --profile``:
    # the record gains the measured time by block component, the report's profile section)
    profiled: tuple[tuple[str, str], ...] = ()
    # the variants measured, by name (empty: all 24)
    variants: tuple[str, ...] = ()


# A fast look: GPT-J's configuration (its xmap original, and its shard_map twin in current JAX) and the variants one
# design choice away from it, each of which the report pairs with it: the serial block, 128-wide heads, no remat, pjit.
# The sweep's cost is a process and a compile per variant, so the look is these six, not the 24.
QUICK_VARIANTS = (
    "parallel-h256-xmap-full",
    "parallel-h256-shard_map-full",
    "serial-h256-shard_map-full",
    "parallel-h128-shard_map-full",
    "parallel-h256-shard_map-none",
    "parallel-h256-pjit-full",
)


# --quick leaves the kernel comparison out: each run is a process and a compile, and its four runs were a third of the
# look's time (reports/example/NOTES.md); `nox` (the main job) makes the comparison.
QUICK = SweepPlan("tiny", steps=3, warmup=1, repeats=1, xmap_baselines=False, kernels=(), variants=QUICK_VARIANTS)
# 3 timed steps (and one warm-up) keep the main job within 20 minutes on the slowest 2-core machine seen (2026-12-01:
# 5 steps took 23 min there); the report's noise is the steps' IQR over median, which 3 steps still give.
# The profiled run: GPT-J's configuration but for the strategy, in current JAX (jax 0.4.30's CPU runtime writes no
# per-op events, bench.measure.profile); shard_map has xmap's collectives. The trace follows the timed steps.
FULL = SweepPlan(
    "cpu", steps=3, warmup=1, repeats=1, xmap_baselines=True, profiled=(("current", "parallel-h256-shard_map-full"),)
)


def env_variants(env: str, plan: SweepPlan) -> list[Variant]:
    variants = [v for v in all_variants() if not plan.variants or v.name in plan.variants]
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
    profile = (job.env, job.variant.name) in plan.profiled and job.repeat == 0
    run = run_argv(
        variant=[job.variant.name], preset=plan.preset, overrides=extra, steps=plan.steps, warmup=plan.warmup,
        repeat=job.repeat, out=str(out), resume=True, profile=profile,
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


def _sweep_preset(plan: SweepPlan, extra: list[str]) -> Preset:
    """The preset the sweep's runs measure: the plan's, with the sweep's ``--set`` overrides."""
    return apply_overrides(get_preset(plan.preset), extra)


def _failed_record(job: Job, plan: SweepPlan, python: str, error: str, extra: Sequence[str] = ()) -> dict:
    """The placeholder for a child that died without its record: its variant as ``bench run`` would have run it."""
    preset = _sweep_preset(plan, list(extra))
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
        if result.returncode == EXIT_SUITE_FAULT:  # not the variant's failure: the sweep stops with it
            raise RuntimeError(f"{job.variant.name} ({job.env}) stopped on a bug in the suite; its traceback is above")
        error = f"process exited with code {result.returncode}: {result.stderr.strip()[-500:]}"
    if len(load_records(out).records) == before:
        append_record(out, _failed_record(job, plan, python, error, extra))


def sweep(plan: SweepPlan, pythons: dict[str, str], out: Path, extra: list[str], timeout_s: float) -> None:
    planned = jobs(plan, list(pythons))
    print(f"sweep: {len(planned)} runs of preset {plan.preset} into {out}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    calibrate(plan, pythons, out, extra, "start", timeout_s)
    for i, job in enumerate(planned, 1):
        print(f"[{i}/{len(planned)}] {job.env}: {job.variant.name} (repeat {job.repeat})", file=sys.stderr)
        run_job(job, plan, pythons[job.env], out, extra, timeout_s)
    kernel_part(plan, pythons, out, extra, timeout_s)
    calibrate(plan, pythons, out, extra, "end", timeout_s)


def plan_from_args(
    quick: bool, preset: str | None, steps: int | None, warmup: int | None, repeats: int | None
) -> SweepPlan:
    plan = QUICK if quick else FULL
    given = dict(preset=preset, steps=steps, warmup=warmup, repeats=repeats)
    return dataclasses.replace(plan, **{k: v for k, v in given.items() if v is not None})


# ---------------------------------------------------------------------------------------------------- kernel part


def fastest_reference(records: Sequence[Mapping[str, Any]], plan: SweepPlan) -> Variant | None:
    """The sweep's fastest reference variant: the highest median tokens/s over the plan's repeats of one variant in
    one environment, among the ok measured records of the plan's preset (ties: the first name). None where no
    reference variant was timed. A resumed sweep reads the same records, so it chooses the same variant."""
    timed: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if (
            r.get("kind") == RecordKind.MEASURED.value
            and r.get("status") == Status.OK.value
            and r.get("preset") == plan.preset
            and r.get("attention_kernel", AttentionKernel.reference.value) == AttentionKernel.reference.value
            and int(r.get("repeat", 0)) < plan.repeats
            and isinstance(r.get("tokens_per_s"), int | float)
        ):
            timed.setdefault((r["variant"], str(r.get("jax"))), []).append(float(r["tokens_per_s"]))
    if not timed:
        return None
    best = min(timed, key=lambda row: (-statistics.median(timed[row]), row))
    return Variant.parse(best[0])


def kernel_variants(fastest: Variant | None) -> list[Variant]:
    """The variants the kernels are compared on: GPT-J's configuration, then the sweep's fastest (if another)."""
    gptj = Variant.parse(GPTJ_VARIANT)
    return [gptj] + ([fastest] if fastest is not None and fastest != gptj else [])


def kernel_jobs(
    plan: SweepPlan,
    envs: Sequence[str],
    fastest: Variant | None,
    refusals: Mapping[str, Mapping[AttentionKernel, str | None]],
) -> list[Job]:
    """Per variant (``kernel_variants``) and environment that has it: the plan's kernels that run there, with one
    reference run in their middle, then the refused ones (``refusals[env][kernel]``: the reason, or None where it
    runs; an environment or kernel missing from it is tried, and ``bench run`` says why it fails)."""
    planned = []
    for variant in kernel_variants(fastest):
        having = [env for env in envs if variant in env_variants(env, plan)]
        for env in having[:1]:  # one environment per variant: the first of ``envs`` (current JAX) that has it
            reasons = {k: refusals.get(env, {}).get(k) for k in plan.kernels}
            runs = [Job(env, variant.replace(attention_kernel=k), 0) for k, why in reasons.items() if why is None]
            if runs:
                half = len(runs) // 2
                planned += [*runs[:half], Job(env, variant, 0), *runs[half:]]
            planned += [Job(env, variant.replace(attention_kernel=k), 0, why) for k, why in reasons.items() if why]
    return planned


def print_kernel_support() -> None:
    """In the environment's own process: its JAX version and each kernel's refusal on its platform, as one JSON
    line (``kernel_support`` reads it). Imports JAX; compiles nothing."""
    import jax

    from kernels.attention import check_kernel_supported, dot_product_attention_has_implementation

    platform, has_dpa = jax.default_backend(), dot_product_attention_has_implementation()
    refusals = {k.value: check_kernel_supported(k, platform, has_dpa) for k in AttentionKernel}
    print(json.dumps({"jax": jax.__version__, "platform": platform, "refusals": refusals}))


def kernel_support(python: str, timeout_s: float) -> tuple[str | None, dict[AttentionKernel, str | None]]:
    """An environment's JAX version and kernel refusals (``print_kernel_support``, one process); (None, {}) where
    the process fails, so its kernels are tried and their own runs record why."""
    code = "from bench.launch.sweep import print_kernel_support; print_kernel_support()"
    try:
        result = subprocess.run([python, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, IndexError) as error:
        print(f"sweep: {python} could not say which kernels it runs ({error}); each is tried", file=sys.stderr)
        return None, {}
    return answer["jax"], {AttentionKernel(k): why for k, why in answer["refusals"].items()}


def refused_record(job: Job, preset: Preset, jax_version: str | None) -> dict[str, Any]:
    """A refused kernel's record: its variant as ``bench run`` would have run it, failed with the refusal."""
    return failed_record(
        job.variant, preset, preset.mesh, Scope.MODEL, job.repeat, jax_version, job.refusal, RecordKind.REFUSED
    )


def share_start_peaks(out: Path, kernel_dir: Path) -> None:
    """Give the kernel part the sweep's start peaks (their records then point to the same calibration); a resumed
    kernel part keeps the ones it has."""
    if not read_peaks(kernel_dir):
        for entry in read_peaks(out):
            if entry.when == "start":
                append_peak(kernel_dir, entry)


def record_refusals(planned: Sequence[Job], preset: Preset, jax_of: Mapping[str, str | None], kernel_dir: Path):
    """One failed record per refused job (``jax_of``: each environment's JAX version); a resumed sweep adds none
    that the kernel directory already holds."""
    recorded = {record_key(r) for r in load_records(kernel_dir).records if r.get("kind") == RecordKind.REFUSED.value}
    for job in planned:
        if job.refusal is not None:
            print(f"sweep: kernels: {job.env}: {job.variant.name} refused: {job.refusal}", file=sys.stderr)
            record = refused_record(job, preset, jax_of[job.env])
            if record_key(record) not in recorded:
                append_record(kernel_dir, record)


def kernel_part(plan: SweepPlan, pythons: Mapping[str, str], out: Path, extra: list[str], timeout_s: float) -> None:
    """The kernels against the reference (module docstring), into RUN_DIR/kernels/; resumes like the sweep."""
    if not plan.kernels:
        return
    kernel_dir = out / KERNEL_DIR
    kernel_dir.mkdir(parents=True, exist_ok=True)
    support = {env: kernel_support(python, timeout_s) for env, python in pythons.items()}
    fastest = fastest_reference(load_records(out).records, plan)
    planned = kernel_jobs(plan, list(pythons), fastest, {env: refusals for env, (_, refusals) in support.items()})
    runs = [job for job in planned if job.refusal is None]
    gptj = "" if "xmap" in pythons else f" (no xmap environment, so not GPT-J's {GPTJ_VARIANT})"
    print(
        f"sweep: kernels: {len(runs)} runs into {kernel_dir}{gptj}; the sweep's fastest reference variant: "
        f"{fastest.name if fastest else 'none was timed'}",
        file=sys.stderr,
    )
    share_start_peaks(out, kernel_dir)
    record_refusals(planned, _sweep_preset(plan, extra), {env: jax for env, (jax, _) in support.items()}, kernel_dir)
    for i, job in enumerate(runs, 1):
        print(f"[kernels {i}/{len(runs)}] {job.env}: {job.variant.name}", file=sys.stderr)
        run_job(job, plan, pythons[job.env], kernel_dir, extra, timeout_s)
