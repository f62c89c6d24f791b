"""A command line resolved into what will run: preset, overrides, mesh, variants, scope and step counts, every
input checked, before JAX is imported (so before anything compiles).

``bench run`` (``main``) and the local launcher (``launch.local``, handed ``parse_run`` by ``main``) both resolve a
run here; this module imports nothing from ``bench.launch``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.records.runspec import add_run_flags
from bench.tpu_aot.env import installed_jax_is_legacy
from model.config import (
    ConfigError,
    Mesh,
    Preset,
    Scope,
    Strategy,
    Variant,
    all_variants,
    apply_overrides,
    get_preset,
    refuse_variant_fields,
)


@dataclass(frozen=True)
class RunSpec:
    """What ``bench run`` will measure, checked."""

    preset: Preset
    variants: tuple[Variant, ...]
    mesh: Mesh
    scope: Scope
    steps: int
    warmup: int
    out: Path | None  # None: a new run directory, made when the run starts
    left_out: str | None = None  # what 'all' left out and why; None when nothing was


def run_parser() -> argparse.ArgumentParser:
    """A parser of ``bench run``'s flags alone (the arguments after ``run``)."""
    parser = argparse.ArgumentParser(prog="python -m bench run")
    add_run_flags(parser)
    return parser


def resolve_preset(name: str, overrides: list[str]) -> Preset:
    """The preset with ``--set`` applied, for commands that take ``--variant`` (which sets residual, head, remat)."""
    refuse_variant_fields(overrides)
    preset = apply_overrides(get_preset(name), overrides)
    preset.validate()
    return preset


def resolve_variants(names: Sequence[str]) -> tuple[tuple[Variant, ...], str | None]:
    """``--variant`` values: names, or ``all`` alone, meaning every variant this JAX can build.

    Returns the variants and, when ``all`` left some out, a note saying which and why."""
    if "all" not in names:
        return tuple(Variant.parse(n) for n in names), None
    if len(names) > 1:
        others = ", ".join(n for n in names if n != "all")
        raise ConfigError(f"--variant all stands alone: give either 'all' or variant names ({others}), not both")
    variants = all_variants()
    if xmap_buildable():
        return tuple(variants), None
    xmap = [v.name for v in variants if v.strategy is Strategy.XMAP]
    note = (
        f"'all' leaves out the xmap variants, which need jax 0.4.30 (this is jax {importlib.metadata.version('jax')}): "
        f"{', '.join(xmap)}"
    )
    return tuple(v for v in variants if v.strategy is not Strategy.XMAP), note


def xmap_buildable() -> bool:
    """Whether the installed JAX has xmap (read from package metadata: JAX is not imported yet)."""
    return installed_jax_is_legacy()


def check_counts(steps: int, warmup: int) -> None:
    if steps < 1 or warmup < 0:
        raise ConfigError(f"--steps must be at least 1 and --warmup at least 0, got {steps} and {warmup}")


def check_writable(out: Path) -> None:
    """Make the run directory and write a file in it now, so a bad ``--out`` fails before the measurement."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file, not a directory; give a directory to write records in")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(
            f"--out {out}: cannot write a run directory there ({error.strerror or error}); "
            f"give a directory you can write"
        ) from None


def resolve_run(args: argparse.Namespace) -> RunSpec:
    """``bench run``'s parsed flags, checked; the distributed flags are checked when the session starts."""
    preset = resolve_preset(args.preset, args.overrides)
    mesh = Mesh.parse(args.mesh) if args.mesh else preset.mesh
    variants, left_out = resolve_variants(args.variant)
    scope = Scope.parse(args.scope, "scope")
    check_counts(args.steps, args.warmup)
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR: the run directory to complete")
    out = Path(args.out) if args.out else None
    if out is not None and args.process_id in (None, 0):  # only process 0 writes
        check_writable(out)
    return RunSpec(preset, variants, mesh, scope, args.steps, args.warmup, out, left_out)


def parse_run(argv: Sequence[str]) -> tuple[RunSpec, argparse.Namespace]:
    """A ``bench run`` command line (the flags after "run"), resolved and checked, and its parsed flags."""
    args = run_parser().parse_args(list(argv))
    return resolve_run(args), args
