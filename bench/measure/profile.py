"""Capture an XProf trace of a few training steps and summarise where the time went.

The summary comes from the profiler plugin's own converters (``xspace_to_tool_data`` of the ``xprof`` package,
which ``tensorboard-plugin-profile`` 2.24 re-exports), so the numbers are the ones TensorBoard's Profile tab shows:

- ``hlo_stats`` (a gviz DataTable, JSON) is the per-HLO-op table built from device planes. It is filled on GPU/TPU.
- On a CPU-only trace XProf builds no op statistics (``hlo_stats`` has no rows, ``overview_page`` says
  ``CPU_ONLY``), but the XLA:CPU thunk runtime still emits one event per executed HLO op with ``hlo_module`` and
  ``hlo_op`` arguments. We then read the plugin's ``trace_viewer`` tool (Chrome trace JSON) and look each op's
  opcode up in the module's HLO text from the plugin's ``graph_viewer`` tool.
  jaxlib 0.4.30's default CPU client emits no per-op events (``summarise_trace`` then raises ``NoOpEventsError``);
  with ``XLA_FLAGS=--xla_cpu_use_thunk_runtime=true`` it does, and the same path works.

Times are op self times summed over every device in the trace, so shares are shares of busy device time, not of
wall-clock step time: idle gaps and host-side work are in neither. On simulated CPU devices a collective's time is
mostly its rendezvous wait for the slowest participant, which is why it looks large there; and XLA:CPU may run one
device's independent ops on several threads at once, so a while loop whose body ran partly on other threads keeps
that waiting as self time and the summed op time can exceed the wall time.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from bench.analysis.profile import tensorboard_command as tensorboard_command  # shared with the report

PLUGIN_INSTALL_HINT = "pip install tensorboard-plugin-profile==2.24.2  (it brings xprof==2.24.2)"
VIEWER_INSTALL_HINT = "pip install tensorboard==2.21.0  (serves the plugin; xprof's own server cannot bind localhost)"
XPLANE_SUFFIX = ".xplane.pb"
STEP_NAME = "train"

# HLO opcodes that move data between devices (XLA HloOpcode names; async forms add -start/-done, which substring
# matching covers). send/recv are matched as whole tokens so that names like "sender" do not count.
COLLECTIVE_OPCODE_STEMS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
    "collective-broadcast",
)
POINT_TO_POINT_TOKENS = frozenset({"send", "recv"})
# xprof's op tables carry idle time as an op of this type (seen in framework_op_stats); it is not op time.
IDLE_CATEGORY = "IDLE"


class ProfilerPluginMissingError(ImportError):
    """The profiler plugin (xprof / tensorboard-plugin-profile) cannot be imported in this environment."""


class UnknownToolFormatError(ValueError):
    """A profiler tool answered in a shape this module does not know how to read."""


class NoOpEventsError(RuntimeError):
    """The trace holds no per-HLO-op timings to summarise."""


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
        return dataclasses.asdict(self)


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
        """Flat, JSON-able fields for a benchmark record."""
        return {
            "profile_trace_path": str(self.trace_path),
            "profile_tool": self.tool_used.value,
            "profile_op_count": self.op_count,
            "profile_total_op_time_us": self.total_op_time_us,
            "profile_collective_time_us": self.collective_time_us,
            "profile_collective_share": self.collective_share,
            "profile_compute_share": self.compute_share,
            "profile_top_ops": [op.as_json() for op in self.top_ops],
        }


# ---------------------------------------------------------------------------------------------------- capture


def _xplane_mtimes_ns(log_dir: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in log_dir.glob(f"plugins/profile/*/*{XPLANE_SUFFIX}")}


def capture_trace(step_fn: Callable[..., Any], args: Sequence[Any], steps: int, log_dir: Path) -> Path:
    """Run ``step_fn(*args)`` ``steps`` times under the profiler and return the new ``.xplane.pb``.

    ``step_fn`` should already be compiled (call it once before), or compilation lands in the trace. Every step
    reuses ``args``, so ``step_fn`` must not donate them. Each step is one ``StepTraceAnnotation`` named "train",
    which is what XProf's step-time tools group by, and is waited for so the trace holds the device work.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    before = _xplane_mtimes_ns(log_dir)
    with jax.profiler.trace(str(log_dir)):
        for step in range(steps):
            with jax.profiler.StepTraceAnnotation(STEP_NAME, step_num=step):
                jax.block_until_ready(step_fn(*args))
    # JAX names the run folder by the second, so a capture within the same second rewrites the previous file.
    new = sorted(path for path, mtime_ns in _xplane_mtimes_ns(log_dir).items() if before.get(path) != mtime_ns)
    if len(new) != 1:
        raise RuntimeError(f"expected one new *{XPLANE_SUFFIX} under {log_dir}/plugins/profile, found {new}")
    return new[0]


# ---------------------------------------------------------------------------------------------------- formulas


