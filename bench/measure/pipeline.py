"""``python -m bench run``: measure variants and append one record each to ``RUN_DIR/results.jsonl``.

bench.measure.prepare builds, compiles and analyses a variant (bench.compile.step); this module times it, adds the
peak FLOP/s and the rates that follow from the step time, and builds the record (fields in bench.records.schema).
The run's CPU peak is found once, before the first variant's first timed step (bench.measure.peaks); a refused peak
fails every record. Each variant's MFU is against a peak measured again in this process just before its own timed
steps (``peak_run_flops_per_s_per_device``); the run directory's start and end peaks are the drift check.

A variant that fails (a compile error, out of memory, a platform's refusal: bench.compile.failure) is recorded
with ``status: failed`` and its error, and the next one still runs; any other exception is a bug in the suite and
stops the run. ``--resume`` skips variants already recorded ``ok`` in the run directory.
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.analysis.hlo import CollectiveKind
from bench.compile.failure import variant_failures
from bench.measure import session as distributed
from bench.measure.peaks import peak_flops_for_rates, per_run_peak_fields, run_peak_fields
from bench.records.context import base_record, environment, failed_record
from bench.records.schema import Profile, Status, comm_key, section_fields
from bench.records.store import append_record, finished_keys, record_key
from model.config import Mesh, Preset, Variant
from model.program import Scope


def step_stats(times_s: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(times_s, n=4) if len(times_s) > 1 else [times_s[0]] * 3
    return {
        "step_median_s": statistics.median(times_s),
        "step_min_s": min(times_s),
        "step_max_s": max(times_s),
        "step_iqr_s": quartiles[2] - quartiles[0],
        "steps_timed": len(times_s),
    }


def time_steps(step: Any, warmup: int, steps: int, progress: Any = None) -> list[float]:
    """W warm-up steps, then N timed steps; each step waits for all of its outputs (Prepared.step does)."""
    for _ in range(warmup):
        step()
        if progress:
            progress()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if progress:
            progress()
    return times


OVERHEAD_PAIRS = 5  # bare and harnessed batches interleaved, so that drift of a shared machine lands on both


def bare_loop_step_s(prepared: Any, steps: int) -> float:
    """The same compiled step in a plain loop, synchronising once at the end: the harness-overhead reference."""
    import jax

    state, batch = prepared.state, prepared.batch
    start = time.perf_counter()
    for _ in range(steps):
        *state, loss = prepared.compiled(*state, batch)
    jax.block_until_ready((state, loss))
    elapsed = (time.perf_counter() - start) / steps
    prepared.state = tuple(state)
    return elapsed


def harnessed_step_s(prepared: Any, steps: int) -> float:
    """Seconds per step of ``time_steps`` as a run times it (each step synchronised and stamped), wall clock."""
    start = time.perf_counter()
    time_steps(prepared.step, 0, steps)
    return (time.perf_counter() - start) / steps


def overhead_fields(prepared: Any, steps: int, pairs: int = OVERHEAD_PAIRS) -> dict[str, Any]:
    """The harness overhead, told apart from noise: ``pairs`` pairs of a bare batch and a harnessed batch of
    ``steps`` steps each, alternating which goes first (ABBA) so a drift within a pair does not favour either;
    the overhead is the median of the paired ratios harnessed / bare - 1, with their min and max as its spread."""
    bares, ratios = [], []
    for i in range(pairs):
        if i % 2 == 0:
            bare, harnessed = bare_loop_step_s(prepared, steps), harnessed_step_s(prepared, steps)
        else:
            harnessed, bare = harnessed_step_s(prepared, steps), bare_loop_step_s(prepared, steps)
        bares.append(bare)
        ratios.append(harnessed / bare - 1.0)
    return {
        "bare_loop_step_s": statistics.median(bares),
        "harness_overhead_frac": statistics.median(ratios),
        "harness_overhead_min_frac": min(ratios),
        "harness_overhead_max_frac": max(ratios),
        "harness_overhead_pairs": pairs,
    }


def measure(
    variant: Variant,
    preset: Preset,
    mesh: Mesh,
    scope: Scope,
    steps: int,
    warmup: int,
    repeat: int = 0,
    overhead: bool = False,
    progress: Any = None,
    trace_dir: Path | None = None,
    peak: dict[str, Any] | None = None,
    gemm_floor: bool = False,
) -> dict[str, Any]:
    """One complete record; a variant's failures (bench.compile.failure) are caught and recorded, anything else
    (a bug in the suite) is raised.

    ``peak``: the run's Peaks fields (``run_variants`` finds them once per run); None: calibrate now, first.
    ``gemm_floor``: also time every dot of the step alone, after the timed steps (bench.measure.gemm_floor).
    """
    record = base_record(variant, preset, mesh, scope, repeat)
    record["warmup_steps"] = warmup
    try:
        from bench.measure.prepare import prepare

        record.update(environment())
        record.update(
            peak
            if peak is not None
            else run_peak_fields(None, preset.model.compute_dtype.value, mesh.devices, use_cache=False)
        )
        prepared = prepare(preset, variant, mesh, scope)
        record["compile_s"] = prepared.compile_s
        record.update(prepared.analysis)
        record.update(per_run_peak_fields(preset.model.compute_dtype.value, mesh.devices))  # just before timing
        times = time_steps(prepared.step, warmup, steps, progress)
        record.update(step_stats(times))
        record["loss"] = prepared.loss
        median = record["step_median_s"]
        record["tokens_per_s"] = preset.tokens_per_step / median  # global tokens of every micro-batch, counted once
        record["tokens_per_s_per_device"] = record["tokens_per_s"] / mesh.devices
        record.update(rate_fields(record, median, mesh.devices))
        if overhead:
            record.update(overhead_fields(prepared, steps))
        if trace_dir is not None:
            record.update(profile_fields(prepared, trace_dir / variant.name))
        if gemm_floor:
            record.update(floor_fields(prepared, record))
        record["status"] = Status.OK.value
    except variant_failures() as error:  # recorded, and the sweep goes on; a bug in the suite stops the run
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc(limit=8)
    return record


def rate_fields(record: dict[str, Any], step_s: float, devices: int) -> dict[str, Any]:
    """FLOP/s from the per-step counts (formulas in bench.analysis.flops) and, against the peak (the per-run one on
    CPU: bench.measure.peaks.peak_flops_for_rates), MFU and HFU."""
    from bench.analysis.flops import hfu, mfu

    xla = record.get("xla_flops_per_step_total")
    rates = {
        "flops_6n_per_s_total": record["flops_6n_per_step_total"] / step_s,
        "model_flops_per_s_total": record["model_flops_per_step_total"] / step_s,
        "hardware_flops_per_s_total": record["hardware_flops_per_step_total"] / step_s,
        "xla_flops_per_s_total": xla / step_s if xla is not None else None,
    }
    peak, source = peak_flops_for_rates(record)
    rates["mfu"] = mfu(rates["model_flops_per_s_total"], devices, peak, peak_source=source)
    rates["mfu_6n"] = mfu(rates["flops_6n_per_s_total"], devices, peak, peak_source=source)
    rates["hfu"] = hfu(rates["hardware_flops_per_s_total"], devices, peak, peak_source=source)
    return rates


PROFILE_STEPS = 3
PROFILE_TOP_OPS = 10


def profile_fields(prepared: Any, log_dir: Path) -> dict[str, Any]:
    """An XProf trace of a few more steps, summarised by the profiler plugin's own converters."""
    from bench.analysis.profile import ProfileTool
    from bench.compile.step import mesh_ids
    from bench.measure.profile import (
        capture_trace,
        component_fields,
        summarise_ops,
        tensorboard_command,
        trace_coverage,
        trace_op_rows,
    )

    trace = capture_trace(prepared.step, (), PROFILE_STEPS, log_dir)
    fields = section_fields(Profile, profile_command=tensorboard_command(log_dir), profile_trace_path=str(trace))
    try:
        rows, tool = trace_op_rows(trace)
        fields.update(summarise_ops(rows, PROFILE_TOP_OPS, tool, trace).as_record_fields())
        text, ids = prepared.compiled.as_text(), mesh_ids(prepared.driver)
        fields.update(component_fields(rows, text, ids, PROFILE_STEPS, prepared.mesh.devices, tool))
        if tool is ProfileTool.TRACE_VIEWER:  # hlo_stats (GPU, TPU) has per-op totals, not a timeline
            fields.update(section_fields(Profile, profile_op_coverage_frac=trace_coverage(trace)))
    except Exception as error:  # the trace is kept; only its summary is missing
        fields.update(section_fields(Profile, profile_error=f"{type(error).__name__}: {error}"))
    return fields


