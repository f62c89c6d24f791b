"""``python -m bench``: list variants, print logits from a checkpoint, run and report benchmarks.

JAX is imported only after the arguments are checked and the simulated CPU device count is set.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from bench.cli.spec import (
    check_counts,
    check_writable,
    parse_run,
    resolve_preset,
    resolve_run,
    resolve_variants,
)
from bench.compile.failure import EXIT_SUITE_FAULT
from bench.launch import local
from bench.measure import session as distributed
from bench.measure.devices import request_cpu_devices
from bench.records.runspec import add_run_flags
from bench.records.store import RecordNotSaved
from bench.tpu_aot.env import TopologyError
from model.config import (
    ConfigError,
    Strategy,
    all_variants,
    apply_overrides,
    check_kernel_runs,
    get_preset,
    validate_run,
)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # 128 + SIGTERM: what batch schedulers and containers send before they kill


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that both stop a run the same way."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a measurement; the message says where the records are and how to finish."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


class SuiteFault(Exception):
    """An exception that is no variant's failure (bench.compile.failure) stopped a run: a bug in the suite."""


@contextlib.contextmanager
def _interruptible(out: Path, resumable: bool = True) -> Iterator[None]:
    finish = f"; rerun with --resume --out {out} to finish" if resumable else ""
    try:
        yield
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        how, status = ("terminated (SIGTERM)", EXIT_TERMINATED) if terminated else ("interrupted", EXIT_INTERRUPTED)
        raise Interrupted(f"{how}; the records written so far are intact in {out}{finish}", status) from None
    except (ConfigError, TopologyError, RecordNotSaved):
        raise
    except Exception as error:
        raise SuiteFault(
            f"the run stopped on a bug in the suite, not a variant's failure (traceback above); the records written "
            f"so far are intact in {out}{finish} once it is fixed"
        ) from error


def _add_preset_args(parser: argparse.ArgumentParser) -> None:
    add_run_flags(parser, only=("preset", "overrides"))


def cmd_list(args: argparse.Namespace) -> int:
    for variant in all_variants():
        print(variant.name)
    return 0


def _parse_tokens(text: str, vocab: int) -> list[int]:
    try:
        tokens = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--tokens expects comma-separated integers, e.g. 1,2,3; got {text!r}") from None
    bad = [t for t in tokens if not 0 <= t < vocab]
    if not tokens or bad:
        raise ConfigError(f"--tokens must be 1 or more ids in [0, {vocab}); bad: {bad or 'none given'}")
    return tokens


