"""Runs across processes on JAX's multi-controller runtime (``jax.distributed``), and a local launcher.

Multi-controller SPMD: every process runs the same ``python -m bench run ... --distributed`` program, compiles
the same step for one global mesh and feeds its own devices; collectives cross processes (ICI/DCN on TPU, NCCL
on GPU, gloo over TCP on CPU). This module

- starts ``jax.distributed`` before JAX touches a device, from flags or from the cluster environment JAX
  detects (TPU VMs, SLURM, Open MPI, Kubernetes), after checks that fail fast with a clear message: a
  coordinator that cannot be reached, a coordinator port already in use, a mesh that does not fit the processes;
- watches progress. A dead or hung process would leave the others blocked in a collective forever, and JAX's
  own limits either abort without naming anyone or, on jax 0.4.30, never fire. Each process publishes a
  heartbeat and its phase in the coordination service's key-value store; a process that makes no progress for
  ``--distributed-timeout`` seconds names the process(es) it waits for, process 0 also writes a failed record,
  and it exits with status ``EXIT_PEER_FAILURE``;
- agrees on each record: process 0 writes ``ok`` only when every process reported ``ok`` for that variant,
  and a failed record names the processes that failed and how (``failed_processes``, ``error``);
- launches a local cluster (``python -m bench distributed``): N subprocesses, each with its own simulated CPU
  devices, gloo over loopback, all bounded in time and killed (process group) on failure.

JAX is imported lazily: ``bench.cli`` imports this module before the device count is set.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import inspect
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model import compat
from model.config import ConfigError, Mesh, Strategy, Variant

EXIT_PEER_FAILURE = 3  # a process died, hung or failed: distinct from 1 (a variant failed) and 2 (bad input)
EXIT_LAUNCHER_TIME_LIMIT = 124  # as timeout(1)
DEFAULT_TIME_LIMIT_S = 3600.0  # the local launcher's bound on a whole launch
BEAT_S = 1.0  # heartbeat period
STALE_BEATS = 5  # a peer whose heartbeat has not changed for this many periods is presumed dead or frozen
KV_PREFIX = "gptj_bench"
# jax.distributed's own start-up limit is set past ours, so that our message (which names who is missing)
# comes first; jax 0.10.2 aborts without naming anyone, and jax 0.4.30's process 0 waits forever.
JAX_LIMIT_MARGIN_S = 60


# --- flags and start-up checks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coordinates:
    """Where the coordinator is and who this process is; None: left to JAX's cluster auto-detection."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None

    def validate(self) -> None:
        if self.coordinator_address is not None:
            parse_address(self.coordinator_address)
        if self.num_processes is not None and self.num_processes < 1:
            raise ConfigError(f"--num-processes must be at least 1, got {self.num_processes}")
        if self.process_id is not None and self.process_id < 0:
            raise ConfigError(f"--process-id must be at least 0, got {self.process_id}")
        if None not in (self.num_processes, self.process_id) and self.process_id >= self.num_processes:
            raise ConfigError(f"--process-id {self.process_id} is not below --num-processes {self.num_processes}")


def coordinates_from_args(args: argparse.Namespace) -> Coordinates:
    coords = Coordinates(args.coordinator, args.num_processes, args.process_id)
    coords.validate()
    return coords


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6 address]:port``."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<port>\d+)|(?P<host>[^:\[\]]+):(?P<port2>\d+)", text.strip())
    port = int(match["port"] or match["port2"]) if match else 0
    if not match or not 0 < port < 65536:
        raise ConfigError(f"bad coordinator address {text!r}; expected HOST:PORT with a port in 1..65535")
    return match["v6"] or match["host"], port


