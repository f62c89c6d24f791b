"""PROJECTION: the design-space search (``nox -s tpu_search``, bench/tpu_aot/search.py): every point that fits,
ranked by projected tokens/s, GPT-J's own choice placed in the ranking, what the best point changes against it by
component, the points that do not fit (the compiler's figures) and those pruned (the refused sibling's), and the
sign of each design effect per TPU generation.

Records of the search carry ``search_point`` (bench.records.schema.Search); the loader keeps them apart from the
other tpu-aot records (bench.report.load), so they never enter section 4's ranking. Projections, not
measurements: every table and sentence says so (bench/projection/throughput.py computes them, as for section 4).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.analysis.components import Component
from bench.hardware.table import GiB
from bench.projection import calibrate
from bench.projection import throughput as projection
from bench.report.analyse import Analysis, first_line
from bench.report.format import fmt, markdown_table, module_path, number, source, span
from bench.report.sections import validation
from bench.report.sections.components import ICI, step_components

XMAP = "xmap"
SEARCH_MODULE = module_path("bench.tpu_aot.search")  # cited, not imported: it compiles, the report only reads
# The other attributes two points must share to pair on one design choice.
POINT_FIELDS = ("residual", "d_head", "strategy", "remat", "layout", "search_micro_batch", "mesh_dp", "mesh_mp")
# Design choices whose sign per generation the section states: (record field, value a, value b): a over b.
DESIGN_EFFECTS = (
    ("residual", "parallel", "serial"),
    ("d_head", 256, 128),
    ("layout", "fsdp", "megatron"),
    ("search_micro_batch", 2, 1),
    ("remat", "dots", "full"),
    ("remat", "attn", "full"),
    ("remat", "none", "full"),
)


@dataclass(frozen=True)
class Point:
    """A search record that fits, and its projection (spec basis, the compiler's estimate where it has one)."""

    record: Mapping[str, Any]
    projection: projection.Projection

    @property
    def key(self) -> str:
        return str(self.record["search_point"])


def latest(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last record of each point, topology, preset and JAX."""
    found: dict[tuple, Mapping[str, Any]] = {}
    for r in records:
        found[r["search_point"], r.get("topology"), r.get("preset"), r.get("jax")] = r
    return list(found.values())


def _where(r: Mapping[str, Any]) -> tuple[str, str]:
    return str(r.get("topology")), str(r.get("preset"))


# Every point is ranked by one model of its work, the one each point has from its single compile: the per-op roofline
# of its whole-step program (bench/tpu_aot/search.py says why); the compiler's own estimate, where --extrapolate added
# it, is the cross-check beside the ranking.
RANKED_BY = projection.HEADLINE
CROSS_CHECK = projection.CROSS_CHECK


def fitting(records: Sequence[Mapping[str, Any]]) -> tuple[list[Point], list[str]]:
    """The projected points that fit (xmap's whole-step compiles are not ranked: another compiler), and why any
    ok record could not be projected (one written before the whole-step roofline: rerunning its point reads the
    compile from the cache)."""
    points, problems = [], []
    for r in latest(records):
        if r["status"] != "ok" or r.get("fits_hbm") is False or r.get("strategy") == XMAP:
            continue
        try:
            points.append(Point(r, projection.project(r, model=RANKED_BY)))
        except ValueError as error:
            problems.append(f"{r['search_point']} on {r.get('topology')}: {error}")
    points.sort(key=lambda p: (p.projection.tokens_per_s_overlap, p.projection.tokens_per_s_serial), reverse=True)
    return points, problems


def anchor_of(points: Sequence[Point]) -> Point | None:
    return next((p for p in points if p.record.get("search_anchor")), None)


def _ici_ms(p: projection.Projection, axis: str) -> float:
    return dict(p.ici_s_by_axis).get(axis, 0.0) * 1e3


def ranking_table(points: Sequence[Point]) -> pd.DataFrame:
    anchor = anchor_of(points)
    rows = []
    for rank, point in enumerate(points, start=1):
        p, r = point.projection, point.record
        ratio = p.tokens_per_s_overlap / anchor.projection.tokens_per_s_overlap if anchor else float("nan")
        rows.append(
            {
                "rank (PROJECTION)": str(rank) + (" GPT-J's choice" if r.get("search_anchor") else ""),
                "point": point.key,
                "micro-batch x accumulation": f"{r.get('search_micro_batch')} x {r.get('grad_accum')}",
                "projected tokens/s, no overlap to full overlap": span(p.tokens_per_s_serial, p.tokens_per_s_overlap),
                "over GPT-J's choice, full overlap": "n/a" if ratio != ratio else f"{ratio:.3f}x",
                "peak GiB per device (of HBM)": f"{fmt(number(p.mem_peak_bytes_per_device) / GiB)} "
                f"({fmt(number(p.hbm_capacity_bytes_per_device) / GiB)})",
                "ICI ms per step: mp / dp / dp+mp": " / ".join(fmt(_ici_ms(p, a), 3) for a in ("mp", "dp", "dpmp")),
                "ICI % of step": fmt(p.ici_share * 100, 3),
                "bound by": p.bound_by,
            }
        )
    return pd.DataFrame(rows)


def _gib(value: Any) -> str:
    return fmt(number(value) / GiB) if value else "n/a"


def not_fitting_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Points the compiler refused (or whose compiled peak exceeds HBM), with its figures."""
    rows = [
        {
            "point": r["search_point"],
            "topology": r.get("topology"),
            "needs GiB per device (compiler)": _gib(
                r.get("oom_required_bytes_per_device") or r.get("mem_peak_estimate_bytes_per_device")
            ),
            "available GiB per device": _gib(
                r.get("oom_available_hbm_bytes_per_device") or r.get("hbm_bytes_per_device")
            ),
        }
        for r in latest(records)
        if r.get("fits_hbm") is False and not r.get("pruned_by")
    ]
    return pd.DataFrame(rows)


def pruned_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "point (not compiled)": r["search_point"],
            "topology": r.get("topology"),
            "refused sibling": r.get("pruned_by"),
            "sibling needs GiB (compiler)": _gib(r.get("pruned_by_required_bytes_per_device")),
            "available GiB": _gib(r.get("pruned_by_available_bytes_per_device")),
            "why it needs at least as much": r.get("pruned_rule"),
        }
        for r in latest(records)
        if r.get("pruned_by")
    ]
    return pd.DataFrame(rows)


def failed_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        f"- {r['search_point']} on {r.get('topology')} (jax {r.get('jax')}): compile failed: "
        f"{first_line(r.get('error'))}"
        for r in latest(records)
        if r["status"] == "failed" and r.get("fits_hbm") is not False
    ]


