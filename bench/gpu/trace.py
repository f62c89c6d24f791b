"""Every op row of an XProf trace, for the component breakdown (bench.measure.profile.summarise_trace keeps only
the top ones): the same two tools in the same order, hlo_stats on GPU and TPU, trace_viewer on CPU."""

from __future__ import annotations

import json
from pathlib import Path

from bench.analysis.profile import OpRow, hlo_op_events, ops_from_hlo_stats, ops_from_trace_events, parse_gviz_tables
from bench.measure.profile import _module_opcodes, _tool_data, load_converter


def profile_rows(xplane_path: Path) -> list[OpRow]:
    converter = load_converter()
    tables = parse_gviz_tables(_tool_data(converter, xplane_path, "hlo_stats", {}), "hlo_stats")
    rows = ops_from_hlo_stats([row for table in tables for row in table])
    if rows:
        return rows
    events = hlo_op_events(json.loads(_tool_data(converter, xplane_path, "trace_viewer", {})))
    opcodes = _module_opcodes(converter, xplane_path, {event["args"]["hlo_module"] for event in events})
    return ops_from_trace_events(events, opcodes)
