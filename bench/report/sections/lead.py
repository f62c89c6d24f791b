"""The first screen of each kind of report: which variant wins, by how much and why, in a few short lines.

Every figure here is also in the section it comes from; these lines only pick the answer out of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.hardware import baseline
from bench.report.analyse import Analysis
from bench.report.format import fmt, fmt_ratio, markdown_table
from bench.report.sections.headline import devices_text
from bench.report.sections.projection import PROJECTED_EFFECTS, lead_pct, paired_ratios, ranked, runner_up
from bench.report.sections.search import _where, anchor_of, fitting, latest
from bench.report.stats import Effect


def measured_lead(a: Analysis) -> list[str]:
    """This machine's fastest variant and each measured design effect against the run's noise."""
    timed = a.summary.dropna(subset=["tokens_per_s"])
    if timed.empty:
        return []
    best = timed.iloc[0]
    lines = [
        f"- Measured here ({devices_text(a.run)}): fastest **{best['variant']}** (jax {best['jax']}) at "
        f"{fmt(best['tokens_per_s'])} tokens/s."
    ]
    paired = [e for e in a.effects if e.pairs]
    beyond = [
        f"{_named(e, e.comparison.a)} {fmt_ratio(e.median)} {_named(e, e.comparison.b)}"
        for e in paired
        if e.exceeds(a.noise)
    ]
    if beyond:
        lines.append(f"- Why, measured (paired medians beyond the {a.noise.short()} noise): {'; '.join(beyond)}.")
    elif paired:
        lines.append(f"- Measured: no design effect beyond the run's noise ({a.noise.short()}).")
    return lines


def _named(effect: Effect, value: str) -> str:
    return f"jax {value}" if effect.comparison.axis == "jax" else value  # a version alone reads as a number


def projection_lead(a: Analysis) -> list[str]:
    """The TPU ranking's winner, its margin and the paired design effects behind it: a PROJECTION."""
    order = ranked(a.projections)
    if not order:
        return []
    best = order[0]
    ties, second = runner_up(order)
    margin = f", {lead_pct(best, second)} ahead of {second.variant}" if second is not None else ""
    tied = f" (tied: {', '.join(p.variant for p in ties)})" if ties else ""
    lines = [
        f"- PROJECTION ({best.preset} on TPU {best.topology or best.accelerator}, not a measurement): fastest "
        f"**{best.variant}**{tied} at {fmt(best.tokens_per_s_overlap)} projected tokens/s{margin}; GPT-J measured "
        f"{fmt(baseline.TOKENS_PER_S.value)}."
    ]
    said = [
        f"{x} {fmt_ratio(statistics.median(ratios))} {y}"
        for position, x, y in PROJECTED_EFFECTS
        if (ratios := paired_ratios(order, position, x, y))
    ]
    if said:
        lines.append(f"- Why, PROJECTION (paired medians of projected tokens/s): {'; '.join(said)}.")
    return lines


def sweep_lead(a: Analysis) -> list[str]:
    return projection_lead(a) + measured_lead(a)


def search_lead(a: Analysis) -> list[str]:
    """Per searched topology and preset: the best point, its margin over GPT-J's choice and where GPT-J's choice
    ranks; a table, one row each, so that four TPUs still fit the first screen."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in a.run.search:
        groups.setdefault(_where(r), []).append(r)
    rows = []
    for (topology, preset), group in groups.items():
        points, _ = fitting(group)
        anchor = anchor_of(points)
        best = points[0] if points else None
        ratio = (
            best.projection.tokens_per_s_overlap / anchor.projection.tokens_per_s_overlap
            if best is not None and anchor is not None
            else math.nan
        )
        rows.append(
            {
                "TPU, preset": f"{topology}, {preset}",
                "points that fit": f"{len(points)} of {len(latest(group))}",
                "best point (PROJECTION)": f"**{best.key}**" if best else "none fits",
                "projected tokens/s": fmt(best.projection.tokens_per_s_overlap) if best else "n/a",
                "over GPT-J's choice": fmt_ratio(ratio),
                "GPT-J's choice ranks": str(points.index(anchor) + 1) if anchor is not None else "n/a",
            }
        )
    if not rows:
        return []
    return [
        "PROJECTION from TPU compiles, not a measurement: the design-space search's best point on each TPU.",
        "",
        markdown_table(pd.DataFrame(rows)),
    ]


def compare_lead(a: Analysis) -> list[str]:
    """This run against ``--compare``'s, variant by variant, with the noise threshold that judges it."""
    c = a.comparison
    if c is None or c.note or c.table.empty:
        return measured_lead(a)
    this, other = a.run.run_dir.name, c.other_dir.name
    lines = []
    for row in c.table.itertuples():
        faster = row.ratio >= 1
        size = row.ratio if faster else 1 / row.ratio
        verdict = "beyond" if abs(row.ratio - 1) > c.threshold else "within"
        lines.append(
            f"- **{this} is {fmt_ratio(size)} {'faster' if faster else 'slower'} than {other}** ({row.variant}, jax "
            f"{row.jax}: {fmt(row.tokens_per_s_this)} against {fmt(row.tokens_per_s_other)} tokens/s), {verdict} "
            f"the {fmt(c.threshold * 100, 3)}% noise threshold."
        )
    return lines + measured_lead(a)[:1]


def lead_block(lines: Sequence[str]) -> list[str]:
    return [*lines, ""] if lines else []