def check_port_free(port: int) -> None:
    """Process 0 binds the coordinator port on every interface; fail now if something already listens there.

    The probe sets SO_REUSEADDR (a socket in TIME_WAIT from an earlier run is no obstacle) but not SO_REUSEPORT:
    gRPC sets SO_REUSEPORT, so a second coordinator could otherwise bind the same port and mix two jobs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"coordinator port {port} is already in use on this host (another run, or another service); "
                f"pick a free port in --coordinator, e.g. `python -c 'from bench.measure.session import free_port; "
                f"print(free_port())'`"
            ) from None


def wait_for_coordinator(host: str, port: int, timeout_s: float) -> None:
    """Processes other than 0 wait until the coordinator accepts TCP connections, then let JAX connect."""
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt"
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(timeout_s, 0.1))):
                return
        except socket.gaierror as error:
            raise ConfigError(f"cannot resolve the coordinator host {host!r}: {error.strerror}") from None
        except OSError as error:
            last_error = error.strerror or str(error)
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"cannot reach the coordinator (process 0) at {host}:{port} within {timeout_s:.0f} s "
                f"({last_error}); start process 0 with the same --coordinator, and check the address and firewall"
            )
        time.sleep(0.2)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick); another program could still take it before us."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_variants(variants: Sequence[Variant]) -> None:
    for variant in variants:
        if variant.strategy is Strategy.SINGLE:
            raise ConfigError(f"{variant.name}: strategy single runs on one device and cannot span processes")
        if variant.strategy is Strategy.XMAP:
            raise ConfigError(f"{variant.name}: xmap is not run across processes (its driver places arrays from one)")


def local_device_request(mesh: Mesh, num_processes: int | None) -> int | None:
    """Simulated CPU devices each process needs: its share of the mesh, when the process count is known."""
    if num_processes is None:
        return None
    if mesh.devices % num_processes:
        raise ConfigError(
            f"mesh {mesh} has {mesh.devices} devices, not divisible among {num_processes} processes; "
            f"every process must hold the same number of mesh devices"
        )
    return mesh.devices // num_processes


def check_mesh(mesh: Mesh, devices_per_process: Mapping[int, int]) -> None:
    """The mesh must span every device of every process: a process with no device in it could take no part."""
    total = sum(devices_per_process.values())
    if mesh.devices == total:
        return
    counts = sorted(set(devices_per_process.values()))
    each = f"{counts[0]} each" if len(counts) == 1 else f"per process {dict(devices_per_process)}"
    raise ConfigError(
        f"mesh {mesh} needs {mesh.devices} devices, but the {len(devices_per_process)} processes have {total} "
        f"({each}); use a mesh of {total} devices, or {mesh.devices // max(len(devices_per_process), 1)} devices "
        f"per process (on CPU: --devices-per-process, or XLA_FLAGS=--xla_force_host_platform_device_count)"
    )


def check_cpu_collectives(jaxlib_version: str, platform: str, local_devices: int, process_count: int) -> None:
    """jaxlib 0.4.30's gloo CPU collectives deadlock with more than one local device per process.

    Its GlooCollectives::GetCommunicator holds one mutex while connectFullMesh waits for the peers, so two local
    devices of one clique (an mp group inside a process) wait for each other for ever; measured here, and
    later jaxlibs (0.10.2 tested) create communicators without that lock. Versions in between are untested; which
    versions are affected is model.compat's to say."""
    deadlocks = compat.jaxlib_cpu_collectives_deadlock(jaxlib_version)
    if platform == "cpu" and process_count > 1 and local_devices > 1 and deadlocks:
        raise ConfigError(
            f"jaxlib {jaxlib_version}'s CPU (gloo) collectives deadlock with {local_devices} devices per process; "
            f"use one CPU device per process here (e.g. --devices-per-process 1), or a newer jax"
        )


# --- who is missing: the watchdog's diagnosis ----------------------------------------------------------------


@dataclass(frozen=True)
class PeerView:
    """What one process last saw of a peer through the key-value store."""

    silent_s: float  # seconds since its heartbeat last changed (since start if never seen)
    progress: int  # its count of phases and steps, comparable across processes (all run the same sequence)
    phase: str


@dataclass(frozen=True)
class Diagnosis:
    failed_processes: tuple[int, ...]  # empty: unknown
    message: str


