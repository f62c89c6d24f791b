"""The pure half of profiling: parse what XProf's tools answer, and summarise op self times (no JAX, no plugin).

``bench.measure.profile`` captures a trace and calls the profiler plugin's converters; what they return is read
and summarised here, and the report reads the resulting record fields with the same definitions. Times are op self
times summed over every device in the trace, so shares are shares of busy device time, not of wall-clock step time
(the capture module's docstring says why collectives look large on simulated CPU devices).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import shlex
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.records.collectives import PROFILER_COLLECTIVE_STEMS, PROFILER_POINT_TO_POINT_TOKENS
from bench.records.schema import Profile, section_fields

VIEWER_INSTALL_HINT = "pip install tensorboard==2.21.0  (serves the plugin; xprof's own server cannot bind localhost)"
# xprof's op tables carry idle time as an op of this type (seen in framework_op_stats); it is not op time.
IDLE_CATEGORY = "IDLE"


class UnknownToolFormatError(ValueError):
    """A profiler tool answered in a shape this module does not know how to read."""


class ProfileTool(enum.Enum):
    """Which plugin tool the op times came from."""

    HLO_STATS = "hlo_stats"
    TRACE_VIEWER = "trace_viewer"


@dataclasses.dataclass(frozen=True)
class OpRow:
    """One HLO op's self time as a plugin tool reports it, summed over its occurrences on every device."""

    name: str
    program: str  # HLO module name (trace_viewer) or XProf's program id (hlo_stats)
    category: str  # HLO opcode (trace_viewer) or XProf's HLO op category (hlo_stats)
    occurrences: int
    self_time_us: float


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One HLO op's self time, summed over its occurrences on every device in the trace."""

    name: str
    program: str  # HLO module name (trace_viewer) or XProf's program id (hlo_stats)
    category: str  # HLO opcode (trace_viewer) or XProf's HLO op category (hlo_stats)
    occurrences: int
    self_time_us: float
    share: float  # of total_op_time_us
    is_collective: bool

    def as_json(self) -> dict[str, Any]:
        """JSON-able fields: names as strings, counts and times as numbers."""
        return {
            "name": str(self.name),
            "program": str(self.program),
            "category": str(self.category),
            "occurrences": int(self.occurrences),
            "self_time_s": float(self.self_time_us) * 1e-6,
            "op_time_frac": float(self.share),
            "is_collective": bool(self.is_collective),
        }


@dataclasses.dataclass(frozen=True)
class TraceSummary:
    top_ops: tuple[OpTime, ...]
    op_count: int
    total_op_time_us: float
    collective_time_us: float
    collective_share: float
    compute_share: float
    tool_used: ProfileTool
    trace_path: Path

    def as_record_fields(self) -> dict[str, Any]:
        """Flat, JSON-able fields for a benchmark record: counts and times as numbers, the top ops as a list."""
        return section_fields(
            Profile,
            profile_trace_path=str(self.trace_path),
            profile_tool=self.tool_used.value,
            profile_op_count=int(self.op_count),
            profile_op_time_s_total=float(self.total_op_time_us) * 1e-6,
            profile_collective_time_s_total=float(self.collective_time_us) * 1e-6,
            profile_collective_frac=float(self.collective_share),
            profile_compute_frac=float(self.compute_share),
            profile_top_ops=[op.as_json() for op in self.top_ops],
        )


# ---------------------------------------------------------------------------------------------------- viewer