def floor_fields(prepared: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The step's GEMM floor, and the two shares its HFU splits into: the floor's rate over the devices' peak,
    and the floor over the measured step."""
    import jax

    from bench.measure.gemm_floor import gemm_floor_fields

    local_devices = prepared.mesh.devices // jax.process_count()  # the devices whose dots this process runs
    text, (peak, _) = prepared.compiled.as_text(), peak_flops_for_rates(record)
    fields = gemm_floor_fields(text, local_devices, jax.default_backend(), peak)
    fields["gemm_floor_step_frac"] = fields["gemm_floor_s_per_step"] / record["step_median_s"]
    return fields


def run_variants(
    variants: list[Variant],
    preset: Preset,
    mesh: Mesh,
    scope: Scope,
    steps: int,
    warmup: int,
    out: Path,
    resume: bool,
    repeat: int = 0,
    overhead: bool = False,
    profile: bool = False,
    peak_cache: bool = False,
    gemm_floor: bool = False,
) -> list[dict[str, Any]]:
    """``peak_cache``: take the CPU peak from the cross-run cache instead of the run directory's (or a new one);
    ``gemm_floor``: each record also times its step's dots alone (``measure``)."""
    import jax

    done = finished_keys(out) if resume else set()
    records = []
    peak: dict[str, Any] | None = None
    for variant in variants:
        placeholder = functools.partial(failed_record, variant, preset, mesh, scope, repeat, jax.__version__)
        if record_key(placeholder(None)) in done:  # the key of the head this run would write
            print(f"skip {variant.name} (repeat {repeat}): already recorded ok in {out}", file=sys.stderr)
            continue
        if peak is None:  # before the first timed step; process 0 writes the run directory's peak file
            peak = _run_peak(out, preset, mesh, peak_cache)
        trace_dir = out / "traces" if profile else None
        distributed.begin_variant(variant.name, placeholder, out)
        if "error" in peak:  # a refused peak fails the record: nothing is measured against it
            record = {**base_record(variant, preset, mesh, scope, repeat), **environment(), **peak}
        else:
            with distributed.own_trace_dir(trace_dir) as this_process_trace_dir:
                run = functools.partial(
                    measure, variant, preset, mesh, scope, steps, warmup, repeat, overhead,
                    trace_dir=this_process_trace_dir, peak=peak, gemm_floor=gemm_floor,
                )  # fmt: skip
                record = _measure_with_progress(variant.name, warmup + steps, run)
        record = distributed.agree(record)  # ok only if ok on every process; carries process_count
        if distributed.is_writer():  # process 0 writes for all
            append_record(out, record)
            _print_line(record)
        records.append(record)
    return records


def _run_peak(out: Path, preset: Preset, mesh: Mesh, peak_cache: bool) -> dict[str, Any]:
    """The run's Peaks fields, or ``{"error": ...}`` where the calibration was refused or failed."""
    try:
        dtype = preset.model.compute_dtype.value
        return run_peak_fields(out, dtype, mesh.devices, peak_cache, write=distributed.is_writer())
    except Exception as error:  # recorded in every record of the run
        return {"error": f"{type(error).__name__}: {error}"}


def _measure_with_progress(name: str, steps: int, run: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """``run(progress=...)`` (``measure`` with all else bound), with a progress display of its ``steps``."""
    from rich.progress import Progress

    if not distributed.is_writer():  # one progress display, process 0's; the watchdog still hears every step
        return run(progress=distributed.step_done)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"{name}: compiling and analysing", total=steps)

        def advance() -> None:
            progress.update(task, advance=1, description=f"{name}: warm-up and timed steps")
            distributed.step_done()

        return run(progress=advance)


MP_ALLREDUCE_BYTES = comm_key("mp", CollectiveKind.ALL_REDUCE, "bytes")


def _print_line(record: dict[str, Any]) -> None:
    if record["status"] != Status.OK.value:
        print(f"{record['variant']}: FAILED {record['error']}", file=sys.stderr)
        return

    def show(key: str, fmt: str, scale: float = 1.0) -> str:
        value = record.get(key)
        return format(value * scale, fmt) if value is not None else "n/a"

    print(
        f"{record['variant']}: {show('tokens_per_s', '.0f')} tokens/s, step {show('step_median_s', '.1f', 1e3)} ms, "
        f"MFU {show('mfu', '.1%')}, HFU {show('hfu', '.1%')}, mp all-reduce {show(MP_ALLREDUCE_BYTES, '.0f')} B",
        file=sys.stderr,
    )