def _changes(best: Mapping[str, Any], anchor: Mapping[str, Any]) -> str:
    names = {"mesh_dp": "dp", "mesh_mp": "mp", "search_micro_batch": "micro-batch"}
    found = [
        f"{names.get(f, f)} {anchor.get(f)} -> {best.get(f)}"
        for f in ("mesh_dp", "mesh_mp", "remat", "layout", "search_micro_batch", "residual", "d_head")
        if best.get(f) != anchor.get(f)
    ]
    return ", ".join(found) or "nothing"


def best_against_anchor(points: Sequence[Point], largest: int = 4) -> list[str]:
    """What the best point changes against GPT-J's choice, and the components (PROJECTION) that move the step."""
    anchor = anchor_of(points)
    if not points or anchor is None:
        return ["- GPT-J's choice has no projection in these records: nothing to place it against."]
    best = points[0]
    rank = points.index(anchor) + 1
    b, g = best.projection, anchor.projection
    lines = [
        f"- PROJECTION: GPT-J's choice ({anchor.key}) ranks {rank} of {len(points)} points that fit, at "
        f"{span(g.tokens_per_s_serial, g.tokens_per_s_overlap)} projected tokens/s."
    ]
    if best is anchor:
        return lines + ["- PROJECTION: no point that fits is projected faster than GPT-J's choice."]
    lines.append(
        f"- PROJECTION: the best point, {best.key}, changes {_changes(best.record, anchor.record)}; projected "
        f"{span(b.tokens_per_s_serial, b.tokens_per_s_overlap)} tokens/s, "
        f"{b.tokens_per_s_overlap / g.tokens_per_s_overlap:.3f}x GPT-J's choice on the full-overlap bound and "
        f"{b.tokens_per_s_serial / g.tokens_per_s_serial:.3f}x on the no-overlap bound."
    )
    lines.append(validation.margin_line(b, g, calibrate.committed_summary()))
    mine, theirs = step_components(b), step_components(g)
    if mine is None or theirs is None:
        return lines + ["- No component breakdown in one of the two records (component_s_per_step_per_device)."]
    saved = {k: theirs.get(k, 0.0) - mine.get(k, 0.0) for k in {*mine, *theirs}}
    top = sorted(saved.items(), key=lambda kv: abs(kv[1]), reverse=True)[:largest]
    communication = sum(s for k, s in saved.items() if k.startswith((Component.COLLECTIVE.value, ICI)))
    lines.append(
        f"- PROJECTION, by component: the best point's no-overlap step is {fmt(sum(saved.values()) * 1e3, 4)} ms "
        f"shorter per step (negative: longer). The largest parts: "
        + ", ".join(f"{k} {fmt(s * 1e3, 3)} ms" for k, s in top)
        + f". Communication (collectives' HBM traffic and ICI time) carries {fmt(communication * 1e3, 3)} ms of it."
    )
    return lines


