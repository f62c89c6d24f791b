"""The flags of ``python -m bench run``, declared once: the parser, the sweep, the launcher and the report's
reproduce command all read this table, so a flag is spelled in one place.

It is what a record says about how it was made; it imports nothing from bench (anything may import it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_DISTRIBUTED_TIMEOUT_S = 300.0  # no progress for this long means a peer is gone; raise it above a long compile


@dataclass(frozen=True)
class RunFlag:
    """One flag of ``bench run``. ``dest`` is its keyword in ``run_argv`` and its attribute on the parsed args."""

    flag: str
    dest: str
    help: str
    type: type | None = str  # None: a switch (store_true)
    default: Any = None
    repeatable: bool = False  # given once per value (action="append")
    required: bool = False
    metavar: str | None = None
    group: str | None = None  # a key of GROUPS


GROUPS: dict[str, tuple[str, str]] = {
    "distributed": (
        "multi-process (jax.distributed)",
        "Run one process per host (or per simulated host, see `python -m bench distributed`). Without "
        "--coordinator/--num-processes/--process-id, JAX reads them from the cluster (TPU VM, SLURM, Open MPI, "
        "Kubernetes).",
    ),
}

RUN_FLAGS: tuple[RunFlag, ...] = (
    RunFlag("--variant", "variant", "a variant name (repeatable), or 'all' alone; see `list`", repeatable=True,
            required=True),
    RunFlag("--preset", "preset", "tiny | cpu | gptj-6b | gpt-neo-2.7b (default: %(default)s)", default="cpu"),
    RunFlag("--set", "overrides", "override a preset field, repeatable, e.g. --set seq=512 --set n_layers=4",
            repeatable=True, metavar="KEY=VALUE"),
    RunFlag("--mesh", "mesh", "device mesh, e.g. dp=2,mp=4 (default: the preset's)"),
    RunFlag("--steps", "steps", "timed steps (default 10)", type=int, default=10),
    RunFlag("--warmup", "warmup", "warm-up steps after compiling (default 2)", type=int, default=2),
    RunFlag("--scope", "scope", "model: the whole training step; block: one block (default model)",
            default="model"),
    RunFlag("--out", "out", "run directory (default: a new one under reports/runs/)"),
    RunFlag("--resume", "resume", "skip variants already recorded ok in --out", type=None, default=False),
    RunFlag("--repeat", "repeat", "repeat index stored in the record (sweeps set it)", type=int, default=0),
    RunFlag("--overhead", "overhead", "also time a bare loop of the same step: the harness overhead", type=None,
            default=False),
    RunFlag("--peak-cache", "peak_cache", "CPU: take the peak from the cross-run cache (~/.cache/gptj-bench, or "
            "$GPTJ_BENCH_CACHE) instead of measuring it at the start of the run; records say peak_from_cache",
            type=None, default=False),
    RunFlag("--profile", "profile", "capture an XProf trace of a few more steps into RUN_DIR/traces/ and add its "
            "summary to the record", type=None, default=False),
    RunFlag("--gemm-floor", "gemm_floor", "also time every dot of the compiled step alone, at its own shapes: the "
            "step's GEMM floor, by block component (bench/measure/gemm_floor.py)", type=None, default=False),
    RunFlag("--distributed", "distributed", "initialise jax.distributed before the run", type=None, default=False,
            group="distributed"),
    RunFlag("--coordinator", "coordinator", "HOST:PORT of process 0's coordination service", group="distributed"),
    RunFlag("--num-processes", "num_processes", "number of processes in the run", type=int, group="distributed"),
    RunFlag("--process-id", "process_id", "this process's id, 0 .. num-processes - 1", type=int,
            group="distributed"),
    RunFlag("--distributed-timeout", "distributed_timeout",
            f"give up when a process makes no progress for this long (default {DEFAULT_DISTRIBUTED_TIMEOUT_S:.0f}; "
            "it must exceed the longest compile)", type=float, default=DEFAULT_DISTRIBUTED_TIMEOUT_S,
            metavar="SECONDS", group="distributed"),
)  # fmt: skip

BY_DEST: dict[str, RunFlag] = {f.dest: f for f in RUN_FLAGS}


def add_run_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """Add the run flags (those named by dest in ``only``, or all) to ``parser``, grouped as declared."""
    groups: dict[str, Any] = {}
    for spec in RUN_FLAGS if only is None else [BY_DEST[d] for d in only]:
        target: Any = parser
        if spec.group is not None:
            if spec.group not in groups:
                groups[spec.group] = parser.add_argument_group(*GROUPS[spec.group])
            target = groups[spec.group]
        if spec.type is None:
            target.add_argument(spec.flag, dest=spec.dest, action="store_true", help=spec.help)
            continue
        options: dict[str, Any] = dict(dest=spec.dest, type=spec.type, help=spec.help, metavar=spec.metavar)
        if spec.repeatable:
            options.update(action="append", default=None if spec.required else [], required=spec.required)
        else:
            options.update(default=spec.default)
        target.add_argument(spec.flag, **options)


def flag_argv(**values: Any) -> list[str]:
    """The flags that give ``values`` (keywords: the dests of RUN_FLAGS); None, False and defaults are left out."""
    unknown = sorted(set(values) - set(BY_DEST))
    if unknown:
        raise TypeError(f"not a bench run flag: {', '.join(unknown)}; known: {', '.join(BY_DEST)}")
    argv: list[str] = []
    for dest, value in values.items():
        spec = BY_DEST[dest]
        if value is None or value is False or (value == spec.default and not spec.repeatable):
            continue
        if spec.type is None:
            argv.append(spec.flag)
        elif spec.repeatable:
            argv += [f"{spec.flag}={item}" for item in ([value] if isinstance(value, str) else value)]
        else:
            argv.append(f"{spec.flag}={value}")
    return argv


def run_argv(**values: Any) -> list[str]:
    """``["run", ...flags]``: the ``python -m bench`` arguments of a run with these values, e.g.
    ``run_argv(variant=["parallel-h256-pjit-full"], preset="tiny", steps=3)``."""
    return ["run", *flag_argv(**values)]
