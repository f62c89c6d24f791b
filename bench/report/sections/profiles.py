"""Section 6: each profiled variant's top ops, its collective share and the command that opens its trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.analysis.profile import tensorboard_command, trace_log_dir
from bench.report.analyse import Analysis
from bench.report.format import fmt, markdown_table, number, pct
from bench.report.load import latest_ok, row_key


def section_profiles(a: Analysis) -> list[str]:
    lines = ["## 6. Profiles", ""]
    profiled = latest_ok(a.run.measured, having="profile_collective_share")
    if not profiled:
        return lines + ["No variant in this run has a captured trace (records carry no profile_* fields).", ""]
    for r in profiled:
        lines += _profile(r)
    return lines


def _profile(r: Mapping[str, Any]) -> list[str]:
    ops = pd.DataFrame(
        [
            {
                "op": o.get("name"),
                "category": o.get("category"),
                "self time ms": fmt(number(o.get("self_time_us")) / 1e3),
                "share %": fmt(number(o.get("share")) * 100),
            }
            for o in r.get("profile_top_ops") or []
        ]
    )
    lines = [
        f"### {r['variant']} (jax {row_key(r)[1]}, repeat {r.get('repeat', 0)})",
        "",
        f"Collectives take {pct(r.get('profile_collective_share'))} of the summed op time "
        f"({r.get('profile_tool', 'profiler')} tool; busy device time, not wall-clock step time).",
        "",
    ]
    if not ops.empty:
        lines += [markdown_table(ops), ""]
    trace = r.get("profile_trace_path")
    if trace:
        lines += [
            f"Trace: `{trace}`. Open it with:",
            "",
            "```",
            tensorboard_command(trace_log_dir(trace)),
            "```",
            "",
        ]
    return lines