def diagnose(
    me: int,
    my_progress: int,
    my_phase: str,
    stalled_s: float,
    peers: Mapping[int, PeerView],
    stale_s: float,
    coordinator_error: str | None = None,
) -> Diagnosis:
    """Name the processes this one is waiting for: silent ones first, else live ones that fell behind."""
    head = f"process {me} made no progress for {stalled_s:.0f} s at '{my_phase}'"
    if coordinator_error is not None and me != 0:
        return Diagnosis((0,), f"{head}: the coordinator (process 0) is unreachable: {coordinator_error}")
    silent = {p: v for p, v in peers.items() if v.silent_s >= stale_s}
    if silent:
        why = "; ".join(
            f"process {p} sent no heartbeat for {v.silent_s:.0f} s (exited, killed or frozen), last at '{v.phase}'"
            for p, v in sorted(silent.items())
        )
        return Diagnosis(tuple(sorted(silent)), f"{head}: {why}")
    behind = {p: v for p, v in peers.items() if v.progress < my_progress}
    if behind:
        why = "; ".join(f"process {p} is alive but stuck at '{v.phase}'" for p, v in sorted(behind.items()))
        return Diagnosis(tuple(sorted(behind)), f"{head}: {why}")
    others = ", ".join(str(p) for p in sorted(peers)) or "none"
    return Diagnosis(
        tuple(sorted(peers)), f"{head}: so did every other process ({others}): a collective never completed"
    )


# --- records: every process reports, process 0 writes ---------------------------------------------------------


def merge_reports(
    record: dict[str, Any], reports: Mapping[int, Mapping[str, Any] | None], missing_reasons: Mapping[int, str]
) -> dict[str, Any]:
    """Process 0's record, ``ok`` only if every process reported ``ok``; else naming who failed and how.

    ``reports`` maps every process id to its report ({"status", "error"}), or None where none arrived."""
    failures: dict[int, str] = {}
    for pid, report in sorted(reports.items()):
        if report is None:
            failures[pid] = missing_reasons.get(pid, "sent no report")
        elif report.get("status") != "ok":
            failures[pid] = str(report.get("error"))
    merged = dict(record, process_count=len(reports), failed_processes=sorted(failures))
    if failures:
        # processes that sent nothing first: they are the cause; the others' errors are usually the effect
        order = sorted(failures, key=lambda p: (reports[p] is not None, p))
        merged["status"] = "failed"
        merged["error"] = "; ".join(f"process {p}: {failures[p]}" for p in order)
        merged["process_errors"] = {str(p): failures[p] for p in order}
    return merged


# --- the session: one per process ------------------------------------------------------------------------------


_SESSION: Session | None = None


def is_writer() -> bool:
    """Whether this process writes records, reports and traces: process 0, or the only process."""
    return _SESSION is None or _SESSION.process_id == 0