def cmd_logits(args: argparse.Namespace) -> int:
    preset = apply_overrides(get_preset(args.preset), args.overrides)
    cfg = preset.model
    cfg.validate()
    tokens = _parse_tokens(args.tokens, cfg.vocab)
    if len(tokens) > cfg.context:
        raise ConfigError(f"{len(tokens)} tokens exceed the context {cfg.context}")
    request_cpu_devices(1)
    import jax

    from model.logits import logits_from_checkpoint

    check_kernel_runs(cfg.attention_kernel, jax.default_backend())

    logits = logits_from_checkpoint(cfg, Path(args.weights), tokens)
    print(json.dumps({"preset": preset.name, "tokens": tokens, "logits": logits.tolist()}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = resolve_run(args)
    if spec.left_out:
        print(f"run: {spec.left_out}", file=sys.stderr)
    if args.distributed:  # jax.distributed starts before JAX touches a device; each process takes its share
        out = distributed.start(args, spec.mesh, spec.variants)
    else:
        request_cpu_devices(spec.mesh.devices)
        out = spec.out
    import jax

    from model import compat

    if any(v.strategy is Strategy.XMAP for v in spec.variants) and not compat.has_xmap():
        raise ConfigError(compat.HAS_XMAP_MESSAGE.format(version=jax.__version__))
    for variant in spec.variants:  # every configuration error surfaces before the first compile
        validate_run(spec.preset, variant, spec.mesh, len(jax.devices()), spec.scope, jax.default_backend())
    from bench.measure.pipeline import run_variants
    from bench.records.context import new_run_dir

    out = out or new_run_dir()
    if distributed.is_writer():
        print(f"run directory: {out}", file=sys.stderr)
    with _interruptible(out, resumable=not args.distributed):  # --resume is refused with --distributed
        records = run_variants(
            list(spec.variants),
            spec.preset,
            spec.mesh,
            spec.scope,
            spec.steps,
            spec.warmup,
            out,
            args.resume,
            args.repeat,
            args.overhead,
            args.profile,
            args.peak_cache,
            args.gemm_floor,
        )
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cmd_decode(args: argparse.Namespace) -> int:
    from bench.cli.decode import resolve_decode

    spec = resolve_decode(args)
    if spec.left_out:
        print(f"decode: {spec.left_out}", file=sys.stderr)
    if args.topology:
        return _decode_tpu(args, spec)
    request_cpu_devices(max(spec.mesh.devices, 1))
    import jax

    from model import compat

    if any(v.strategy is Strategy.XMAP for v in spec.variants) and not compat.has_xmap():
        raise ConfigError(compat.HAS_XMAP_MESSAGE.format(version=jax.__version__))
    for variant in spec.variants:  # every configuration error surfaces before the first compile
        validate_run(spec.preset, variant, spec.mesh_of(variant), len(jax.devices()), platform=jax.default_backend())
    from bench.measure.decode import build_decoders, check_fits, check_spec, run_decode

    check_spec(spec)
    decoders = build_decoders(spec)
    check_fits(spec, decoders)
    from bench.records.context import new_run_dir

    out = spec.out or new_run_dir()
    print(f"run directory: {out}", file=sys.stderr)
    with _interruptible(out):
        records = run_decode(spec, out, decoders)
    _decode_report(out)
    return 0 if all(r["status"] == "ok" for r in records) else 1


def _decode_report(out: Path) -> None:
    from bench.report.sections.decode import write_decode_report

    path = write_decode_report(out)
    if path is not None:
        print(f"report: {path}", file=sys.stderr)


def _decode_tpu(args: argparse.Namespace, spec: Any) -> int:
    """``bench decode --topology``: compile-only decode steps for a TPU slice, projected (bench.tpu_aot.decode)."""
    from bench.tpu_aot.compile import check_mesh
    from bench.tpu_aot.env import apply_tpu_compile_env, libtpu_available, parse_topology

    devices = parse_topology(args.topology).devices
    check_mesh(spec.mesh, devices, args.topology)
    for variant in spec.variants:
        validate_run(spec.preset, variant, spec.mesh_of(variant), devices)
    if not libtpu_available():
        raise ConfigError(f"libtpu (the TPU compiler) is not installed in this environment ({sys.executable})")
    apply_tpu_compile_env(args.topology)
    from bench.measure.decode import check_spec

    check_spec(spec)
    from bench.records.context import new_run_dir
    from bench.records.store import cache_root
    from bench.tpu_aot.cache import cache_from_flag
    from bench.tpu_aot.decode import run_decode_tpu
    from bench.tpu_aot.env import topology_devices

    out = spec.out or new_run_dir()
    cache = cache_from_flag(args.compile_cache, cache_root() / "tpu-aot")
    print(f"run directory: {out}; compile cache: {cache.directory or 'off'}", file=sys.stderr)
    with _interruptible(out):
        records = run_decode_tpu(spec, args.topology, topology_devices(args.topology), out, cache)
    _decode_report(out)
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure the CPU peak for the preset's dtype and device count into RUN_DIR/peaks.jsonl (the sweep's start
    and end calibrations, one per JAX environment)."""
    from model.config import Mesh

    preset = resolve_preset(args.preset, args.overrides)
    mesh = Mesh.parse(args.mesh) if args.mesh else preset.mesh
    out = Path(args.out)
    check_writable(out)
    request_cpu_devices(mesh.devices)
    import jax

    from bench.measure.peaks import measure_entry, start_entry
    from bench.records.peakfile import append_peak

    if jax.devices()[0].platform != "cpu":
        print(f"calibrate: {jax.devices()[0].device_kind} takes its peak from the hardware table", file=sys.stderr)
        return 0
    dtype = preset.model.compute_dtype.value
    if args.when == "start":  # a resumed sweep keeps the peak its earlier records were measured against
        entry = start_entry(out, dtype, mesh.devices)
    else:
        entry = measure_entry(dtype, mesh.devices, args.when)
        append_peak(out, entry)
    print(
        f"calibrate ({args.when}, jax {entry.jax}): {entry.flops_per_device / 1e9:.1f} GFLOP/s per device over "
        f"{entry.devices} devices, load {entry.load_avg_before:.2f} -> {entry.load_avg_after:.2f}; "
        f"theoretical {_gflops(entry.theoretical_flops_per_device)}",
        file=sys.stderr,
    )
    return 0


def _gflops(flops: float | None) -> str:
    return "unknown" if flops is None else f"{flops / 1e9:.1f} GFLOP/s per device"


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.launch.sweep import plan_from_args, sweep
    from bench.records.context import new_run_dir

    plan = plan_from_args(args.quick, args.preset, args.steps, args.warmup, args.repeats)
    resolve_preset(plan.preset, args.overrides)  # every process would refuse them; refuse them once, now
    if plan.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {plan.repeats}")
    check_counts(plan.steps, plan.warmup)
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR: the run directory to complete")
    if args.variant_timeout <= 0:
        raise ConfigError(f"--variant-timeout must be positive, got {args.variant_timeout}")
    if args.out:
        check_writable(Path(args.out))
    pythons = {"current": args.python_current or sys.executable}
    if args.python_xmap:
        pythons["xmap"] = args.python_xmap
    else:
        print("sweep: no --python-xmap given, so xmap variants are not measured", file=sys.stderr)
    out = Path(args.out) if args.out else new_run_dir()
    with _interruptible(out):  # --resume skips what is recorded, then writes the report
        sweep(plan, pythons, out, list(args.overrides), args.variant_timeout)
        if not args.no_report:
            return cmd_report(argparse.Namespace(run_dir=str(out), compare=None, aot=args.aot, no_plots=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report.write import write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory at {run_dir}")
    compare = Path(args.compare) if args.compare else None
    aot_dirs = [Path(a) for a in args.aot or []]
    path = write_report(run_dir, compare=compare, aot_dirs=aot_dirs, plots=not args.no_plots)
    print(f"report: {path}", file=sys.stderr)
    return 0


def cmd_tpu_aot(args: argparse.Namespace) -> int:
    from bench.tpu_aot.compile import check_mesh
    from bench.tpu_aot.env import apply_tpu_compile_env, installed_jax_is_legacy, libtpu_available, parse_topology
    from model.config import Mesh

    topology = parse_topology(args.topology)
    preset = resolve_preset(args.preset, args.overrides)
    mesh = Mesh.parse(args.mesh) if args.mesh else preset.mesh
    variants, left_out = resolve_variants(args.variant or ["all"])
    if left_out:
        print(f"tpu-aot: {left_out}", file=sys.stderr)
    if not installed_jax_is_legacy():  # xmap compiles in the jax 0.4.30 environment (nox -s tpu_aot does both)
        skipped = [v.name for v in variants if v.strategy is Strategy.XMAP]
        variants = tuple(v for v in variants if v.strategy is not Strategy.XMAP)
        if skipped:
            print(f"tpu-aot: xmap needs jax 0.4.30; not compiled here: {', '.join(skipped)}", file=sys.stderr)
    devices = topology.devices
    check_mesh(mesh, devices, args.topology)
    for variant in variants:
        validate_run(preset, variant, mesh, devices)
    if args.out:
        check_writable(Path(args.out))
    if not libtpu_available():
        raise ConfigError(
            f"libtpu (the TPU compiler) is not installed in this environment ({sys.executable}); "
            f"`nox -s tpu_aot` compiles in the environments that have it (requirements/tpu.txt, tpu-xmap.txt)"
        )
    apply_tpu_compile_env(args.topology)
    from bench.records.context import new_run_dir
    from bench.records.store import cache_root
    from bench.tpu_aot.cache import cache_from_flag
    from bench.tpu_aot.compile import check_kernels, run_aot

    check_kernels(variants)  # JAX is up (TPU-compile environment set): refuse a kernel before a directory or compile
    out = Path(args.out) if args.out else new_run_dir()
    cache = cache_from_flag(args.compile_cache, cache_root() / "tpu-aot")
    print(f"run directory: {out}; compile cache: {cache.directory or 'off'}", file=sys.stderr)
    with _interruptible(out):
        failed = run_aot(preset, list(variants), mesh, args.topology, out, args.resume, cache, not args.no_extrapolate)
        return 1 if failed else 0


def _search_points(args: argparse.Namespace) -> list[Any]:
    """The search's points for this process's JAX (xmap in the jax 0.4.30 environment, the rest elsewhere) and
    ``--shard``, after every check that needs no compile."""
    from bench.tpu_aot.env import installed_jax_is_legacy, parse_topology
    from bench.tpu_aot.search import (
        ANCHOR_MP,
        build_points,
        default_grid,
        grid_meshes,
        is_quick_point,
        parse_meshes,
        parse_remats,
        quick_grid,
        shard,
    )

    topology = args.topology or ("v3:2x2" if args.quick else "v3:8x16")
    devices = parse_topology(topology).devices
    grid = quick_grid(topology) if args.quick else default_grid(topology)
    changes: dict[str, Any] = {}
    if args.meshes and args.reduced:
        raise ConfigError("--reduced is the GPT-J tensor-parallel mesh alone; give --meshes or --reduced, not both")
    if args.meshes:
        changes["meshes"] = tuple(parse_meshes(args.meshes, devices, topology))
    if args.reduced:
        changes["meshes"] = tuple(grid_meshes(devices, (ANCHOR_MP,)))
    if args.remats:
        changes["remats"] = tuple(parse_remats(args.remats))
    points = build_points(dataclasses.replace(grid, **changes))
    if args.quick and not changes:
        points = [p for p in points if is_quick_point(p)]
    if args.point:
        unknown = sorted(set(args.point) - {p.key for p in points})
        if unknown:
            raise ConfigError(f"--point {', '.join(map(repr, unknown))}: not in the grid; `--list` prints its points")
        points = [p for p in points if p.key in args.point]
    legacy = installed_jax_is_legacy()
    points = [p for p in points if (p.variant.strategy is Strategy.XMAP) == legacy]
    index, sep, count = args.shard.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--shard {args.shard!r}: expected K/N, e.g. 0/2 (worker K of N, counting from 0)")
    return shard(points, int(index), int(count), args.extrapolate)


def cmd_tpu_search(args: argparse.Namespace) -> int:
    from bench.tpu_aot.env import apply_tpu_compile_env, libtpu_available
    from bench.tpu_aot.search import describe

    points = _search_points(args)
    if args.list:
        print(describe(points) or "no points for this environment and shard")
        return 0
    if not points:
        print("tpu-search: no points for this environment and shard", file=sys.stderr)
        return 0
    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out)
    if not libtpu_available():
        raise ConfigError(
            f"libtpu (the TPU compiler) is not installed in this environment ({sys.executable}); "
            f"`nox -s tpu_search` compiles in the environments that have it (requirements/tpu.txt, tpu-xmap.txt)"
        )
    apply_tpu_compile_env(points[0].topology)
    from bench.records.context import new_run_dir
    from bench.records.store import cache_root
    from bench.tpu_aot.cache import cache_from_flag
    from bench.tpu_aot.search import run_search

    out = out or new_run_dir()
    cache = cache_from_flag(args.compile_cache, cache_root() / "tpu-aot")
    print(f"run directory: {out}; compile cache: {cache.directory or 'off'}; {len(points)} points", file=sys.stderr)
    with _interruptible(out):
        failed = run_search(points, out, cache, args.extrapolate, not args.no_prune)
        return 1 if failed else 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bench.projection.published import committed_runs, load_runs
    from bench.tpu_aot.env import apply_tpu_compile_env, libtpu_available
    from bench.tpu_aot.validate import compile_plan, line

    plans = [compile_plan(run) for run in load_runs(args.run or committed_runs())]
    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out)
    if not libtpu_available():
        raise ConfigError(
            f"libtpu (the TPU compiler) is not installed in this environment ({sys.executable}); "
            f"`nox -s tpu_validate` compiles in the one that has it (requirements/tpu.txt)"
        )
    from bench.records.context import new_run_dir
    from bench.records.store import cache_root, load_records

    out = out or new_run_dir()
    topologies = sorted({p.run.topology for p in plans})
    print(f"run directory: {out}; {len(plans)} runs on {', '.join(topologies)}", file=sys.stderr)
    if len(topologies) > 1:  # libtpu's compile-only environment is per topology and per process
        cache = ["--compile-cache", args.compile_cache] if args.compile_cache else []
        commands = {
            topology: [
                *(sys.executable, "-m", "bench", "validate", "--out", str(out), *cache),
                *[arg for p in plans if p.run.topology == topology for arg in ("--run", str(p.run.path))],
            ]
            for topology in sorted(topologies, key=lambda t: -sum(p.run.topology == t for p in plans))
        }
        codes = _two_at_a_time(commands)
        stopped = [f"{t} (exit {code})" for t, code in codes.items() if code not in (0, 1)]  # 1: a failure, recorded
        if stopped:
            raise ConfigError(f"validate stopped on {', '.join(stopped)}; see the output above")
        failed = sum(codes.values())
    else:
        apply_tpu_compile_env(topologies[0])
        from bench.tpu_aot.cache import cache_from_flag
        from bench.tpu_aot.validate import run_topology

        cache = cache_from_flag(args.compile_cache, cache_root() / "tpu-aot")
        with _interruptible(out):
            failed = run_topology(plans, out, cache)
    latest = {r.get("validation_id"): r for r in load_records(out).records if r.get("validation_id")}
    for plan in plans:
        if plan.run.id in latest:
            print(line(latest[plan.run.id]))
    return 1 if failed else 0


def _two_at_a_time(commands: dict[str, list[str]]) -> dict[str, int]:
    """Run each command as a process, two at once (the machine's cores), in the given order; their exit codes.
    Their output goes to stderr: the table on stdout is the parent's."""
    waiting, running, codes = list(commands.items()), {}, {}
    while waiting or running:
        while waiting and len(running) < 2:
            name, command = waiting.pop(0)
            running[name] = subprocess.Popen(command, stdout=sys.stderr)
        for name, process in list(running.items()):
            if process.poll() is not None:
                codes[name] = process.returncode
                del running[name]
        time.sleep(1)
    return codes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_list(sub)
    _add_logits(sub)
    _add_run(sub)
    _add_distributed(sub)
    _add_sweep(sub)
    _add_calibrate(sub)
    _add_decode(sub)
    _add_tpu_aot(sub)
    _add_validate(sub)
    _add_tpu_search(sub)
    _add_report(sub)
    return parser


def _add_list(sub: Any) -> None:
    sub.add_parser("list", help="print every variant name, one per line").set_defaults(func=cmd_list)


def _add_logits(sub: Any) -> None:
    logits = sub.add_parser(
        "logits",
        help="single-device logits of a Hugging Face GPT-J checkpoint, as JSON",
        description="Example: python -m bench logits --preset gptj-6b --weights gptj.safetensors --tokens 1,2,3",
    )
    _add_preset_args(logits)
    logits.add_argument("--weights", required=True, help="a .safetensors file in the Hugging Face GPT-J layout")
    logits.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    logits.set_defaults(func=cmd_logits)


def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="measure variants; append one JSON record each to RUN_DIR/results.jsonl",
        description="Example: python -m bench run --variant parallel-h256-pjit-full --preset cpu --mesh dp=2,mp=4",
    )
    add_run_flags(run)
    run.set_defaults(func=cmd_run)


def _add_distributed(sub: Any) -> None:
    launch = sub.add_parser(
        "distributed",
        help="launch a run as several local processes over loopback (jax.distributed, simulated CPU devices)",
        description="Example: python -m bench distributed --processes 2 --devices-per-process 4 -- "
        "run --variant parallel-h256-pjit-none --preset tiny --mesh dp=2,mp=4",
    )
    local.add_launcher_arguments(launch)
    launch.set_defaults(func=functools.partial(local.cmd_distributed, parse_run=parse_run))


def _add_sweep(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="every variant in its own process, both JAX environments, then the report",
        description="Example: python -m bench sweep --python-xmap .nox/_env_xmap/bin/python --repeats 2",
    )
    sweep.add_argument(
        "--quick",
        action="store_true",
        help="a fast look: GPT-J's configuration and the five variants one choice from it, tiny preset, 3 steps",
    )
    sweep.add_argument("--preset", help="preset (default cpu; tiny with --quick)")
    add_run_flags(sweep, only=("overrides",))
    sweep.add_argument("--steps", type=int, help="timed steps per variant (default 5; 3 with --quick)")
    sweep.add_argument("--warmup", type=int, help="warm-up steps per variant (default 1)")
    sweep.add_argument("--repeats", type=int, help="times the whole variant list runs, in rotating order (default 1)")
    add_run_flags(sweep, only=("out",))
    sweep.add_argument("--resume", action="store_true", help="complete --out, skipping variants recorded ok")
    sweep.add_argument("--python-current", help="python of the current-JAX environment (default: this one)")
    sweep.add_argument("--python-xmap", help="python of the jax 0.4.30 environment (xmap variants are skipped without)")
    sweep.add_argument("--variant-timeout", type=float, default=1800.0, help="seconds per variant (default 1800)")
    sweep.add_argument("--aot", action="append", help="run directory of tpu_aot records to include in the report")
    sweep.add_argument("--no-report", action="store_true", help="measure only")
    sweep.set_defaults(func=cmd_sweep)


def _add_calibrate(sub: Any) -> None:
    calibrate = sub.add_parser(
        "calibrate",
        help="measure the CPU peak FLOP/s (a GEMM) into RUN_DIR/peaks.jsonl",
        description="Example: python -m bench calibrate --preset cpu --out reports/runs/20261201T100000Z",
    )
    add_run_flags(calibrate, only=("preset", "overrides", "mesh"))
    calibrate.add_argument("--out", required=True, help="run directory whose peaks.jsonl gets the entry")
    calibrate.add_argument(
        "--when", choices=("start", "end"), default="start", help="start: reuse this environment's entry if any"
    )
    calibrate.set_defaults(func=cmd_calibrate)


def _add_decode(sub: Any) -> None:
    from bench.cli.decode import add_decode_flags

    decode = sub.add_parser(
        "decode",
        help="prefill and KV-cache decode per variant, batch and context: latency, tokens/s, MBU, all-reduces",
        description="Example: python -m bench decode --preset cpu --variant parallel-h256-pjit-none --batch 1,8",
    )
    add_decode_flags(decode)
    decode.set_defaults(func=cmd_decode)


def _add_tpu_aot(sub: Any) -> None:
    aot = sub.add_parser(
        "tpu-aot",
        help="compile variants for a TPU topology without a TPU; record memory, FLOPs, communication",
        description="Example: python -m bench tpu-aot --topology v3:8x16 --preset gptj-6b --mesh dp=32,mp=8",
    )
    aot.add_argument("--topology", default="v3:8x16", help="TPU topology, e.g. v3:8x16 (a v3-256), v4:4x4x4, v5e:16x16")
    aot.add_argument("--variant", action="append", help="variant name (repeatable); default all this JAX can build")
    add_run_flags(aot, only=("preset", "overrides", "mesh", "out", "resume"))
    aot.add_argument(
        "--compile-cache",
        metavar="DIR",
        help="reuse the unrolled compiles' figures, keyed by program, compiler and analysis code "
        "(bench/tpu_aot/cache.py); default $GPTJ_BENCH_CACHE/tpu-aot; 'none' compiles everything",
    )
    aot.add_argument(
        "--no-extrapolate",
        action="store_true",
        help="the whole-step compile only (memory, collectives, fit): no compiler estimate or component breakdown "
        "(a ranking gives xmap its shard_map twin's anyway)",
    )
    aot.set_defaults(preset="gptj-6b")
    aot.set_defaults(func=cmd_tpu_aot)


def _add_validate(sub: Any) -> None:
    validate = sub.add_parser(
        "validate",
        help="compile published runs for their TPU topologies and set the PROJECTED tokens/s beside the published",
        description="Example: python -m bench validate --run my-run.toml --out reports/runs/validate "
        "(run files: reports/published-runs/README.md; `nox -s tpu_validate` takes the committed set)",
    )
    validate.add_argument(
        "--run", action="append", metavar="FILE", help="a run file (repeatable); default: reports/published-runs/*.toml"
    )
    add_run_flags(validate, only=("out",))
    validate.add_argument(
        "--compile-cache", metavar="DIR", help="as tpu-aot's (default $GPTJ_BENCH_CACHE/tpu-aot; 'none': off)"
    )
    validate.set_defaults(func=cmd_validate)


def _add_tpu_search(sub: Any) -> None:
    search = sub.add_parser(
        "tpu-search",
        help="the design-space search: compile a grid of meshes, remat policies, micro-batches and layouts for a TPU "
        "topology at a fixed global batch, pruning points that cannot fit",
        description="Example: python -m bench tpu-search --topology v3:8x16 --out reports/runs/search --shard 0/2 "
        "(bench/tpu_aot/search.py; `nox -s tpu_search` runs two workers and the report)",
    )
    search.add_argument("--topology", help="TPU topology (default v3:8x16; v3:2x2 with --quick)")
    search.add_argument("--quick", action="store_true", help="a handful of points: the tiny preset on v3:2x2")
    search.add_argument(
        "--meshes", help="the grid's meshes, e.g. 64x4,32x8 (default: mp 4, 8 and 16 over every device)"
    )
    search.add_argument("--remats", help="the grid's remat policies, e.g. none,full (default none,full,dots,attn)")
    search.add_argument(
        "--reduced",
        action="store_true",
        help="the grid on GPT-J's tensor-parallel degree alone (mp=8 over the slice's devices): every remat, "
        "micro-batch and layout there, FSDP alone and the sign checks (the newer TPUs' grid)",
    )
    search.add_argument(
        "--point",
        action="append",
        help="only this point of the grid, by its --list name (repeatable), e.g. "
        "'parallel-h256-shard_map-full dp=32,mp=8 m=1'",
    )
    search.add_argument("--shard", default="0/1", help="K/N: worker K of N takes every Nth group of points")
    add_run_flags(search, only=("out",))
    search.add_argument(
        "--compile-cache", metavar="DIR", help="as tpu-aot's (default $GPTJ_BENCH_CACHE/tpu-aot; 'none': off)"
    )
    search.add_argument(
        "--extrapolate",
        action="store_true",
        help="also the four unrolled compiles of the compiler's own estimate per point (five compiles instead of "
        "one), a cross-check of the whole-step HLO roofline the search ranks by",
    )
    search.add_argument("--no-prune", action="store_true", help="compile every point, even one a refusal dominates")
    search.add_argument("--list", action="store_true", help="print the points in compile order and exit")
    search.set_defaults(func=cmd_tpu_search)


def _add_report(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="write RUN_DIR/REPORT.md with plots from the run's records",
        description="Example: python -m bench report reports/runs/20261129T053302Z --compare reports/example",
    )
    report.add_argument("run_dir", help="a run directory holding results.jsonl")
    report.add_argument("--compare", help="another run directory: per-variant ratios, regressions flagged")
    report.add_argument("--aot", action="append", help="run directory of tpu_aot records (repeatable)")
    report.add_argument("--no-plots", action="store_true", help="write REPORT.md without its PNG plots")
    report.set_defaults(func=cmd_report)


def _exit_interrupted(message: str, status: int = EXIT_INTERRUPTED) -> NoReturn:
    """Exit at once: XLA's compiler threads, interrupted mid-compile, crash its teardown at a normal exit
    (a segmentation fault after the message, measured on jax 0.10.2). Records are written whole or not at all."""
    print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return args.func(args)
    except Interrupted as stop:
        _exit_interrupted(str(stop), stop.exit_status)
    except Terminated:  # outside a measurement (before its run directory exists, or in a report)
        _exit_interrupted("terminated (SIGTERM)", EXIT_TERMINATED)
    except KeyboardInterrupt:
        _exit_interrupted("interrupted")
    except SuiteFault as fault:
        traceback.print_exception(fault.__cause__)
        print(f"error: {fault}", file=sys.stderr)
        return EXIT_SUITE_FAULT
    except (ConfigError, TopologyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RecordNotSaved as error:  # the measurement is not lost: the message says where it was kept
        print(f"error: {error}", file=sys.stderr)
        return 1
