"""The local launcher: ``python -m bench distributed`` runs N processes of one command over loopback."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure.session import (
    DEFAULT_TIME_LIMIT_S,
    EXIT_LAUNCHER_TIME_LIMIT,
    check_mesh,
    check_port_free,
    check_variants,
    free_port,
    local_device_request,
)
from bench.records.runspec import BY_DEST, flag_argv
from model.config import ConfigError, Mesh, Variant

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
SETS_ITSELF = tuple(BY_DEST[d].flag for d in ("distributed", "coordinator", "num_processes", "process_id"))


def process_env(base: Mapping[str, str], devices_per_process: int) -> dict[str, str]:
    """One process's environment: the parent's, with its own count of simulated CPU devices, on CPU."""
    env = dict(base)
    flags = re.sub(rf"{DEVICE_COUNT_FLAG}=\S+", "", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_COUNT_FLAG}={devices_per_process}"])
    env["JAX_PLATFORMS"] = "cpu"  # the launcher simulates hosts with CPU devices
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive as they are printed, in order, when a process is killed
    return env


def describe_exit(returncode: int | None, killed_by_launcher: bool = False) -> str:
    if killed_by_launcher:
        return "still running at the time limit: killed by the launcher"
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass(frozen=True)
class ProcessExit:
    process_id: int
    returncode: int | None
    killed_by_launcher: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        return f"process {self.process_id}: {describe_exit(self.returncode, self.killed_by_launcher)}"


class LocalCluster:
    """N processes of ``python -m bench <args> --distributed ...`` on this machine, over 127.0.0.1.

    Each runs in its own process group (killed as a whole), with its own simulated CPU devices; their output
    is forwarded line by line, prefixed with the process id, and the last lines are kept (``lines``)."""

    def __init__(
        self,
        bench_args: Sequence[str],
        processes: int,
        devices_per_process: int,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        echo: bool = True,
    ):
        if processes < 1 or devices_per_process < 1:
            raise ConfigError("--processes and --devices-per-process must be at least 1")
        clash = [a for a in bench_args if a.split("=")[0] in SETS_ITSELF]
        if clash:
            raise ConfigError(f"the launcher sets {', '.join(SETS_ITSELF)} itself; remove {clash}")
        self.bench_args, self.processes, self.devices_per_process = list(bench_args), processes, devices_per_process
        self.port = port or free_port()
        self.env = process_env(os.environ if env is None else env, devices_per_process)
        self.echo = echo
        self.popen: list[subprocess.Popen] = []
        self.lines: list[deque[str]] = [deque(maxlen=500) for _ in range(processes)]
        self.readers: list[threading.Thread] = []
        self.killed: set[int] = set()

    def argv(self, process_id: int) -> list[str]:
        coordinates = flag_argv(
            distributed=True, coordinator=f"127.0.0.1:{self.port}", num_processes=self.processes, process_id=process_id
        )
        return [sys.executable, "-m", "bench", *self.bench_args, *coordinates]

    def start(self) -> LocalCluster:
        for pid in range(self.processes):
            child = subprocess.Popen(
                self.argv(pid),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole, children included
                text=True,
                errors="replace",
            )
            self.popen.append(child)
            reader = threading.Thread(target=self._forward, args=(pid, child), daemon=True)
            reader.start()
            self.readers.append(reader)
        return self

    def _forward(self, pid: int, child: subprocess.Popen) -> None:
        for line in child.stdout:
            self.lines[pid].append(line.rstrip("\n"))
            if self.echo:
                print(f"[{pid}] {line}", end="", file=sys.stderr, flush=True)

    def output(self, pid: int) -> str:
        return "\n".join(self.lines[pid])

    def wait_for_line(self, pid: int, pattern: str, timeout_s: float) -> bool:
        """Whether process ``pid`` printed a line matching ``pattern`` within ``timeout_s`` (or before exiting)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in list(self.lines[pid])):
                return True
            if self.popen[pid].poll() is not None and not self.readers[pid].is_alive():
                return False
            time.sleep(0.1)
        return False

    def signal(self, pid: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to process ``pid``'s whole process group (tests kill one to see the others cope)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen[pid].pid, sig)

    def wait(self, time_limit_s: float, grace_s: float) -> list[ProcessExit]:
        """Wait for every process, at most ``time_limit_s``; once one has failed, the rest get ``grace_s`` more
        (their watchdogs should end them) before they are killed."""
        deadline = time.monotonic() + time_limit_s
        while True:
            codes = [child.poll() for child in self.popen]
            if all(code is not None for code in codes):
                break
            if any(code not in (None, 0) for code in codes):
                deadline = min(deadline, time.monotonic() + grace_s)
                grace_s = float("inf")  # set once, at the first failure
            if time.monotonic() >= deadline:
                self.killed = {pid for pid, code in enumerate(codes) if code is None}
                self.close()
                break
            time.sleep(0.1)
        for reader in self.readers:
            reader.join(timeout=5)
        return [ProcessExit(pid, child.returncode, pid in self.killed) for pid, child in enumerate(self.popen)]

    def close(self) -> None:
        """Terminate every process group still running: SIGTERM, then SIGKILL after 5 s."""
        running = [pid for pid, child in enumerate(self.popen) if child.poll() is None]
        for pid in running:
            self.signal(pid, signal.SIGTERM)
            self.signal(pid, signal.SIGCONT)  # a stopped (frozen) process acts on SIGTERM only once continued
        deadline = time.monotonic() + 5
        for pid in running:
            try:
                self.popen[pid].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal(pid, signal.SIGKILL)
                self.popen[pid].wait(timeout=10)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def exit_status(exits: Sequence[ProcessExit]) -> int:
    """0 if every process succeeded; 124 if the launcher had to kill one; else the first failure's status."""
    if any(e.killed_by_launcher for e in exits):
        return EXIT_LAUNCHER_TIME_LIMIT
    for e in exits:
        if not e.ok:
            return e.returncode if e.returncode > 0 else 128 - e.returncode
    return 0


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", type=int, required=True, help="number of local processes")
    parser.add_argument("--devices-per-process", type=int, required=True, help="simulated CPU devices per process")
    parser.add_argument("--port", type=int, help="coordinator port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        metavar="SECONDS",
        help=f"kill every process after this long (default {DEFAULT_TIME_LIMIT_S:.0f})",
    )
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- run --variant ... (the bench command)")


def cmd_distributed(args: argparse.Namespace, parse_run: ParseRun) -> int:
    """``python -m bench distributed --processes P --devices-per-process N -- run ...``; ``parse_run``: how
    ``bench run`` reads its command line (the CLI's, passed in: nothing below the CLI imports it)."""
    bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else list(args.bench_args)
    if args.time_limit <= 0:
        raise ConfigError(f"--time-limit must be positive, got {args.time_limit}")
    plan = plan_run(bench_args, parse_run)
    local_device_request(plan.mesh, args.processes)
    check_mesh(plan.mesh, dict.fromkeys(range(args.processes), args.devices_per_process))
    if plan.out is None:
        from bench.records.context import new_run_dir

        bench_args += flag_argv(out=str(new_run_dir()))
        plan = plan_run(bench_args, parse_run)
    if args.port is not None:
        check_port_free(args.port)
    before = len(_records(plan.out))
    print(f"run directory: {plan.out}", file=sys.stderr)
    with LocalCluster(bench_args, args.processes, args.devices_per_process, args.port) as cluster:
        exits = cluster.wait(args.time_limit, grace_s=plan.timeout_s + 30)
    for e in exits:
        print(e.describe(), file=sys.stderr)
    record_unrecorded(plan, before, exits)
    return exit_status(exits)


@dataclass(frozen=True)
class RunPlan:
    """What a ``run`` command line will measure, read as ``bench run`` reads it."""

    variants: list[Variant]
    preset: Any
    mesh: Mesh
    scope: Any
    repeat: int
    out: Path | None
    timeout_s: float


# A ``bench run`` command line (after "run") -> its resolved, checked spec and its parsed flags.
ParseRun = Callable[[Sequence[str]], tuple[Any, argparse.Namespace]]


def plan_run(bench_args: Sequence[str], parse_run: ParseRun) -> RunPlan:
    if list(bench_args[:1]) != ["run"]:
        raise ConfigError("expected a run command, e.g. -- run --variant parallel-h256-pjit-none --preset tiny")
    spec, args = parse_run(bench_args[1:])
    check_variants(spec.variants)
    return RunPlan(
        list(spec.variants), spec.preset, spec.mesh, spec.scope, args.repeat, spec.out, args.distributed_timeout
    )


def _records(out: Path) -> list[dict[str, Any]]:
    from bench.records.store import load_records

    return load_records(out).records


def record_unrecorded(plan: RunPlan, before: int, exits: Sequence[ProcessExit]) -> None:
    """When process 0 died or was killed (so its watchdog could not write), write each variant it left
    unrecorded as failed, saying how every process ended. ``before``: the records in the run directory before."""
    from bench.records.context import failed_record
    from bench.records.store import append_record

    # the processes ran this python; its installed jax is theirs (read without importing jax into the launcher)
    jax_version = importlib.metadata.version("jax")

    if plan.out is None or exits[0].returncode in (0, 1, 2):  # process 0 recorded everything it ran
        return
    recorded = {r["variant"] for r in _records(plan.out)[before:]}
    how = "; ".join(e.describe() for e in exits)
    failed = [e for e in exits if not e.ok]
    for variant in plan.variants:
        if variant.name in recorded:
            continue
        error = f"the run ended before process 0 recorded this variant: {how}"
        record = failed_record(variant, plan.preset, plan.mesh, plan.scope, plan.repeat, jax_version, error)
        record.update(
            failed_processes=[e.process_id for e in failed],
            process_count=len(exits),
            process_errors={str(e.process_id): describe_exit(e.returncode, e.killed_by_launcher) for e in failed},
        )
        append_record(plan.out, record)
        print(f"{variant.name}: FAILED {record['error']}", file=sys.stderr)
