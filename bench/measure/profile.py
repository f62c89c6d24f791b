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

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from bench.analysis.hlo import instruction_opcodes
from bench.analysis.profile import (
    OpRow,
    ProfileTool,
    TraceSummary,
    UnknownToolFormatError,
    covered_share,
    hlo_op_events,
    ops_from_hlo_stats,
    ops_from_trace_events,
    parse_gviz_tables,
    summarise_ops,
    tensorboard_command,  # re-exported: the pipeline prints it next to the trace it captures
)
from bench.records.schema import Profile, section_fields

PLUGIN_INSTALL_HINT = "pip install tensorboard-plugin-profile==2.24.2  (it brings xprof==2.24.2)"
XPLANE_SUFFIX = ".xplane.pb"
STEP_NAME = "train"


class ProfilerPluginMissingError(ImportError):
    """The profiler plugin (xprof / tensorboard-plugin-profile) cannot be imported in this environment."""


class NoOpEventsError(RuntimeError):
    """The trace holds no per-HLO-op timings to summarise."""


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
        for op, opcode in instruction_opcodes(text).items():
            found[(module, op)].add(opcode)
    return {key: "/".join(sorted(opcodes)) for key, opcodes in found.items()}


# ---------------------------------------------------------------------------------------------------- summary


def trace_op_rows(xplane_path: Path) -> tuple[list[OpRow], ProfileTool]:
    """Every HLO op's self time in one ``.xplane.pb`` and the plugin tool it came from (see module docstring)."""
    xplane_path = Path(xplane_path)
    if not xplane_path.name.endswith(XPLANE_SUFFIX):
        raise ValueError(f"expected a *{XPLANE_SUFFIX} file (from capture_trace), got {xplane_path}")
    if not xplane_path.is_file():
        raise FileNotFoundError(f"no trace at {xplane_path}")
    converter = load_converter()

    hlo_tables = parse_gviz_tables(_tool_data(converter, xplane_path, "hlo_stats", {}), "hlo_stats")
    device_ops = ops_from_hlo_stats([row for table in hlo_tables for row in table])
    if device_ops:
        return device_ops, ProfileTool.HLO_STATS

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
    return ops_from_trace_events(events, opcodes), ProfileTool.TRACE_VIEWER


def summarise_trace(xplane_path: Path, top_n: int = 10) -> TraceSummary:
    """Top ops by self time and the collective vs compute split of one ``.xplane.pb`` (see module docstring)."""
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n!r}")
    rows, tool = trace_op_rows(xplane_path)
    return summarise_ops(rows, top_n, tool, Path(xplane_path))


def trace_coverage(xplane_path: Path) -> float | None:
    """The share of the traced steps' wall time that op events cover (``covered_share``); None where the trace has
    no step annotations or no op events (jax 0.4.30's CPU runtime without the thunk runtime)."""
    trace = json.loads(_tool_data(load_converter(), Path(xplane_path), "trace_viewer", {}))
    ops = [(float(e["ts"]), float(e["dur"])) for e in hlo_op_events(trace)]
    step = re.compile(rf"^{STEP_NAME} \d+$")
    steps = [
        (float(e["ts"]), float(e["dur"]))
        for e in trace.get("traceEvents", [])
        if e.get("ph") == "X" and step.match(str(e.get("name", "")))
    ]
    return covered_share(ops, steps)


# The module name on optimized HLO text's first line: "HloModule jit_train_step, entry_computation_layout=...".
_MODULE_NAME = re.compile(r"^HloModule ([^\s,]+)", re.MULTILINE)


def component_fields(
    rows: Sequence[OpRow], hlo_text: str, mesh_ids: Any, steps: int, devices: int, tool: ProfileTool
) -> dict[str, Any]:
    """The measured breakdown by block component: the profiled ops' self times under the labels
    ``bench.analysis.components`` gives the same program's optimized HLO, in seconds per step per device.

    On the trace_viewer path rows name their HLO module, and only the step's module is broken down (the rest, such
    as argument copies, is counted apart); hlo_stats rows carry XProf's program id instead, so all of them are.
    """
    from bench.analysis.components import Basis, attribute, breakdown_from_profile

    match = _MODULE_NAME.search(hlo_text)
    module = match.group(1) if match else None
    by_module = tool is ProfileTool.TRACE_VIEWER and module is not None
    step_rows = [row for row in rows if row.program == module] if by_module else list(rows)
    other_us = sum(row.self_time_us for row in rows) - sum(row.self_time_us for row in step_rows)
    ops = attribute(hlo_text, mesh_ids, ("dp", "mp"))
    names = {op.name for op in ops}
    breakdown = breakdown_from_profile(step_rows, ops)
    scale = 1 / (steps * devices)  # summed over every device and profiled step -> per step per device
    total_us = sum(row.self_time_us for row in step_rows)
    matched_us = sum(row.self_time_us for row in step_rows if row.name in names)
    return section_fields(
        Profile,
        profile_component_basis=Basis.MEASURED.value,
        profile_component_s_per_step_per_device={label: s * scale for label, s in sorted(breakdown.seconds.items())},
        profile_component_matched_frac=matched_us / total_us if total_us > 0 else 0.0,
        profile_other_programs_s_per_step_per_device=other_us * 1e-6 * scale,
        profile_steps=steps,
    )


__all__ = [
    "PLUGIN_INSTALL_HINT",
    "XPLANE_SUFFIX",
    "NoOpEventsError",
    "ProfilerPluginMissingError",
    "capture_trace",
    "component_fields",
    "load_converter",
    "summarise_trace",
    "trace_op_rows",
    "tensorboard_command",
]