class Session:
    """This process's part in a multi-process run: coordinates, heartbeat, watchdog, record agreement."""

    def __init__(self, timeout_s: float, describe_coordinator: str):
        self.timeout_s = timeout_s
        self.stale_s = max(STALE_BEATS * BEAT_S, min(timeout_s / 2, 30.0))
        self.describe_coordinator = describe_coordinator
        self.process_id, self.process_count = 0, 1  # known after initialisation
        self.client: Any = None
        self.progress_count = 0
        self.phase = "initialise jax.distributed"
        self.last_progress = time.monotonic()
        self.paused = 0
        self.peer_missing = False  # a peer sent no report: shutting down cleanly would wait for it
        self.failure_context: tuple[Callable[[], dict[str, Any]], Path] | None = None
        self.report_seq = 0
        self.variant, self.steps_done = "", 0
        self.started = time.monotonic()
        self.peers: dict[int, tuple[str, float, int, str]] = {}  # pid -> (raw beat, last change, progress, phase)
        self.coordinator_error: str | None = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._watch, name="bench-watchdog", daemon=True).start()

    # progress and phases

    def set_phase(self, phase: str, announce: bool = True) -> None:
        with self.lock:
            self.progress_count += 1
            self.phase, self.last_progress = phase, time.monotonic()
        if announce and self.process_count > 1:
            print(f"[process {self.process_id} of {self.process_count}] {phase}", file=sys.stderr, flush=True)

    def step_done(self) -> None:
        if self.steps_done == 0:  # announced once: the first step is the first collective with every peer
            self.set_phase(f"{self.variant}: warm-up and timed steps")
        else:
            with self.lock:
                self.progress_count += 1
                self.last_progress = time.monotonic()
        self.steps_done += 1

    @contextlib.contextmanager
    def bounded_elsewhere(self) -> Iterator[None]:
        """For waits that bound themselves: the watchdog stands aside."""
        with self.lock:
            self.paused += 1
        try:
            yield
        finally:
            with self.lock:
                self.paused -= 1
                self.last_progress = time.monotonic()

    # the watchdog

    def _watch(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                stalled_s = time.monotonic() - self.last_progress
                expired = not self.paused and stalled_s > self.timeout_s
            if expired:
                self._expire(stalled_s)

    def diagnosis(self, stalled_s: float) -> Diagnosis:
        if self.client is None:
            missing = "" if self.process_id == 0 else f" ({self.describe_coordinator} is process 0)"
            return Diagnosis(
                (),
                f"process {self.process_id}: jax.distributed did not start within {stalled_s:.0f} s: not every "
                f"process connected to the coordinator{missing}; check that each process id was started once",
            )
        now = time.monotonic()
        with self.lock:
            views = {
                pid: PeerView(now - changed, progress, phase)
                for pid, (_, changed, progress, phase) in self.peers.items()
            }
            for pid in range(self.process_count):
                if pid != self.process_id and pid not in views:
                    views[pid] = PeerView(now - self.started, -1, "never seen")
            mine = (self.progress_count, self.phase)
        return diagnose(self.process_id, *mine, stalled_s, views, self.stale_s, self.coordinator_error)

    def _expire(self, stalled_s: float) -> None:
        found = self.diagnosis(stalled_s)
        self.fail_now(found, f"error: {found.message}; giving up after --distributed-timeout {self.timeout_s:.0f} s")

    def fail_now(self, found: Diagnosis, message: str) -> None:
        """Say who failed, write the failed record (process 0), and exit without waiting for anyone."""
        if self.process_id == 0 and self.failure_context is not None:
            try:
                self._write_failed_record(found, message)
            except Exception as error:  # exiting matters more than the record
                message += f" (the failed record could not be written: {error})"
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(EXIT_PEER_FAILURE)

    def _write_failed_record(self, found: Diagnosis, message: str) -> None:
        from bench.records.store import append_record

        make_record, out = self.failure_context
        record = make_record(message.removeprefix("error: "))
        record.update(
            failed_processes=list(found.failed_processes),
            process_count=self.process_count,
            failure_phase=self.phase,
        )
        append_record(out, record)
        print(f"{record['variant']}: FAILED {record['error']}", file=sys.stderr, flush=True)

    # the heartbeat, through the coordination service's key-value store

    def _key(self, *parts: object) -> str:
        return "/".join([KV_PREFIX, *map(str, parts)])

    def _beat(self) -> None:
        beat = 0
        while not self.stop.wait(BEAT_S):
            beat += 1
            with self.lock:
                value = json.dumps({"beat": beat, "progress": self.progress_count, "phase": self.phase})
            try:
                self.client.key_value_set(self._key("pulse", self.process_id), value, allow_overwrite=True)
                seen = self.client.key_value_dir_get(self._key("pulse") + "/")
            except Exception as error:  # the coordinator (process 0) is gone, or going
                with self.lock:
                    self.coordinator_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                continue
            self._saw(seen)

    def _saw(self, seen: list[tuple[str, str]]) -> None:
        now = time.monotonic()
        with self.lock:
            self.coordinator_error = None
            for key, raw in seen:
                pid = int(key.rsplit("/", 1)[-1])
                if pid == self.process_id:
                    continue
                value = json.loads(raw)
                old = self.peers.get(pid)
                changed = now if old is None or old[0] != raw else old[1]
                self.peers[pid] = (raw, changed, int(value["progress"]), str(value["phase"]))

    # record agreement

    def begin_variant(self, name: str, make_failed_record: Callable[[str], dict[str, Any]], out: Path | None) -> None:
        """The watchdog writes ``make_failed_record(error)`` to ``out`` if this variant never ends."""
        self.failure_context = (make_failed_record, out) if out is not None else None
        self.variant, self.steps_done = name, 0
        self.set_phase(f"{name}: compile, analyse, first step")

    def agree(self, record: dict[str, Any]) -> dict[str, Any]:
        """Publish this process's outcome; process 0 waits (bounded) for everyone's and merges them."""
        self.report_seq += 1
        self.set_phase(f"{record['variant']}: report", announce=False)
        report = {"status": record.get("status"), "error": record.get("error")}
        try:
            self.client.key_value_set(self._key("report", self.report_seq, self.process_id), json.dumps(report))
        except Exception as error:  # the coordination service lives in process 0
            found = Diagnosis((0,), f"process {self.process_id} cannot report to the coordinator (process 0): {error}")
            self.fail_now(found, f"error: {found.message}")
        self.failure_context = None
        if self.process_id != 0:
            return dict(record, process_count=self.process_count)
        with self.bounded_elsewhere():
            reports, reasons = self._collect_reports(report)
        if any(r is None for r in reports.values()):
            self.peer_missing = True
        return merge_reports(record, reports, reasons)

    def _collect_reports(self, own: dict[str, Any]) -> tuple[dict[int, Any], dict[int, str]]:
        """Everyone's report for this variant; a peer that falls silent or runs past the timeout is given up."""
        reports: dict[int, Any] = {0: own}
        waiting = set(range(1, self.process_count))
        deadline = time.monotonic() + self.timeout_s
        prefix = self._key("report", self.report_seq) + "/"
        while True:
            with contextlib.suppress(Exception):  # the service in trouble: the deadline still ends the wait
                for key, raw in self.client.key_value_dir_get(prefix):
                    pid = int(key.rsplit("/", 1)[-1])
                    if pid in waiting:
                        reports[pid] = json.loads(raw)
                        waiting.discard(pid)
            silent = self._silent_peers() & waiting
            if not waiting or silent or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        reasons = {pid: self._missing_reason(pid, pid in silent) for pid in waiting}
        return reports | dict.fromkeys(waiting), reasons

    def _missing_reason(self, pid: int, silent: bool) -> str:
        now = time.monotonic()
        with self.lock:
            _, changed, _, phase = self.peers.get(pid, ("", self.started, -1, "never seen"))
        if silent:
            return (
                f"sent no report: no heartbeat for {now - changed:.0f} s (exited, killed or frozen), last at '{phase}'"
            )
        return f"sent no report within {self.timeout_s:.0f} s, last at '{phase}'"

    def _silent_peers(self) -> set[int]:
        now = time.monotonic()
        with self.lock:
            heard = {pid: now - changed for pid, (_, changed, _, _) in self.peers.items()}
        never = now - self.started
        return {p for p in range(self.process_count) if p != self.process_id and heard.get(p, never) >= self.stale_s}

    # shared values

    def share_from_process0(self, name: str, value: str | None) -> str:
        """Process 0's ``value`` on every process (through the key-value store, bounded by the timeout)."""
        key = self._key("shared", name)
        if self.process_id == 0:
            self.client.key_value_set(key, value)
            return value
        with self.bounded_elsewhere():
            try:
                return self.client.blocking_key_value_get(key, int(self.timeout_s * 1000))
            except Exception as error:
                found = Diagnosis((0,), f"process 0 did not share {name!r} within {self.timeout_s:.0f} s: {error}")
                self.fail_now(found, f"error: {found.message}")

    # the end

    def close(self) -> None:
        """Shut jax.distributed down, bounded; when a peer vanished, do not wait for it: exit now."""
        import jax

        self.set_phase("shut down", announce=False)
        self.stop.set()
        if self.peer_missing:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_PEER_FAILURE)
        # The watchdog is stopped; a shutdown barrier that never completes is bounded by a timer instead.
        timer = threading.Timer(self.timeout_s, self._expire, args=(self.timeout_s,))
        timer.daemon = True
        timer.start()
        try:
            jax.distributed.shutdown()
        finally:
            timer.cancel()


