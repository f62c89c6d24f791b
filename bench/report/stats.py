"""The numbers the report draws its conclusions from: per-variant summaries, the run's noise, paired effects of
each design choice, and the comparison of two runs.

Every figure is computed from the records alone; formatting is ``bench.report.format``'s, wording the sections'.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.format import fmt, number
from bench.report.load import config_text, load_run, row_key
from model.config import AXES

# A --compare change is flagged only beyond max(noise of either run, this floor): a noise estimate from two
# repeats can be near zero by chance, and timing on a shared machine is rarely steadier than this.
MIN_COMPARE_THRESHOLD = 0.02

# ---------------------------------------------------------------------------------------------------- summary

# Summary frame column: the record field whose median over a variant's ok repeats it holds.
MEDIAN_FIELDS = (
    "tokens_per_s",
    "tokens_per_s_per_device",
    "mfu",
    "mfu_6n",
    "hfu",
    "step_median_s",
    "compile_s",
    "mem_peak_estimate_bytes_per_device",
    "comm_mp_wire_bytes_per_device",
    "comm_dp_wire_bytes_per_device",
    "comm_allreduce_count",
)
_SUMMARY_COLUMNS = [
    "variant",
    "jax",
    "repeats",
    *MEDIAN_FIELDS,
    "tokens_per_s_min",
    "tokens_per_s_max",
    "spread",
    "spread_source",
]


def summarise(measured: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (variant, jax) with ok records: medians over repeats, the tokens/s range and its spread."""
    rows: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in measured:
        if record["status"] == "ok":
            rows.setdefault(row_key(record), []).append(record)
    out = [_summary_row(variant, jax, records) for (variant, jax), records in rows.items()]
    frame = pd.DataFrame(out, columns=_SUMMARY_COLUMNS)
    frame = frame.sort_values("tokens_per_s", ascending=False, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def _summary_row(variant: str, jax: str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant, "jax": jax, "repeats": len(records)}
    for name in MEDIAN_FIELDS:
        values = [v for v in (number(r.get(name)) for r in records) if not math.isnan(v)]
        row[name] = statistics.median(values) if values else math.nan
    timed = [number(r.get("tokens_per_s")) for r in records]
    timed = [v for v in timed if not math.isnan(v)]
    row["tokens_per_s_min"] = min(timed) if timed else math.nan
    row["tokens_per_s_max"] = max(timed) if timed else math.nan
    row["spread"], row["spread_source"] = _spread(records, timed)
    return row


def _spread(records: Sequence[Mapping[str, Any]], timed: Sequence[float]) -> tuple[float, str]:
    """Relative spread of tokens/s: (max - min) / median over repeats; one repeat: the timed steps' IQR / median."""
    if len(timed) >= 2:
        return (max(timed) - min(timed)) / statistics.median(timed), "repeats"
    iqr, median = number(records[0].get("step_iqr_s")), number(records[0].get("step_median_s"))
    if len(records) == 1 and median > 0 and not math.isnan(iqr):
        return iqr / median, "step IQR"
    return math.nan, ""


def peak_source(measured: Iterable[Mapping[str, Any]], row: Mapping[str, Any]) -> str:
    """Where the peak FLOP/s of a summary row's utilisation came from: the first of its records that says."""
    for record in measured:
        if row_key(record) == (row["variant"], row["jax"]) and record.get("peak_source"):
            return f"peak: {record['peak_source']}"
    return "no peak recorded"


def failures(measured: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    ok = Counter(row_key(r) for r in measured if r["status"] == "ok")
    rows = [
        {
            "variant": r["variant"],
            "jax": row_key(r)[1],
            "repeat": r.get("repeat", 0),
            "error": r.get("error") or "(no error recorded)",
            "ok repeats": ok[row_key(r)],
        }
        for r in measured
        if r["status"] == "failed"
    ]
    return pd.DataFrame(rows, columns=["variant", "jax", "repeat", "error", "ok repeats"])


# ---------------------------------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class Noise:
    fraction: float | None  # relative; None when the run gives no estimate
    source: str

    def short(self) -> str:
        return "unknown" if self.fraction is None else f"{fmt(self.fraction * 100, 3)}%"

    def text(self) -> str:
        return self.short() + ("" if self.fraction is None else f" ({self.source})")


def run_noise(summary: pd.DataFrame) -> Noise:
    """Median relative spread of tokens/s over repeats; without repeats, the median within-run step-time IQR."""
    for source, label in (
        ("repeats", "median over variants of (max - min) / median across repeats"),
        ("step IQR", "median over variants of the timed steps' IQR / median; no repeats"),
    ):
        values = summary.loc[summary["spread_source"] == source, "spread"].dropna()
        if len(values):
            return Noise(float(values.median()), label)
    return Noise(None, "no repeats and no step-time spread")


# ---------------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Comparison:
    axis: str  # a key of model.config.AXES, or "jax"
    a: str
    b: str

    @property
    def label(self) -> str:
        if self.axis == "jax":
            return f"jax {self.a} vs jax {self.b}"
        return f"{self.a} vs {self.b}"


DESIGN_COMPARISONS = (
    Comparison("residual", "parallel", "serial"),
    Comparison("head", "h256", "h128"),
    Comparison("strategy", "xmap", "pjit"),
    Comparison("strategy", "xmap", "shard_map"),
    Comparison("strategy", "pjit", "shard_map"),
    Comparison("remat", "full", "none"),
)


@dataclass(frozen=True)
class Pair:
    a_index: int  # summary row of the variant with value a
    b_index: int
    tokens_per_s_ratio: float
    memory_ratio: float  # peak memory per device, a / b (nan where either lacks it)
    jax: str


@dataclass(frozen=True)
class Effect:
    comparison: Comparison
    pairs: tuple[Pair, ...]

    @property
    def ratios(self) -> list[float]:
        return [p.tokens_per_s_ratio for p in self.pairs]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.pairs else math.nan

    @property
    def memory_median(self) -> float:
        values = [p.memory_ratio for p in self.pairs if not math.isnan(p.memory_ratio)]
        return statistics.median(values) if values else math.nan

    def exceeds(self, noise: Noise) -> bool | None:
        if noise.fraction is None or not self.pairs:
            return None
        return bool(abs(self.median - 1) > noise.fraction)


def axis_values(variant: str, jax: str) -> dict[str, str] | None:
    """{"jax": ..., "residual": ..., "head": ..., "strategy": ..., "remat": ..., "kernel": ...}, or None for a name of
    another form. The attention kernel is the name's "+kernel" suffix, "reference" without one (model.config)."""
    name, _, kernel = variant.partition("+")
    parts = name.split("-")
    if len(parts) != len(AXES):
        return None
    return {"jax": jax, **dict(zip(AXES, parts)), "kernel": kernel or "reference"}


def pair_effect(summary: pd.DataFrame, comparison: Comparison, same_jax: bool = True) -> Effect:
    """Ratios a / b over every pair of rows equal in all other axes (and, unless same_jax is False, the JAX version)."""
    held = [k for k in ("jax", *AXES, "kernel") if k != comparison.axis and (same_jax or k != "jax")]
    index: dict[tuple, list[int]] = {}
    values_of = {}
    for i, row in summary.iterrows():
        values = axis_values(row["variant"], row["jax"])
        if values is None or math.isnan(row["tokens_per_s"]):
            continue
        values_of[i] = values
        index.setdefault((values[comparison.axis], *(values[k] for k in held)), []).append(i)
    pairs = []
    for i, values in values_of.items():
        if values[comparison.axis] != comparison.a:
            continue
        for j in index.get((comparison.b, *(values[k] for k in held)), []):
            a, b = summary.loc[i], summary.loc[j]
            if not same_jax and a["jax"] == b["jax"]:
                continue
            jax = a["jax"] if a["jax"] == b["jax"] else f"{a['jax']} / {b['jax']}"
            memory = float(a["mem_peak_estimate_bytes_per_device"] / b["mem_peak_estimate_bytes_per_device"])
            pairs.append(Pair(int(i), int(j), float(a["tokens_per_s"] / b["tokens_per_s"]), memory, jax))
    return Effect(comparison, tuple(pairs))


def version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def environment_comparisons(summary: pd.DataFrame) -> list[Comparison]:
    """Same variant in two JAX environments: the environment's own effect (newer vs older)."""
    versions = sorted(set(summary["jax"]), key=version_key)
    return [Comparison("jax", new, old) for k, new in enumerate(versions) for old in versions[:k]]


def effects(summary: pd.DataFrame) -> list[Effect]:
    return [pair_effect(summary, c) for c in (*DESIGN_COMPARISONS, *environment_comparisons(summary))]


def cross_environment_effects(summary: pd.DataFrame, found: Sequence[Effect]) -> list[Effect]:
    """xmap comparisons that have no same-environment pair, paired across JAX versions instead (labelled so)."""
    out = []
    for effect in found:
        if effect.comparison.axis == "strategy" and "xmap" in (effect.comparison.a, effect.comparison.b):
            if not effect.pairs:
                crossed = pair_effect(summary, effect.comparison, same_jax=False)
                if crossed.pairs:
                    out.append(crossed)
    return out


# ---------------------------------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class CompareResult:
    other_dir: Path
    table: pd.DataFrame  # variant, jax, this, other, ratio, flag
    threshold: float
    threshold_source: str
    regressions: tuple[str, ...]
    note: str | None  # why rows could not be compared, if they could not


def compare_runs(
    summary: pd.DataFrame, noise: Noise, config: Mapping[str, Any] | None, other_dir: Path
) -> CompareResult:
    """This run's tokens/s (``summary``, ``noise``, ``config``) against the run in ``other_dir``, row by row."""
    other_run = load_run(other_dir)
    other = summarise(other_run.measured)
    threshold, source = _threshold(noise, run_noise(other))
    if other_run.config != config:
        note = f"not compared: this run is {config_text(config)}, {other_dir} is {config_text(other_run.config)}"
        return CompareResult(other_dir, pd.DataFrame(), threshold, source, (), note)
    merged = summary[["variant", "jax", "tokens_per_s"]].merge(
        other[["variant", "jax", "tokens_per_s"]], on=["variant", "jax"], how="outer", suffixes=("_this", "_other")
    )
    merged["ratio"] = merged["tokens_per_s_this"] / merged["tokens_per_s_other"]
    merged["flag"] = [
        _flag(r, t, o, threshold)
        for r, t, o in zip(merged["ratio"], merged["tokens_per_s_this"], merged["tokens_per_s_other"])
    ]
    regressions = tuple(
        f"{v} (jax {j}): {r:.3f}x ({fmt(t)} tokens/s here, {fmt(o)} in {other_dir})"
        for v, j, r, t, o, f in merged[
            ["variant", "jax", "ratio", "tokens_per_s_this", "tokens_per_s_other", "flag"]
        ].itertuples(index=False)
        if f == "REGRESSION"
    )
    return CompareResult(other_dir, merged, threshold, source, regressions, None)


def _threshold(this: Noise, other: Noise) -> tuple[float, str]:
    """The largest of either run's noise and the floor, and which it is."""
    candidates = [(MIN_COMPARE_THRESHOLD, "floor")]
    for noise, name in ((this, "this run's noise"), (other, "the other run's noise")):
        if noise.fraction is not None:
            candidates.append((noise.fraction, name))
    return max(candidates)


def _flag(ratio: float, this: float, other: float, threshold: float) -> str:
    if math.isnan(this) and math.isnan(other):
        return "no throughput in either run"
    if math.isnan(other):
        return "only in this run"
    if math.isnan(this):
        return "only in the other run"
    if ratio < 1 - threshold:
        return "REGRESSION"
    if ratio > 1 + threshold:
        return "faster"
    return "within noise"
