"""Section 6: each profiled variant's top ops, its collective share, its measured time by block component and the
command that opens its trace; and, for a record run with ``--gemm-floor``, its GEMM floor by component beside it.

The component table is a MEASUREMENT of this machine: the profiler's op self times under the labels
bench.analysis.components gives the profiled program's optimized HLO (bench.measure.profile.component_fields), the
same map section 5 applies to the TPU compile, where it is a projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.analysis.profile import tensorboard_command, trace_log_dir
from bench.report.analyse import Analysis
from bench.report.format import fmt, markdown_table, number, pct
from bench.report.load import latest_ok, row_key
from bench.report.sections.components import ORDER


def section_profiles(a: Analysis) -> list[str]:
    lines = ["## 6. Profiles", ""]
    profiled = latest_ok(a.run.measured, having="profile_collective_frac")
    if not profiled:
        lines += ["No variant in this run has a captured trace (records carry no profile_* fields).", ""]
    for r in profiled:
        lines += _profile(r)
    floors = [r for r in a.run.measured if r["status"] == "ok" and r.get("gemm_floor_s_per_step")]
    if floors:
        lines += _floors(floors)
    return lines


def _floors(records: list[Mapping[str, Any]]) -> list[str]:
    """Every --gemm-floor record, repeats included (the floor is timed anew in each): HFU split into the floor's
    share of the peak and the step's share of the floor, and the floor by block component."""
    rows = []
    for r in records:
        row = {
            "variant": r["variant"],
            "jax": row_key(r)[1],
            "repeat": r.get("repeat", 0),
            "step ms": fmt(number(r.get("step_median_s")) * 1e3),
            "GEMM floor ms": fmt(number(r.get("gemm_floor_s_per_step")) * 1e3),
            "HFU": pct(r.get("hfu")),
            "floor FLOP/s of peak": pct(r.get("gemm_floor_peak_frac")),
            "floor of step": pct(r.get("gemm_floor_step_frac")),
        }
        parts = r.get("gemm_floor_component_s_per_step") or {}
        for label in sorted(parts, key=lambda label: (ORDER.index(label) if label in ORDER else len(ORDER), label)):
            row[f"{label} ms"] = fmt(parts[label] * 1e3)
        rows.append(row)
    untimed = sum(int(r.get("gemm_floor_untimed_matmuls") or 0) for r in records)
    return [
        "### GEMM floor (MEASURED: each dot of the compiled step timed alone, `--gemm-floor`)",
        "",
        "HFU is about floor FLOP/s of peak x floor of step (exactly, where the dots carry all the hardware FLOPs): "
        "the first is how fast this machine's GEMMs run at the step's own shapes (no fusion of the rest can beat "
        "it), the second what everything around them costs. Component columns: the floor's ms per step by block "
        "component."
        + (f" {untimed} matmuls that are not dots (convolutions) were left out of the floors." if untimed else ""),
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
    ]


def _profile(r: Mapping[str, Any]) -> list[str]:
    ops = pd.DataFrame(
        [
            {
                "op": o.get("name"),
                "category": o.get("category"),
                "self time ms": fmt(number(o.get("self_time_s")) * 1e3),
                "share %": fmt(number(o.get("op_time_frac")) * 100),
            }
            for o in r.get("profile_top_ops") or []
        ]
    )
    lines = [
        f"### {r['variant']} (jax {row_key(r)[1]}, repeat {r.get('repeat', 0)})",
        "",
        f"Collectives take {pct(r.get('profile_collective_frac'))} of the summed op time "
        f"({r.get('profile_tool', 'profiler')} tool; busy device time, not wall-clock step time).",
        "",
    ]
    if not ops.empty:
        lines += [markdown_table(ops), ""]
    lines += _components(r)
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


def _components(r: Mapping[str, Any]) -> list[str]:
    """The measured breakdown by block component, ordered as the block runs (section 5's columns)."""
    parts = r.get("profile_component_s_per_step_per_device")
    if not parts:
        return []
    total = sum(parts.values())
    if total <= 0:
        return []
    labels = sorted(parts, key=lambda label: (ORDER.index(label) if label in ORDER else len(ORDER), label))
    frame = pd.DataFrame(
        [
            {"component": label, "ms per step per device": fmt(s * 1e3), "share %": fmt(100 * s / total)}
            for label, s in ((label, parts[label]) for label in labels)
        ]
    )
    other = number(r.get("profile_other_programs_s_per_step_per_device"))
    lines = [
        f"MEASURED by block component on this machine ({r.get('profile_component_basis', 'profiler op self time')}, "
        f"{r.get('profile_steps', '?')} profiled steps; {pct(r.get('profile_component_matched_frac'))} of the step "
        f"program's op time matched an op of its optimized HLO, the rest is 'unattributed'; other programs in the "
        f"trace: {fmt(other * 1e3)} ms per step per device). On simulated CPU devices a collective's time is mostly "
        "waiting for the slowest device." + _coverage(r),
        "",
    ]
    return lines + [markdown_table(frame), ""]


def _coverage(r: Mapping[str, Any]) -> str:
    coverage = r.get("profile_op_coverage_frac")
    if coverage is None:
        return ""
    text = f" Op events cover {pct(coverage)} of the profiled steps' wall time"
    if coverage < 0.95:
        text += (
            ": the rest ran outside any op's event (on XLA CPU, dots handed to Eigen's thread pool), so these "
            "times understate the GEMMs; `--gemm-floor` times them alone"
        )
    return text + "."