def _jax_initialize(coords: Coordinates, timeout_s: float) -> None:
    import jax

    limits = {"initialization_timeout": int(timeout_s) + JAX_LIMIT_MARGIN_S}
    accepted = inspect.signature(jax.distributed.initialize).parameters
    # jax 0.10.2 (not 0.4.30) declares a silent peer dead after a heartbeat limit and aborts the job without
    # naming it; keep that limit past our own timeout, whose message does name it.
    if "heartbeat_timeout_seconds" in accepted:
        limits["heartbeat_timeout_seconds"] = int(timeout_s) + JAX_LIMIT_MARGIN_S
    if "shutdown_timeout_seconds" in accepted:
        limits["shutdown_timeout_seconds"] = int(timeout_s)
    try:
        jax.distributed.initialize(coords.coordinator_address, coords.num_processes, coords.process_id, **limits)
    except ValueError as error:  # JAX found neither flags nor a cluster environment
        raise ConfigError(
            f"--distributed: {error} Give --coordinator HOST:PORT, --num-processes N and --process-id I, or run "
            f"where JAX detects the cluster (TPU VM, SLURM, Open MPI, Kubernetes)"
        ) from None


def _use_gloo_on_cpu() -> None:
    """CPU collectives across processes go over gloo (TCP). jax 0.4.30 defaults to 'none' (no cross-process
    collectives at all); current JAX defaults to gloo. The option has the same name in both."""
    import jax

    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, KeyError, ValueError) as error:  # a JAX without the option: say so, carry on
        print(f"warning: could not select gloo CPU collectives: {error}", file=sys.stderr)