def is_collective(*labels: str) -> bool:
    """True when any label (opcode, category or op name) names a cross-device collective."""
    for label in labels:
        text = label.lower().replace("_", "-")
        if any(stem in text for stem in COLLECTIVE_OPCODE_STEMS):
            return True
        if POINT_TO_POINT_TOKENS & set(re.split(r"[^a-z0-9]+", text)):
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


# ---------------------------------------------------------------------------------------------------- plugin I/O


def load_converter() -> ModuleType:
    """The plugin's ``raw_to_tool_data`` module: ``xprof.convert`` (2.24+), else the older package path."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError as new_err:
        try:
            from tensorboard_plugin_profile.convert import raw_to_tool_data
        except ImportError as old_err:
            raise ProfilerPluginMissingError(
                f"the XProf profiler plugin is not importable here ({new_err}; {old_err}); {PLUGIN_INSTALL_HINT}"
            ) from old_err
    return raw_to_tool_data


def _tool_data(converter: ModuleType, xplane_path: Path, tool: str, params: Mapping[str, Any]) -> str:
    data, _content_type = converter.xspace_to_tool_data([str(xplane_path)], tool, params)
    if data is None:
        raise UnknownToolFormatError(f"profiler tool {tool!r} returned nothing for {xplane_path}")
    if isinstance(data, bytes):
        return data.decode("utf-8")
    if isinstance(data, str):
        return data
    raise UnknownToolFormatError(f"profiler tool {tool!r} returned {type(data).__name__}, expected str or bytes")


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
_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(")


def opcodes_from_hlo_text(text: str) -> dict[str, str]:
    """{instruction name: opcode} for every instruction in an HLO module's text."""
    opcodes = {}
    for line in text.splitlines():
        match = _HLO_INSTRUCTION.match(line)
        if match:
            opcodes[match.group(1)] = match.group(2)
    return opcodes


def _module_opcodes(converter: ModuleType, xplane_path: Path, modules: set[str]) -> dict[tuple[str, str], str]:
    """{(module, op): opcode} from the HLO text of each traced module.

    Listing the tools makes the plugin write one ``<module>(<program id>).hlo_proto.pb`` per program beside the
    xplane; its own HLO module list works the same way. Trace events name only the module, so programs that share
    a name are merged; an op whose opcode differs between them gets "a/b".
    """
    converter.xspace_to_tool_names([str(xplane_path)])
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for proto in sorted(xplane_path.parent.glob("*.hlo_proto.pb")):
        program = proto.name.removesuffix(".hlo_proto.pb")
        module = re.sub(r"\(\d+\)$", "", program)
        if module not in modules:
            continue
        options = {"graph_viewer_options": {"module_name": program, "type": "short_txt", "node_name": ""}}
        text = _tool_data(converter, xplane_path, "graph_viewer", options)
        for op, opcode in opcodes_from_hlo_text(text).items():
            found[(module, op)].add(opcode)
    return {key: "/".join(sorted(opcodes)) for key, opcodes in found.items()}


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


def summarise_trace(xplane_path: Path, top_n: int = 10) -> TraceSummary:
    """Top ops by self time and the collective vs compute split of one ``.xplane.pb`` (see module docstring)."""
    xplane_path = Path(xplane_path)
    if not xplane_path.name.endswith(XPLANE_SUFFIX):
        raise ValueError(f"expected a *{XPLANE_SUFFIX} file (from capture_trace), got {xplane_path}")
    if not xplane_path.is_file():
        raise FileNotFoundError(f"no trace at {xplane_path}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n!r}")
    converter = load_converter()

    hlo_tables = parse_gviz_tables(_tool_data(converter, xplane_path, "hlo_stats", {}), "hlo_stats")
    device_ops = ops_from_hlo_stats([row for table in hlo_tables for row in table])
    if device_ops:
        return summarise_ops(device_ops, top_n, ProfileTool.HLO_STATS, xplane_path)

    trace_text = _tool_data(converter, xplane_path, "trace_viewer", {})
    try:
        trace = json.loads(trace_text)
    except json.JSONDecodeError as err:
        raise UnknownToolFormatError(f"trace_viewer: expected Chrome trace JSON, got {trace_text[:80]!r}") from err
    events = hlo_op_events(trace)
    if not events:
        raise NoOpEventsError(
            f"{xplane_path} has no per-op timings: hlo_stats is empty (no device plane) and no trace event carries "
            f"hlo_op. This is JAX {jax.__version__}; jaxlib 0.4.30's default CPU runtime emits no op events, its "
            "thunk runtime does: set XLA_FLAGS=--xla_cpu_use_thunk_runtime=true before JAX starts, or profile on "
            "GPU/TPU or with a current jaxlib"
        )
    modules = {event["args"]["hlo_module"] for event in events}
    opcodes = _module_opcodes(converter, xplane_path, modules)
    return summarise_ops(ops_from_trace_events(events, opcodes), top_n, ProfileTool.TRACE_VIEWER, xplane_path)
