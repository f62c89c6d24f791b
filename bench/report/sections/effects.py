"""Section 3: the effect of each design choice, as paired tokens/s ratios against the run's noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from bench.report.analyse import Analysis
from bench.report.format import figure, fmt, fmt_ratio, markdown_table, span
from bench.report.stats import Effect, Noise, axis_values, version_key


def effect_sentence(effect: Effect, noise: Noise) -> str:
    c = effect.comparison
    if not effect.pairs:
        held = "the other three axes" if c.axis != "jax" else "the variant"
        return f"{c.label}: no pair in this run (needs two variants that differ only in {c.axis}, {held} fixed)."
    ratios = effect.ratios
    what = f"{c.a} runs at {effect.median:.3f}x the tokens/s of {c.b}"
    three = "{:.3f}".format
    spread = (
        "one pair"
        if len(ratios) == 1
        else f"median of {len(ratios)} pairs, {span(min(ratios), max(ratios), three, 'x')}"
    )
    memory = ""
    if c.axis == "remat" and not math.isnan(effect.memory_median):
        memory = f"; its peak memory per device is {effect.memory_median:.3f}x that of {c.b}"
    exceeds = effect.exceeds(noise)
    verdict = {True: "beyond", False: "within", None: "noise unknown, so not judged against"}[exceeds]
    return f"{c.label}: {what} ({spread}), {verdict} the run's noise ({noise.short()}){memory}."


def effects_table(a: Analysis, found: Sequence[Effect]) -> pd.DataFrame:
    rows = []
    for effect in found:
        ratios = effect.ratios
        exceeds = effect.exceeds(a.noise)
        rows.append(
            {
                "effect": effect.comparison.label,
                "pairs": str(len(ratios)),
                "median tokens/s ratio": fmt_ratio(effect.median) if ratios else "n/a",
                "range": f"{min(ratios):.3f}-{max(ratios):.3f}x" if ratios else "n/a",
                "beyond noise": "n/a" if not ratios else {True: "yes", False: "no", None: "unknown"}[exceeds],
                "median peak-memory ratio": fmt_ratio(effect.memory_median) if ratios else "n/a",
                "jax": ", ".join(sorted({p.jax for p in effect.pairs})) or "n/a",
            }
        )
    return pd.DataFrame(rows)


def section_effects(a: Analysis) -> list[str]:
    lines = [
        "## 3. Effect of each design choice",
        "",
        "Each ratio is a's tokens/s over b's for two variants equal in the other three axes and measured in the "
        "same JAX version; the median and range are over those pairs. An effect is beyond the noise when its "
        f"median differs from 1 by more than the run's noise ({a.noise.text()}).",
        "",
    ]
    if a.summary.empty:
        return lines + ["No measured variant finished: no effect to compute."]
    lines += [markdown_table(effects_table(a, a.effects)), ""]
    lines += [f"- {effect_sentence(e, a.noise)}" for e in a.effects if not e.pairs]
    lines += [""] if any(not e.pairs for e in a.effects) else []
    lines += _remat_trade_off(a)
    lines += _jax_note(a)
    lines += figure(a.figures, "effects", "Paired effects")
    lines += figure(a.figures, "memory", "Peak memory per device against tokens/s")
    return lines


def _remat_trade_off(a: Analysis) -> list[str]:
    remat = next(e for e in a.effects if e.comparison.axis == "remat")
    if not remat.pairs or math.isnan(remat.memory_median):
        return []
    return [
        f"Remat trade-off (median over {len(remat.pairs)} pair(s)): full remat "
        f"{_change(remat.median, 'throughput')} and {_change(remat.memory_median, 'peak memory per device')}, "
        f"against no remat.",
        "",
    ]


def _change(ratio: float, what: str) -> str:
    """'lowers throughput by 20.2%' for a ratio of 0.798."""
    if ratio == 1:
        return f"leaves {what} unchanged"
    verb = "lowers" if ratio < 1 else "raises"
    return f"{verb} {what} by {fmt(abs(ratio - 1) * 100, 3)}%"


def _jax_note(a: Analysis) -> list[str]:
    versions = sorted(set(a.summary["jax"]), key=version_key)
    has_xmap = any(
        axis_values(v, j) and axis_values(v, j)["strategy"] == "xmap"
        for v, j in zip(a.summary["variant"], a.summary["jax"])
    )
    lines = []
    if len(versions) > 1:
        env = [e for e in a.effects if e.comparison.axis == "jax" and e.pairs]
        measured = "; ".join(f"{e.comparison.label}: {fmt_ratio(e.median)} over {len(e.pairs)} variant(s)" for e in env)
        lines.append(
            f"Cross-environment note: this run holds JAX {', '.join(versions)}. Rows of different versions are never "
            f"paired for a design effect, because the environment alone moves throughput "
            f"({measured or 'no variant was measured in both, so by an unmeasured amount'})."
        )
    if has_xmap:
        lines.append(
            "xmap exists only up to jax 0.4.30, so its ratios use pjit and shard_map measured in that same environment."
        )
    if a.cross_effects:
        lines.append(
            "Some xmap comparison has no variant measured in xmap's environment, so the rows below pair across "
            "JAX versions: they mix the strategy's effect with the environment's and are not strategy effects."
        )
        table = effects_table(a, a.cross_effects)
        table["effect"] = table["effect"] + " (CROSS-ENVIRONMENT: strategy and JAX version confounded)"
        lines += ["", markdown_table(table)]
    return lines + [""] if lines else []
