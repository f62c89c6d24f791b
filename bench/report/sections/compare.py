"""Section 8 and the banner above section 1: this run's tokens/s against another run's (``--compare``)."""

from __future__ import annotations

import pandas as pd

from bench.report.analyse import Analysis
from bench.report.format import fmt, fmt_ratio, markdown_table
from bench.report.stats import MIN_COMPARE_THRESHOLD


def section_compare(a: Analysis) -> list[str]:
    c = a.comparison
    if c is None:
        return []
    lines = [f"## 8. Against {c.other_dir}", ""]
    if c.note:
        return lines + [c.note, ""]
    lines += [
        f"Ratio = this run's tokens/s over the other run's, per variant and JAX version. A change is flagged beyond "
        f"{fmt(c.threshold * 100, 3)}% ({c.threshold_source}; the threshold is the largest of this run's noise, the "
        f"other run's noise and a {fmt(MIN_COMPARE_THRESHOLD * 100, 2)}% floor).",
        "",
    ]
    table = pd.DataFrame(
        {
            "variant": c.table["variant"],
            "jax": c.table["jax"],
            "tokens/s this run": c.table["tokens_per_s_this"].map(fmt),
            "tokens/s other run": c.table["tokens_per_s_other"].map(fmt),
            "ratio": c.table["ratio"].map(fmt_ratio),
            "flag": c.table["flag"],
        }
    )
    return lines + [markdown_table(table), ""]


def regression_banner(a: Analysis) -> list[str]:
    c = a.comparison
    if c is None:
        return []
    if c.note:
        return [f"> **--compare:** {c.note}", ""]
    if not c.regressions:
        return [f"> **--compare:** no regression beyond {fmt(c.threshold * 100, 3)}% against {c.other_dir}.", ""]
    return [
        f"> **REGRESSIONS** beyond the noise threshold ({fmt(c.threshold * 100, 3)}%) against {c.other_dir}:",
        ">",
        *[f"> - {r}" for r in c.regressions],
        "",
    ]