def tensorboard_command(log_dir: Path, port: int = 6006) -> str:
    """The command that serves ``log_dir``'s profiles on http://localhost:PORT only (Profile tab).

    TensorBoard is used because ``--host localhost`` binds the loopback interface; ``xprof --logdir DIR`` works
    without TensorBoard but its 2.24 server has no host flag and listens on every interface (and on gRPC 50051).
    Needs ``tensorboard`` next to the plugin: see VIEWER_INSTALL_HINT.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    return f"tensorboard --logdir {shlex.quote(str(log_dir))} --host localhost --port {port}"


def trace_log_dir(trace_path: str | Path) -> Path:
    """The TensorBoard log directory of an xplane file: LOG_DIR/plugins/profile/RUN/HOST.xplane.pb."""
    path = Path(trace_path)
    parents = path.parents
    if len(parents) >= 4 and parents[1].name == "profile" and parents[2].name == "plugins":
        return parents[3]
    return path.parent


# ---------------------------------------------------------------------------------------------------- formulas


def is_collective(*labels: str) -> bool:
    """True when any label (opcode, category or op name) names a cross-device collective."""
    for label in labels:
        text = label.lower().replace("_", "-")
        if any(stem in text for stem in PROFILER_COLLECTIVE_STEMS):
            return True
        if PROFILER_POINT_TO_POINT_TOKENS & set(re.split(r"[^a-z0-9]+", text)):
            return True
    return False


def self_times_us(events: Sequence[tuple[float, float]]) -> list[float]:
    """Self time of each (start_us, duration_us) event on one thread: its duration less its direct children's.

    Events on one thread nest (a while op's body ops run inside it); an event starting before its parent ends is
    its child. This is the Chrome trace viewer's "self time" definition.
    """
    order = sorted(range(len(events)), key=lambda i: (events[i][0], -events[i][1]))
    self_us = [duration for _, duration in events]
    open_stack: list[int] = []  # indices of events not yet ended, innermost last
    for i in order:
        start, duration = events[i]
        while open_stack and sum(events[open_stack[-1]]) <= start:
            open_stack.pop()
        if open_stack:
            self_us[open_stack[-1]] -= duration
        open_stack.append(i)
    return self_us


def covered_share(op_spans: Sequence[tuple[float, float]], step_spans: Sequence[tuple[float, float]]) -> float | None:
    """The share of the steps' wall time during which at least one op event is open: (start, duration) spans.

    Below 1, device work ran outside any op's event: on XLA CPU (jax 0.10.2) a plain ``dot`` thunk's event ends
    when it has handed its GEMM to Eigen's thread pool, so the weight-gradient GEMMs of a block run in gaps that
    no op claims (the CPU block, reports/cpu-block: op events covered 75-80% of the block's steps while the summed op
    times exceeded the steps by 7-16%, concurrent thunks overlapping). Per-op and per-component times are then a
    distorted picture.
    """
    wall = sum(duration for _, duration in step_spans)
    if wall <= 0 or not op_spans:
        return None
    steps = [(start, start + duration) for start, duration in step_spans]
    covered, end = 0.0, -math.inf
    for start, stop in sorted((s, s + d) for s, d in op_spans):
        # clip to the steps: op time outside every step window is not step time
        for low, high in steps:
            a, b = max(start, low, end), min(stop, high)
            if b > a:
                covered += b - a
        end = max(end, stop)
    return covered / wall


def op_shares(ops: Iterable[tuple[float, bool]]) -> tuple[float, float, float, float]:
    """(total_us, collective_us, collective_share, compute_share) of (self_time_us, is_collective) pairs.

    compute_share is every non-collective op's share, so the two shares sum to 1 when any time was recorded.
    """
    total_us = 0.0
    collective_us = 0.0
    for self_us, collective in ops:
        total_us += self_us
        collective_us += self_us if collective else 0.0
    if total_us <= 0:
        return 0.0, 0.0, 0.0, 0.0
    collective_share = collective_us / total_us
    return total_us, collective_us, collective_share, 1.0 - collective_share


# ---------------------------------------------------------------------------------------------------- tool formats


def parse_gviz_tables(text: str, tool: str) -> list[list[dict[str, Any]]]:
    """Rows (as {column id: value}) of each gviz DataTable in a tool's JSON: one table or a list of tables."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise UnknownToolFormatError(f"{tool}: expected gviz DataTable JSON, got {text[:80]!r}") from err
    tables = payload if isinstance(payload, list) else [payload]
    parsed = []
    for table in tables:
        if not (isinstance(table, dict) and all(isinstance(table.get(key), list) for key in ("cols", "rows"))):
            raise UnknownToolFormatError(f"{tool}: expected gviz DataTables with 'cols' and 'rows', got {text[:80]!r}")
        ids = [col["id"] for col in table["cols"]]
        parsed.append(
            [
                dict(zip(ids, (cell.get("v") if cell else None for cell in row["c"]), strict=True))
                for row in table["rows"]
            ]
        )
    return parsed


HLO_STATS_COLUMNS = ("program_id", "category", "hlo_op_name", "occurrences", "total_self_time")


def ops_from_hlo_stats(rows: Sequence[Mapping[str, Any]]) -> list[OpRow]:
    """One OpRow per hlo_stats row (``total_self_time`` is in microseconds), idle rows left out."""
    if rows and not set(HLO_STATS_COLUMNS) <= set(rows[0]):
        raise UnknownToolFormatError(f"hlo_stats: expected columns {HLO_STATS_COLUMNS}, got {sorted(rows[0])}")
    return [
        OpRow(
            name=str(row["hlo_op_name"]),
            program=str(row["program_id"]),
            category=str(row["category"]),
            occurrences=int(row["occurrences"] or 0),
            self_time_us=float(row["total_self_time"] or 0.0),
        )
        for row in rows
        if row["category"] != IDLE_CATEGORY
    ]


# `  [ROOT ]name = <shape> opcode(` ; the shape may be a tuple, so take the first ` word(` after the `=`.
def hlo_op_events(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The complete ("X") events that time one HLO op: the ones carrying ``hlo_module`` and ``hlo_op``."""
    events = trace.get("traceEvents") if isinstance(trace, Mapping) else None
    if not isinstance(events, list):
        raise UnknownToolFormatError("trace_viewer: expected Chrome trace JSON with a 'traceEvents' list")
    return [
        event
        for event in events
        if event.get("ph") == "X" and "hlo_op" in event.get("args", {}) and "hlo_module" in event.get("args", {})
    ]


def ops_from_trace_events(events: Sequence[Mapping[str, Any]], opcodes: Mapping[tuple[str, str], str]) -> list[OpRow]:
    """One OpRow per (module, op); self times are computed per thread, then summed."""
    by_thread: dict[tuple[Any, Any], list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        by_thread[(event.get("pid"), event.get("tid"))].append(event)
    occurrences: dict[tuple[str, str], int] = defaultdict(int)
    self_us: dict[tuple[str, str], float] = defaultdict(float)
    for thread_events in by_thread.values():
        spans = [(float(event["ts"]), float(event["dur"])) for event in thread_events]  # Chrome trace: microseconds
        for event, event_self_us in zip(thread_events, self_times_us(spans), strict=True):
            key = (event["args"]["hlo_module"], event["args"]["hlo_op"])
            occurrences[key] += 1
            self_us[key] += event_self_us
    return [
        OpRow(
            name=op,
            program=module,
            category=opcodes.get((module, op), "unknown"),
            occurrences=occurrences[(module, op)],
            self_time_us=self_us[(module, op)],
        )
        for module, op in self_us
    ]


# ---------------------------------------------------------------------------------------------------- summary


def summarise_ops(ops: Sequence[OpRow], top_n: int, tool: ProfileTool, trace_path: Path) -> TraceSummary:
    """Rank ``ops`` by self time and split their total into collective and compute time."""
    # The op name is a last resort for async collectives whose category is a generic "async-start".
    flagged = [(op, is_collective(op.category, op.name)) for op in ops]
    total_us, collective_us, collective_share, compute_share = op_shares((op.self_time_us, c) for op, c in flagged)
    ranked = sorted(flagged, key=lambda item: item[0].self_time_us, reverse=True)[:top_n]
    top = tuple(
        OpTime(**dataclasses.asdict(op), share=op.self_time_us / total_us if total_us > 0 else 0.0, is_collective=c)
        for op, c in ranked
    )
    return TraceSummary(
        top_ops=top,
        op_count=len(ops),
        total_op_time_us=total_us,
        collective_time_us=collective_us,
        collective_share=collective_share,
        compute_share=compute_share,
        tool_used=tool,
        trace_path=trace_path,
    )