def start(args: argparse.Namespace, mesh: Mesh, variants: Sequence[Variant]) -> Path:
    """``bench run --distributed``: checks, then jax.distributed, before JAX touches a device.

    Returns the run directory: ``--out``, or process 0's new one, shared with every process (only process 0
    writes into it)."""
    global _SESSION
    from bench.measure.devices import request_cpu_devices

    coords = coordinates_from_args(args)
    if args.distributed_timeout <= 0:
        raise ConfigError(f"--distributed-timeout must be positive, got {args.distributed_timeout}")
    if args.resume:
        raise ConfigError("--resume is not supported with --distributed: the processes could skip different variants")
    check_variants(variants)
    per_process = local_device_request(mesh, coords.num_processes)
    if per_process is not None:
        request_cpu_devices(per_process)
    if coords.coordinator_address is not None and coords.process_id is not None:
        host, port = parse_address(coords.coordinator_address)
        if coords.process_id == 0:
            check_port_free(port)
        else:
            wait_for_coordinator(host, port, args.distributed_timeout)
    _use_gloo_on_cpu()
    session = Session(args.distributed_timeout, f"the coordinator {coords.coordinator_address or '(auto-detected)'}")
    _SESSION = session
    _jax_initialize(coords, args.distributed_timeout)
    _started(session, mesh)
    if args.out:
        return Path(args.out)
    from bench.records.context import new_run_dir

    return Path(session.share_from_process0("run_dir", str(new_run_dir()) if session.process_id == 0 else None))


def _started(session: Session, mesh: Mesh) -> None:
    import jax
    import jaxlib
    from jax._src.distributed import global_state

    session.client = global_state.client
    session.process_id, session.process_count = jax.process_index(), jax.process_count()
    atexit.register(session.close)  # registered after JAX's own shutdown hook, so it runs first
    session.set_phase("jax.distributed started")
    per_process: dict[int, int] = {}
    for device in jax.devices():
        per_process[device.process_index] = per_process.get(device.process_index, 0) + 1
    check_mesh(mesh, per_process)
    check_cpu_collectives(jaxlib.__version__, jax.default_backend(), jax.local_device_count(), jax.process_count())
    threading.Thread(target=session._beat, name="bench-heartbeat", daemon=True).start()


# hooks for bench.run: no-ops in a single-process run


def begin_variant(name: str, make_failed_record: Callable[[str], dict[str, Any]], out: Path | None) -> None:
    if _SESSION is not None:
        _SESSION.begin_variant(name, make_failed_record, out)


def step_done() -> None:
    if _SESSION is not None:
        _SESSION.step_done()


@contextlib.contextmanager
def own_trace_dir(trace_dir: Path | None) -> Iterator[Path | None]:
    """Where this process traces: ``trace_dir`` on process 0. The traced steps are collective, so every process
    runs them, but the others trace into a temporary directory, deleted afterwards: process 0 keeps the trace."""
    if trace_dir is None or is_writer():
        yield trace_dir
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"gptj-bench-trace-process{_SESSION.process_id}-") as scratch:
        yield Path(scratch)


def agree(record: dict[str, Any]) -> dict[str, Any]:
    """Every record carries ``process_count``; in a multi-process run it is ``ok`` only if ``ok`` everywhere."""
    if _SESSION is None:
        import jax

        return dict(record, process_count=jax.process_count())
    return _SESSION.agree(record)