def cross_check(points: Sequence[Point]) -> tuple[pd.DataFrame, list[str]]:
    """The points that also have the compiler's own estimate (``--extrapolate``): both models' projected full-overlap
    tokens/s, the ratio of their work, and each model's rank among these points; a line on how far they agree."""
    both = [
        (p, projection.project(p.record, model=CROSS_CHECK))
        for p in points
        if p.record.get(projection.MODEL_FIELDS[CROSS_CHECK])
    ]
    if not both:
        return pd.DataFrame(), []
    by_estimate = sorted(both, key=lambda pq: pq[1].tokens_per_s_overlap, reverse=True)
    rows = [
        {
            "point": p.key,
            "whole-step HLO roofline, tokens/s (rank)": f"{fmt(p.projection.tokens_per_s_overlap)} ({rank})",
            "compiler's estimate, tokens/s (rank)": f"{fmt(q.tokens_per_s_overlap)} ({by_estimate.index((p, q)) + 1})",
            "work: roofline over estimate": f"{p.projection.work_s[0] / q.work_s[0]:.3f}",
        }
        for rank, (p, q) in enumerate(both, start=1)
    ]
    ratios = [p.projection.work_s[0] / q.work_s[0] for p, q in both]
    same = sum(a is b for a, b in zip(both, by_estimate, strict=True))
    line = (
        f"- PROJECTION cross-check: on {len(both)} points with both models, the whole-step roofline's work is "
        f"{min(ratios):.3f}-{max(ratios):.3f}x the compiler's estimate (unrolled compiles, extrapolated); "
        f"{same} of {len(both)} points hold the same rank under both. The whole-step program is the scanned one "
        "that would run: it slices each layer's weights out of the stack and saves activations into stacked "
        "buffers, which the unrolled programs do not."
    )
    return pd.DataFrame(rows), [line]


def _pairs(points: Sequence[Point], field: str, a: Any, b: Any) -> list[tuple[Point, Point]]:
    others = [f for f in POINT_FIELDS if f != field]
    by_rest = {tuple(q.record.get(f) for f in others): q for q in points if q.record.get(field) == b}
    return [
        (p, by_rest[rest])
        for p in points
        if p.record.get(field) == a and (rest := tuple(p.record.get(f) for f in others)) in by_rest
    ]


