"""Why the TPU ranking comes out as it does: each projected variant's step by block component, and each paired
design effect explained by the components it moves.

The work per component is the record's ``component_s_per_step_per_device`` (bench.analysis.components: each op of the
optimized HLO priced at its roofline, extrapolated to the whole step like the compiler's estimate), reconciled
against the compiler's estimate (``bench.analysis.components.reconcile``: within 5%, or the rest is shown as
"unattributed"). ICI is the projection's wire time per mesh axis (bench/projection/throughput.py), which the
compiler's estimate leaves out. A row sums to the no-overlap step within 5%. A PROJECTION throughout, never a
measurement.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import pandas as pd

from bench.analysis.components import Basis, Breakdown, Component, reconcile
from bench.projection import throughput as projection
from bench.report.analyse import Analysis
from bench.report.format import figure, fmt, markdown_table
from bench.report.sections.projection import PROJECTED_EFFECTS, _differ_only_at, ranked

ICI = "ICI"  # column prefix of the projection's wire time per axis: "ICI mp"
# Columns in the order a block runs, then the step's other work and its communication.
ORDER = (
    *(c.value for c in Component if c not in (Component.COLLECTIVE, Component.UNATTRIBUTED)),
    f"{Component.COLLECTIVE.value} mp",
    f"{Component.COLLECTIVE.value} dp",
    f"{Component.COLLECTIVE.value} dp+mp",  # a collective's label spells its axis as the HLO parser does
    Component.UNATTRIBUTED.value,
    f"{ICI} mp",
    f"{ICI} dp",
    f"{ICI} dpmp",  # the projection's (bench.projection.throughput.TORUS_DIMS_PER_AXIS)
    f"{ICI} latency",
)


def step_components(p: projection.Projection) -> dict[str, float] | None:
    """Seconds per column for one projection (None where its record has no breakdown): the compiler-priced work
    reconciled against the model's whole (the compiler's estimate, or the whole-step HLO roofline they sum to), then
    ICI bandwidth time per axis and ICI latency."""
    if not p.components_s or p.model is projection.ProjectionModel.ROOFLINE:
        return None
    recorded = {Component.UNATTRIBUTED.value: 0.0, **dict(p.components_s)}
    work = reconcile(Breakdown(Basis.ROOFLINE, recorded), p.work_s[0]).breakdown.seconds
    parts = {label: s for label, s in work.items()}
    parts.update({f"{ICI} {axis}": s for axis, s in p.ici_s_by_axis})
    if p.ici_latency_s:
        parts[f"{ICI} latency"] = p.ici_latency_s
    return parts


def component_frame(projections: Sequence[projection.Projection]) -> pd.DataFrame:
    """One row per ranked projection with a breakdown: milliseconds per column, the columns in ``ORDER`` (then any
    other label), and the no-overlap step they sum to."""
    rows = []
    for p in ranked(projections):
        parts = step_components(p)
        if parts is None:
            continue
        rows.append({"variant": p.variant, "jax": p.jax, **{k: v * 1e3 for k, v in parts.items()}})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).fillna(0.0)
    shown = lambda c: frame[c].abs().max() > 0 or c == Component.UNATTRIBUTED.value  # noqa: E731  (always shown)
    columns = [c for c in ORDER if c in frame.columns and shown(c)]
    columns += sorted(c for c in frame.columns if c not in (*ORDER, "variant", "jax") and shown(c))
    frame = frame[["variant", "jax", *columns]]
    frame["no-overlap step ms"] = frame[columns].sum(axis=1)
    return frame


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns[2:]:
        out[column] = [fmt(v, 3) for v in out[column]]
    return out


def effect_by_component(projections: Sequence[projection.Projection]) -> list[tuple[str, str, int, dict[str, float]]]:
    """For each design choice (a over b): the median over pairs of (b - a) seconds per column, the time a saves.
    Returns (a, b, pairs, savings) per choice that has pairs with breakdowns."""
    order = [p for p in ranked(projections) if step_components(p) is not None]
    found = []
    for position, a, b in PROJECTED_EFFECTS:
        pairs = [(p, q) for p in order for q in order if _differ_only_at(p, q, position, a, b)]
        if not pairs:
            continue
        diffs = []
        for p, q in pairs:
            mine, theirs = step_components(p) or {}, step_components(q) or {}
            diffs.append({k: theirs.get(k, 0.0) - mine.get(k, 0.0) for k in {*mine, *theirs}})
        labels = {k for d in diffs for k in d}
        found.append((a, b, len(pairs), {k: statistics.median(d.get(k, 0.0) for d in diffs) for k in labels}))
    return found


def _is_communication(label: str) -> bool:
    return label.startswith((Component.COLLECTIVE.value, ICI))


def effect_lines(projections: Sequence[projection.Projection], largest: int = 3) -> list[str]:
    """One sentence per design choice: the total projected saving per step and the components that carry it."""
    lines = []
    for a, b, pairs, savings in effect_by_component(projections):
        total = sum(savings.values())
        rest = savings.get(Component.UNATTRIBUTED.value, 0.0)
        named = [(label, s) for label, s in savings.items() if label != Component.UNATTRIBUTED.value]
        top = sorted(named, key=lambda kv: abs(kv[1]), reverse=True)[:largest]
        parts = ", ".join(f"{label} {fmt(s * 1e3, 3)} ms" for label, s in top)
        if rest:  # the components' own pricing off the compiler's estimate: say how much of the saving that is
            parts += f" (the reconciliation rest, 'unattributed', moves {fmt(rest * 1e3, 3)} ms)"
        communication = sum(s for label, s in savings.items() if _is_communication(label))
        elementwise = savings.get(Component.ELEMENTWISE.value, 0.0)
        lines.append(
            f"- PROJECTION, by component: {a} saves {fmt(total * 1e3, 3)} ms per step over {b} (median of {pairs} "
            f"pair(s); negative: it costs more). The largest parts: {parts}. Collectives (their HBM traffic and ICI "
            f"time) carry {fmt(communication * 1e3, 3)} ms of it, elementwise work (LayerNorm, rotary, GELU, residual "
            f"adds) {fmt(elementwise * 1e3, 3)} ms."
        )
    return lines


def section_components(a: Analysis) -> list[str]:
    frame = component_frame(a.projections)
    lines = ["### PROJECTION: where each variant's step goes, by block component", ""]
    if frame.empty:
        return lines + ["No tpu-aot record here carries a component breakdown (component_s_per_step_per_device).", ""]
    lines += [
        "A PROJECTION, not a measurement: milliseconds per step per device. The compiler-priced work per component is "
        "each op of the optimized HLO at its roofline (bench/analysis/components.py), extrapolated to the whole step "
        "like the compiler's estimate and reconciled with it (the rest, where the two differ by more than 5%, is "
        "'unattributed'; negative where the components over-count). 'collective <axis>' is a collective's HBM "
        "traffic as the compiler prices it; 'ICI <axis>' is its wire time, which the compiler leaves out. A row "
        "sums to the no-overlap step within 5% (the records' component_sum_to_optimal_ratio gives each ratio). With "
        "gradient accumulation a part can come out negative: the 1-micro-step compile the extrapolation starts from "
        "has no accumulation (f32 gradients, dp reduction and optimizer input where the step sums in bf16), so a "
        "once-per-step difference is extrapolated as if it grew with the micro-steps (records: xla_cost_points).",
        "",
        markdown_table(_shown(frame)),
        "",
        *effect_lines(a.projections),
        "",
    ]
    lines += figure(a.figures, "components", "PROJECTION: each variant's no-overlap step by component, ranked")
    return lines
