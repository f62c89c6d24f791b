"""``python -m bench``: list variants, print logits from a checkpoint, run and report benchmarks.

JAX is imported only after the arguments are checked and the simulated CPU device count is set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.devices import request_cpu_devices
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
    request_cpu_devices(mesh.devices)
    import jax

    from model import compat

    if any(v.strategy is Strategy.XMAP for v in variants) and not compat.has_xmap():
        raise ConfigError(compat.HAS_XMAP_MESSAGE.format(version=jax.__version__))
    for variant in variants:  # every configuration error surfaces before the first compile
        validate_run(preset, variant, mesh, len(jax.devices()))
    from bench.run import new_run_dir, run_variants

    out = Path(args.out) if args.out else new_run_dir()
    print(f"run directory: {out}", file=sys.stderr)
    records = run_variants(
        variants, preset, mesh, scope, args.steps, args.warmup, out, args.resume, args.repeat, args.overhead
    )
    return 0 if all(r["status"] == "ok" for r in records) else 1


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
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