def effect_signs(points_by_topology: Mapping[str, Sequence[Point]]) -> pd.DataFrame:
    """One row per design choice, one column per topology: the median ratio of projected full-overlap tokens/s over
    pairs that differ only in that choice, its sign, and the pair count."""
    rows = []
    for field, a, b in DESIGN_EFFECTS:
        row = {"design choice (a over b), PROJECTION": f"{field} {a} over {b}"}
        for topology, points in points_by_topology.items():
            pairs = _pairs(points, field, a, b)
            if not pairs:
                row[topology] = "no pair"
                continue
            ratio = statistics.median(
                p.projection.tokens_per_s_overlap / q.projection.tokens_per_s_overlap for p, q in pairs
            )
            sign = "+" if ratio > 1 else "-" if ratio < 1 else "0"
            row[topology] = f"{sign} {ratio:.3f}x ({len(pairs)} pair{'s' * (len(pairs) > 1)})"
        rows.append(row)
    return pd.DataFrame(rows)


def xmap_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """GPT-J's own driver, compiled in the jax 0.4.30 environment: fit and memory (not ranked)."""
    lines = []
    for r in latest(records):
        if r.get("strategy") != XMAP:
            continue
        state = "fits" if r.get("fits_hbm") else "does not fit" if r.get("fits_hbm") is False else "failed"
        peak = _gib(r.get("mem_peak_estimate_bytes_per_device") or r.get("oom_required_bytes_per_device"))
        lines.append(
            f"- {r['search_point']} on {r.get('topology')} (jax {r.get('jax')}, libtpu {r.get('libtpu')}): {state}, "
            f"peak {peak} GiB per device. Not ranked: a whole-step compile by another libtpu (its shard_map twin is "
            "ranked)."
        )
    return lines


def section_search(a: Analysis) -> list[str]:
    records = list(a.run.search)
    if not records:
        return []
    lines = ["## 4b. PROJECTION: the design-space search (nox -s tpu_search)", ""]
    by_where: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        by_where.setdefault(_where(r), []).append(r)
    points_by_topology: dict[str, list[Point]] = {}
    for (topology, preset), group in by_where.items():
        points, problems = fitting(group)
        points_by_topology[topology] = points
        final = latest(group)
        lines += [
            f"#### {preset} on {topology}: {len(final)} points, {len(points)} fit and are projected, "
            f"{sum(r.get('fits_hbm') is False and not r.get('pruned_by') for r in final)} refused by the compiler, "
            f"{sum(bool(r.get('pruned_by')) for r in final)} pruned, "
            f"{sum(r['status'] == 'failed' and r.get('fits_hbm') is not False for r in final)} failed to compile",
            "",
            "PROJECTIONS from TPU ahead-of-time compiles, not measurements: each point's work is the per-op "
            "roofline of its whole-step program (every op at max(FLOPs / peak, bytes / HBM bandwidth), the sum the "
            "compiler's estimate makes, every loop body times its trip count), plus ICI, both bounds "
            f"({source(projection)}, HLO_ROOFLINE). The global batch per update is fixed; each point's "
            "micro-batch per replica sets its accumulation. ICI ms per axis is the mesh's cost: wire bytes per "
            "device over the ICI bandwidth of the torus dimensions the axis spans.",
            "",
        ]
        if points:
            lines += [markdown_table(ranking_table(points)), "", *best_against_anchor(points), ""]
            checked, said = cross_check(points)
            if not checked.empty:
                lines += [*said, "", markdown_table(checked), ""]
        lines += [f"- not projected: {problem}" for problem in problems]
        refused, pruned = not_fitting_table(group), pruned_table(group)
        if not refused.empty:
            lines += ["Points that do not fit, with the compiler's figures:", "", markdown_table(refused), ""]
        if not pruned.empty:
            lines += [
                "Points pruned, not compiled: each needs at least the memory of a refused sibling "
                f"({SEARCH_MODULE} states the rules and why they are safe; --no-prune compiles them):",
                "",
                markdown_table(pruned),
                "",
            ]
        lines += xmap_lines(group) + failed_lines(group)
        lines.append("")
    signs = effect_signs(points_by_topology)
    if not signs.empty:  # the choices with a pair somewhere
        signs = signs[(signs.iloc[:, 1:] != "no pair").any(axis=1)]
    if len(signs.columns) > 1 and not signs.empty:
        lines += [
            "PROJECTION: the sign of each design effect per TPU generation (median ratio of projected full-overlap "
            "tokens/s over pairs that differ only in that choice; + : a is projected faster):",
            "",
            markdown_table(signs),
            "",
        ]
    return lines
