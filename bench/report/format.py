"""How the report writes a number, a percentage, a ratio, a markdown table and a link to a plot."""

from __future__ import annotations

import importlib.util
import math
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

MiB = 2**20
REPO = Path(__file__).resolve().parents[2]  # bench/report/format.py: the repository root, for citations
PROSE_WIDTH = 120  # a report's prose lines, as the code's; tables and commands keep their own width
LIST_CONTINUATION = "  "  # a wrapped list item's later lines
QUOTE_CONTINUATION = ">   "  # a wrapped quoted line's later lines: still the quote, not a new line of it


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


def span(low: Any, high: Any, show: Callable[[Any], str] = fmt, unit: str = "") -> str:
    """A range as the report writes it: "1 to 2", or one number where both ends print alike."""
    first, last = show(low), show(high)
    return first + unit if first == last else f"{first}{unit} to {last}{unit}"


def constant_columns(frame: pd.DataFrame, keep: Sequence[str] = ()) -> tuple[str, pd.DataFrame]:
    """A table's columns that hold one value in every row, as a sentence to print above it, and the table without
    them (``keep``: columns that stay even when constant, the row's name say). A one-row table is left as it is."""
    if len(frame) < 2:
        return "", frame
    constant = [c for c in frame.columns if c not in keep and frame[c].map(str).nunique() == 1]
    if not constant:
        return "", frame
    said = "; ".join(f"{c}: {frame[c].iloc[0]}" for c in constant)
    return f"Every row has {said}.", frame.drop(columns=constant)


def source(thing: Any) -> str:
    """The repository path of the module that defines ``thing`` (a module, function or class), so that a citation
    in a report follows the code when it moves."""
    module = thing if isinstance(thing, ModuleType) else sys.modules[thing.__module__]
    return Path(module.__file__).resolve().relative_to(REPO).as_posix()


def module_path(name: str) -> str:
    """The repository path of module ``name``, found without importing it (one that would import JAX, say)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(name)
    return Path(spec.origin).resolve().relative_to(REPO).as_posix()


def wrap_prose(markdown: str, width: int = PROSE_WIDTH) -> str:
    """Wrap the paragraphs and list items of ``markdown`` at ``width``; tables, code blocks, headings and images are
    left as they are (a markdown reader joins the wrapped lines again)."""
    out, in_code = [], False
    for line in markdown.split("\n"):
        if line.startswith("```"):
            in_code = not in_code
        if in_code or len(line) <= width or line.startswith(("|", "#", "![", "```")):
            out.append(line)
            continue
        indent = QUOTE_CONTINUATION if line.startswith("> ") else LIST_CONTINUATION if line.startswith("- ") else ""
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)
