"""How the report writes a number, a percentage, a ratio, a markdown table and a link to a plot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

MiB = 2**20


def number(value: Any) -> float:
    """A record field as a float; nan for a missing, boolean or non-numeric value."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt(value: Any, digits: int = 4) -> str:
    """``digits`` significant digits, thousands separated, never in exponent form; "n/a" for a missing value."""
    value = number(value)
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= digits - 1 or value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.{digits - 1 - magnitude}f}"


def pct(fraction: Any, digits: int = 4) -> str:
    """A fraction as a percentage: pct(0.2026) == "20.26%"; "n/a" when missing."""
    text = fmt(number(fraction) * 100, digits)
    return text if text == "n/a" else text + "%"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}x"


def scaled(series: pd.Series, scale: float) -> pd.Series:
    return series.map(lambda v: fmt(number(v) * scale))


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured table; cells are pre-formatted strings, so tabulate must not re-parse them as numbers."""
    return frame.map(_cell).to_markdown(index=False, disable_numparse=True)


def figure(figures: Mapping[str, str], name: str, alt: str) -> list[str]:
    """The markdown image of plot ``name`` where it was drawn (``figures``: plot name -> file beside REPORT.md)."""
    return [f"![{alt}]({figures[name]})", ""] if name in figures else []
