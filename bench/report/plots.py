"""PNG plots for REPORT.md, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

Each function takes the report's own tables (pandas DataFrames built by bench/report/write.py and the sections,
one row per variant and JAX version), writes one PNG and returns its path, or None when there is nothing to draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.records.collectives import CollectiveKind
from bench.records.schema import comm_key
from bench.report.format import MiB

DPI = 100
STRATEGY_COLOURS = {"pjit": "tab:blue", "shard_map": "tab:orange", "xmap": "tab:green", "single": "tab:gray"}


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def _labels(frame: pd.DataFrame) -> list[str]:
    return [f"{v} (jax {j})" for v, j in zip(frame["variant"], frame["jax"])]


def _strategy(variant: str) -> str:
    parts = variant.split("-")
    return parts[2] if len(parts) == 4 else ""


def throughput(summary: pd.DataFrame, path: Path) -> Path | None:
    """Ranked tokens/s per variant, bars coloured by strategy, whiskers from the slowest to the fastest repeat."""
    frame = summary.dropna(subset=["tokens_per_s"]).sort_values("tokens_per_s")
    if frame.empty:
        return None
    figure = Figure(figsize=(8, 1.5 + 0.3 * len(frame)))
    axes = figure.add_subplot()
    low = (frame["tokens_per_s"] - frame["tokens_per_s_min"]).clip(lower=0)
    high = (frame["tokens_per_s_max"] - frame["tokens_per_s"]).clip(lower=0)
    colours = [STRATEGY_COLOURS.get(_strategy(v), "tab:purple") for v in frame["variant"]]
    axes.barh(_labels(frame), frame["tokens_per_s"], xerr=[low, high], color=colours)
    axes.set_xlabel("tokens/s (median over repeats; whiskers: min to max)")
    axes.set_title("Measured throughput by variant (colour: strategy)")
    return _save(figure, path)


def effects(pairs: pd.DataFrame, path: Path) -> Path | None:
    """One panel per design choice: each line joins two variants that differ only in that choice."""
    if pairs.empty:
        return None
    comparisons = list(dict.fromkeys(pairs["comparison"]))
    figure = Figure(figsize=(3.2 * len(comparisons), 3.6))
    for index, comparison in enumerate(comparisons, start=1):
        axes = figure.add_subplot(1, len(comparisons), index)
        rows = pairs[pairs["comparison"] == comparison]
        for _, row in rows.iterrows():
            axes.plot([0, 1], [row["tokens_per_s_b"], row["tokens_per_s_a"]], marker="o", color="tab:blue", alpha=0.7)
        axes.set_xticks([0, 1], [rows["b"].iloc[0], rows["a"].iloc[0]])
        axes.set_xlim(-0.3, 1.3)
        axes.set_title(comparison, fontsize=9)
        if index == 1:
            axes.set_ylabel("tokens/s (median over repeats)")
    figure.suptitle("Paired effects: other axes and JAX version held fixed", fontsize=10)
    return _save(figure, path)


def utilisation(summary: pd.DataFrame, references: Mapping[str, float], path: Path) -> Path | None:
    """MFU, MFU (6N) and HFU per variant in percent, with reference lines (e.g. GPT-J's published figures)."""
    columns = {"mfu": "MFU", "mfu_6n": "MFU (6N)", "hfu": "HFU"}
    frame = summary.dropna(subset=list(columns), how="all").sort_values("tokens_per_s", ascending=False)
    if frame.empty:
        return None
    figure = Figure(figsize=(max(6, 0.45 * len(frame) + 3), 4.5))
    axes = figure.add_subplot()
    width = 0.8 / len(columns)
    positions = range(len(frame))
    for offset, (key, label) in enumerate(columns.items()):
        axes.bar([p + offset * width for p in positions], frame[key] * 100, width, label=label)
    for (label, value), style in zip(references.items(), ("--", ":", "-.")):
        axes.axhline(value * 100, linestyle=style, color="black", linewidth=1, label=label)
    axes.set_xticks([p + width for p in positions], _labels(frame), rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("% of peak (this run: its own peak source)")
    axes.set_title("Utilisation by variant")
    axes.legend(fontsize=7)
    return _save(figure, path)


def wire_bytes(comm: pd.DataFrame, path: Path) -> Path | None:
    """Bytes each device sends per step, stacked by collective kind (from the compiled HLO)."""
    kinds = [k for k in CollectiveKind if comm_key(None, k, "wire_bytes") in comm]
    if comm.empty or not kinds:
        return None
    figure = Figure(figsize=(max(6, 0.45 * len(comm) + 3), 4.5))
    axes = figure.add_subplot()
    bottom = pd.Series(0.0, index=comm.index)
    for kind in kinds:
        values = comm[comm_key(None, kind, "wire_bytes")].fillna(0) / MiB
        if values.any():
            axes.bar(range(len(comm)), values, bottom=bottom, label=kind.label)
            bottom = bottom + values
    axes.set_xticks(range(len(comm)), _labels(comm), rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("MiB on the wire per device per step")
    axes.set_title("Bytes on the wire by collective kind")
    axes.legend(fontsize=7)
    return _save(figure, path)


def memory_vs_throughput(summary: pd.DataFrame, remat_pairs: Sequence[tuple[int, int]], path: Path) -> Path | None:
    """Peak memory per device against tokens/s; lines join variants that differ only in remat."""
    frame = summary.dropna(subset=["tokens_per_s", "mem_peak_estimate_bytes_per_device"])
    if frame.empty:
        return None
    figure = Figure(figsize=(7, 5))
    axes = figure.add_subplot()
    for remat, marker in (("none", "o"), ("full", "s")):
        rows = frame[[v.endswith(f"-{remat}") for v in frame["variant"]]]
        axes.scatter(
            rows["mem_peak_estimate_bytes_per_device"] / MiB,
            rows["tokens_per_s"],
            marker=marker,
            label=f"remat {remat}",
        )
    for full, none in remat_pairs:
        if full in frame.index and none in frame.index:
            xs = frame.loc[[full, none], "mem_peak_estimate_bytes_per_device"] / MiB
            axes.plot(xs, frame.loc[[full, none], "tokens_per_s"], color="gray", linewidth=0.8)
    axes.set_xlabel("peak memory per device, MiB (compiler estimate)")
    axes.set_ylabel("tokens/s (median over repeats)")
    axes.set_title("Remat trade-off: memory against throughput")
    axes.legend()
    return _save(figure, path)


def projection(
    projections: pd.DataFrame, reference_tokens_per_s: float, reference_label: str, path: Path
) -> Path | None:
    """PROJECTED tokens/s per variant, ranked: a bar from the no-overlap bound to the full-overlap bound, a vertical
    line at the published reference, and a black band for each variant at the reference's efficiency."""
    if projections.empty:
        return None
    frame = projections.iloc[::-1]  # ranked fastest first (sections/projection.ranked); barh draws bottom up
    figure = Figure(figsize=(9, 1.8 + 0.42 * len(frame)))
    axes = figure.add_subplot()
    labels = [
        f"{v} (jax {j})" + ("" if fits else " DOES NOT FIT HBM")
        for v, j, fits in zip(frame["variant"], frame["jax"], frame["fits"])
    ]
    low, high = frame["tokens_per_s_serial"], frame["tokens_per_s_overlap"]
    positions = range(len(frame))
    bars = axes.barh(
        positions, high - low, left=low, color="tab:blue", alpha=0.6, label="projection: no overlap to full overlap"
    )
    for bar, fits in zip(bars, frame["fits"]):
        if not fits:
            bar.set_hatch("//")
            bar.set_facecolor("lightgray")
    at_low, at_high = frame["at_gptj_low"], frame["at_gptj_high"]
    if at_low.notna().any():
        axes.hlines(positions, at_low, at_high, color="black", linewidth=3)
        axes.scatter(
            pd.concat([at_low, at_high]),
            [*positions, *positions],
            color="black",
            marker="|",
            s=60,
            label="projection at GPT-J's efficiency (its band)",
        )
    axes.axvline(reference_tokens_per_s, color="tab:red", linestyle="--", label=reference_label)
    axes.set_xlim(left=0)
    axes.set_yticks(list(positions), labels, fontsize=7)
    axes.set_xlabel("tokens/s (PROJECTION, not measured)")
    axes.set_title("PROJECTION (not measured): tokens/s from TPU ahead-of-time compiles, ranked", fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def components(frame: pd.DataFrame, path: Path) -> Path | None:
    """PROJECTED milliseconds per step by component, one stacked bar per variant, ranked (sections/components)."""
    if frame.empty:
        return None
    rows = frame.iloc[::-1]  # ranked fastest first; barh draws bottom up
    columns = [c for c in rows.columns if c not in ("variant", "jax", "no-overlap step ms")]
    figure = Figure(figsize=(10, 2.2 + 0.42 * len(rows)))
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["tab20"].resampled(max(len(columns), 1))
    positions = range(len(rows))
    left_pos = [0.0] * len(rows)
    left_neg = [0.0] * len(rows)
    for i, column in enumerate(columns):
        values = list(rows[column])
        lefts = [lp if v >= 0 else ln for v, lp, ln in zip(values, left_pos, left_neg)]
        axes.barh(positions, values, left=lefts, color=colours(i), label=column)
        left_pos = [lp + max(v, 0.0) for v, lp in zip(values, left_pos)]
        left_neg = [ln + min(v, 0.0) for v, ln in zip(values, left_neg)]
    axes.set_yticks(list(positions), _labels(rows), fontsize=7)
    axes.set_xlabel("ms per step per device, no overlap (PROJECTION, not measured)")
    axes.set_title("PROJECTION (not measured): where the step goes, by block component", fontsize=10)
    axes.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def measured_components(s_per_step: Mapping[str, float], path: Path) -> Path | None:
    """MEASURED ms of op self time per step by block component (a traced run's profile, in seconds), largest on
    top."""
    if not s_per_step:
        return None
    ranked = sorted(((k, v * 1e3) for k, v in s_per_step.items()), key=lambda kv: kv[1])
    figure = Figure(figsize=(8, 1.5 + 0.35 * len(ranked)))
    axes = figure.add_subplot()
    axes.barh([k for k, _ in ranked], [v for _, v in ranked])
    axes.set_xlabel("ms of op self time per step (measured)")
    return _save(figure, path)
