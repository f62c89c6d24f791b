"""``python -m bench decode``: its flags, and a command line resolved into the grid it measures. What needs no JAX is
checked here, before JAX starts; the prompt, token count and sampler are checked by model.decode's own checks
(bench.measure.decode.check_spec), and the memory by the parameters' shapes, both before anything compiles.

The grid: every variant given, at every batch and cache length (context) given. A decode step has no backward pass,
so the remat axis does not change it: ``all`` means every residual, head and strategy at remat none.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.cli.spec import check_writable, resolve_preset, resolve_variants
from bench.records.decodespec import DecodeSpec
from model.config import ConfigError, Mesh, Remat, Variant

DEFAULT_BATCHES = (1, 8, 32, 128)
DEFAULT_CONTEXTS = (128, 256, 512, 1024, 2048)  # bounded by the preset's context
DEFAULT_PROMPT_TOKENS = 16
DEFAULT_NEW_TOKENS = 16


def add_decode_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", action="append", help="variant name (repeatable); default all, at remat none")
    parser.add_argument("--preset", default="cpu", help="preset (default cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value override (repeatable)")
    parser.add_argument("--mesh", help="mesh of the sharded strategies, e.g. dp=1,mp=4 (default dp=1, the preset's mp)")
    parser.add_argument("--batch", help=f"comma-separated batches (default {','.join(map(str, DEFAULT_BATCHES))})")
    parser.add_argument(
        "--context",
        help="comma-separated cache lengths in tokens (default those of "
        f"{','.join(map(str, DEFAULT_CONTEXTS))} within the preset's context, else the context)",
    )
    parser.add_argument("--prompt-tokens", type=int, default=DEFAULT_PROMPT_TOKENS, help="prefill length (default 16)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=DEFAULT_NEW_TOKENS, help="decode steps timed per point (default 16)"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; above: sampled")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1] (default 1: all tokens)")
    parser.add_argument(
        "--topology",
        help="compile for this TPU topology without a TPU and PROJECT the step (e.g. v3:2x2, a v3-8); nothing timed",
    )
    parser.add_argument(
        "--compile-cache", metavar="DIR", help="with --topology: as tpu-aot's (default $GPTJ_BENCH_CACHE/tpu-aot)"
    )
    parser.add_argument("--out", help="run directory (default a new one under reports/runs)")
    parser.add_argument("--resume", action="store_true", help="complete --out, skipping points recorded ok")


def _ints(text: str | None, flag: str, default: Sequence[int]) -> tuple[int, ...]:
    if text is None:
        return tuple(default)
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"{flag} expects comma-separated integers, e.g. 1,8; got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} values must be at least 1, got {text!r}")
    return values


def default_contexts(context: int) -> tuple[int, ...]:
    return tuple(c for c in DEFAULT_CONTEXTS if c <= context) or (context,)


def decode_variants(names: Sequence[str]) -> tuple[tuple[Variant, ...], str | None]:
    if names != ["all"]:
        return resolve_variants(names)
    every, left_out = resolve_variants(["all"])
    return tuple(v for v in every if v.remat is Remat.NONE), left_out


def resolve_decode(args: argparse.Namespace) -> DecodeSpec:
    preset = resolve_preset(args.preset, args.overrides)
    mesh = Mesh.parse(args.mesh) if args.mesh else Mesh(1, preset.mesh.mp)
    variants, left_out = decode_variants(args.variant or ["all"])
    context = preset.model.context
    batches = _ints(args.batch, "--batch", DEFAULT_BATCHES)
    contexts = _ints(args.context, "--context", default_contexts(context))
    if max(contexts) > context:
        raise ConfigError(f"--context {max(contexts)} is longer than the preset's context {context}")
    bad_dp = [b for b in batches if b % mesh.dp]
    if bad_dp:
        raise ConfigError(f"--batch {bad_dp} not divisible by dp={mesh.dp}")
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR: the run directory to complete")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out)
    return DecodeSpec(
        preset,
        variants,
        mesh,
        batches,
        contexts,
        args.prompt_tokens,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        out,
        args.resume,
        left_out,
    )
