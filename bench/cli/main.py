"""``python -m bench``: list variants, print logits from a checkpoint, run and report benchmarks.

JAX is imported only after the arguments are checked and the simulated CPU device count is set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.launch import local
from bench.launch import session as distributed
from bench.measure.devices import request_cpu_devices
from bench.tpu_aot.env import TopologyError
from model.config import ConfigError, all_variants, apply_overrides, get_preset


def _add_preset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="cpu", help="tiny | cpu | gptj-6b | gpt-neo-2.7b (default: cpu)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset field, repeatable, e.g. --set seq=512 --set n_layers=4",
    )


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
    from model.logits import logits_from_checkpoint

    logits = logits_from_checkpoint(cfg, Path(args.weights), tokens)
    print(json.dumps({"preset": preset.name, "tokens": tokens, "logits": logits.tolist()}))
    return 0


def _variants(names: list[str]) -> list:
    from model.config import Variant

    if names == ["all"]:
        return all_variants()
    return [Variant.parse(n) for n in names]


def cmd_run(args: argparse.Namespace) -> int:
    from model.config import Mesh, Scope, Strategy, validate_run

    preset = apply_overrides(get_preset(args.preset), args.overrides)
    variants = _variants(args.variant)
    mesh = Mesh.parse(args.mesh) if args.mesh else preset.mesh
    scope = Scope.parse(args.scope, "scope")
    if args.steps < 1 or args.warmup < 0:
        raise ConfigError("--steps must be at least 1 and --warmup at least 0")
    if args.distributed:  # jax.distributed starts before JAX touches a device; each process takes its share
        distributed.start(args, mesh, variants)
    else:
        request_cpu_devices(mesh.devices)
    import jax

    from model import compat

    if any(v.strategy is Strategy.XMAP for v in variants) and not compat.has_xmap():
        raise ConfigError(compat.HAS_XMAP_MESSAGE.format(version=jax.__version__))
    for variant in variants:  # every configuration error surfaces before the first compile
        validate_run(preset, variant, mesh, len(jax.devices()))
    from bench.measure.pipeline import run_variants
    from bench.records.context import new_run_dir

    out = Path(args.out) if args.out else new_run_dir()
    if distributed.is_writer():
        print(f"run directory: {out}", file=sys.stderr)
    records = run_variants(
        variants,
        preset,
        mesh,
        scope,
        args.steps,
        args.warmup,
        out,
        args.resume,
        args.repeat,
        args.overhead,
        args.profile,
    )
    return 0 if all(r["status"] == "ok" for r in records) else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    from bench.launch.sweep import plan_from_args, sweep
    from bench.records.context import new_run_dir

    plan = plan_from_args(args.quick, args.preset, args.steps, args.warmup, args.repeats)
    get_preset(plan.preset)
    if plan.repeats < 1 or plan.steps < 1 or plan.warmup < 0:
        raise ConfigError("--repeats and --steps must be at least 1, --warmup at least 0")
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR: the run directory to complete")
    pythons = {"current": args.python_current or sys.executable}
    if args.python_xmap:
        pythons["xmap"] = args.python_xmap
    else:
        print("sweep: no --python-xmap given, so xmap variants are not measured", file=sys.stderr)
    out = Path(args.out) if args.out else new_run_dir()
    extra = [f"--set={o}" for o in args.overrides]
    sweep(plan, pythons, out, extra, args.variant_timeout)
    if not args.no_report:
        return cmd_report(argparse.Namespace(run_dir=str(out), compare=None, aot=args.aot))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report.write import write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory at {run_dir}")
    compare = Path(args.compare) if args.compare else None
    path = write_report(run_dir, compare=compare, aot_dirs=[Path(a) for a in args.aot or []])
    print(f"report: {path}", file=sys.stderr)
    return 0


def cmd_tpu_aot(args: argparse.Namespace) -> int:
    from bench.tpu_aot.env import apply_tpu_compile_env, installed_jax_is_legacy, parse_topology
    from model.config import Mesh, Strategy

    parse_topology(args.topology)
    preset = apply_overrides(get_preset(args.preset), args.overrides)
    mesh = Mesh.parse(args.mesh) if args.mesh else preset.mesh
    variants = _variants(args.variant or ["all"])
    if not installed_jax_is_legacy():  # xmap compiles in the jax 0.4.30 environment (nox -s tpu_aot does both)
        skipped = [v.name for v in variants if v.strategy is Strategy.XMAP]
        variants = [v for v in variants if v.strategy is not Strategy.XMAP]
        if skipped:
            print(f"tpu-aot: xmap needs jax 0.4.30; not compiled here: {', '.join(skipped)}", file=sys.stderr)
    apply_tpu_compile_env(args.topology)
    from bench.records.context import new_run_dir
    from bench.tpu_aot.compile import run_aot

    out = Path(args.out) if args.out else new_run_dir()
    print(f"run directory: {out}", file=sys.stderr)
    return 1 if run_aot(preset, variants, mesh, args.topology, out, args.resume) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="print every variant name, one per line").set_defaults(func=cmd_list)

    logits = sub.add_parser(
        "logits",
        help="single-device logits of a Hugging Face GPT-J checkpoint, as JSON",
        description="Example: python -m bench logits --preset gptj-6b --weights gptj.safetensors --tokens 1,2,3",
    )
    _add_preset_args(logits)
    logits.add_argument("--weights", required=True, help="a .safetensors file in the Hugging Face GPT-J layout")
    logits.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    logits.set_defaults(func=cmd_logits)

    run = sub.add_parser(
        "run",
        help="measure variants; append one JSON record each to RUN_DIR/results.jsonl",
        description="Example: python -m bench run --variant parallel-h256-pjit-full --preset cpu --mesh dp=2,mp=4",
    )
    run.add_argument(
        "--variant", action="append", required=True, help="a variant name (repeatable), or 'all'; see `list`"
    )
    _add_preset_args(run)
    run.add_argument("--mesh", help="device mesh, e.g. dp=2,mp=4 (default: the preset's)")
    run.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    run.add_argument("--warmup", type=int, default=2, help="warm-up steps after compiling (default 2)")
    run.add_argument(
        "--scope", default="model", help="model: the whole training step; block: one block (default model)"
    )
    run.add_argument("--out", help="run directory (default: a new one under reports/runs/)")
    run.add_argument("--resume", action="store_true", help="skip variants already recorded ok in --out")
    run.add_argument("--repeat", type=int, default=0, help="repeat index stored in the record (sweeps set it)")
    run.add_argument(
        "--overhead", action="store_true", help="also time a bare loop of the same step: the harness overhead"
    )
    run.add_argument(
        "--profile",
        action="store_true",
        help="capture an XProf trace of a few more steps into RUN_DIR/traces/ and add its summary to the record",
    )
    distributed.add_run_arguments(run)
    run.set_defaults(func=cmd_run)

    launch = sub.add_parser(
        "distributed",
        help="launch a run as several local processes over loopback (jax.distributed, simulated CPU devices)",
        description="Example: python -m bench distributed --processes 2 --devices-per-process 4 -- "
        "run --variant parallel-h256-pjit-none --preset tiny --mesh dp=2,mp=4",
    )
    local.add_launcher_arguments(launch)
    launch.set_defaults(func=local.cmd_distributed)

    sweep = sub.add_parser(
        "sweep",
        help="every variant in its own process, both JAX environments, then the report",
        description="Example: python -m bench sweep --python-xmap .nox/_env_xmap/bin/python --repeats 2",
    )
    sweep.add_argument("--quick", action="store_true", help="a fast look: the tiny preset, 3 steps, no xmap baselines")
    sweep.add_argument("--preset", help="preset (default cpu; tiny with --quick)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sweep.add_argument("--steps", type=int, help="timed steps per variant (default 5; 3 with --quick)")
    sweep.add_argument("--warmup", type=int, help="warm-up steps per variant (default 1)")
    sweep.add_argument("--repeats", type=int, help="times the whole variant list runs, in rotating order (default 1)")
    sweep.add_argument("--out", help="run directory (default: a new one under reports/runs/)")
    sweep.add_argument("--resume", action="store_true", help="complete --out, skipping variants recorded ok")
    sweep.add_argument("--python-current", help="python of the current-JAX environment (default: this one)")
    sweep.add_argument("--python-xmap", help="python of the jax 0.4.30 environment (xmap variants are skipped without)")
    sweep.add_argument("--variant-timeout", type=float, default=1800.0, help="seconds per variant (default 1800)")
    sweep.add_argument("--aot", action="append", help="run directory of tpu_aot records to include in the report")
    sweep.add_argument("--no-report", action="store_true", help="measure only")
    sweep.set_defaults(func=cmd_sweep)

    aot = sub.add_parser(
        "tpu-aot",
        help="compile variants for a TPU topology without a TPU; record memory, FLOPs, communication",
        description="Example: python -m bench tpu-aot --topology v3:8x16 --preset gptj-6b --mesh dp=32,mp=8",
    )
    aot.add_argument("--topology", default="v3:8x16", help="TPU topology, e.g. v3:8x16 (a v3-256), v4:4x4x4, v5e:16x16")
    aot.add_argument("--variant", action="append", help="variant name (repeatable); default all this JAX can build")
    _add_preset_args(aot)
    aot.set_defaults(preset="gptj-6b")
    aot.add_argument("--mesh", help="device mesh (default: the preset's, dp=32,mp=8 for gptj-6b)")
    aot.add_argument("--out", help="run directory (default: a new one under reports/runs/)")
    aot.add_argument("--resume", action="store_true", help="skip variants already recorded ok in --out")
    aot.set_defaults(func=cmd_tpu_aot)

    report = sub.add_parser(
        "report",
        help="write RUN_DIR/REPORT.md with plots from the run's records",
        description="Example: python -m bench report reports/runs/20261129T053302Z --compare reports/example",
    )
    report.add_argument("run_dir", help="a run directory holding results.jsonl")
    report.add_argument("--compare", help="another run directory: per-variant ratios, regressions flagged")
    report.add_argument("--aot", action="append", help="run directory of tpu_aot records (repeatable)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, TopologyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
