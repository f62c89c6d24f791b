"""Sections 1 and 2: the headline (the TPU ranking, a projection, with its reasons; then this machine's fastest
variant, each measured design effect and GPT-J) and the summary table of every variant, with the failed ones."""

from __future__ import annotations

import math

import pandas as pd

from bench.analysis import comm
from bench.report.analyse import Analysis
from bench.report.format import MiB, constant_columns, figure, fmt, markdown_table, pct, scaled, source
from bench.report.load import RunRecords
from bench.report.sections.baseline import gptj_sentence
from bench.report.sections.components import effect_lines
from bench.report.sections.effects import effect_sentence
from bench.report.sections.environment import peak_warnings
from bench.report.sections.projection import projection_headline
from bench.report.stats import peak_source

ERROR_CHARS = 300  # of an error message in the failures table; the record keeps all of it
SUMMARY_HEADERS = {  # summary table column: the summary frame column it shows and its scale
    "tokens/s": ("tokens_per_s", 1),
    "MFU %": ("mfu", 100),
    "MFU (6N) %": ("mfu_6n", 100),
    "HFU %": ("hfu", 100),
    "step ms": ("step_median_s", 1e3),
}
RESOURCE_HEADERS = {  # the second table's columns, what each variant costs beside its speed
    "tokens/s per device": ("tokens_per_s_per_device", 1),
    "compile s": ("compile_s", 1),
    "peak memory per device MiB": ("mem_peak_estimate_bytes_per_device", 1 / MiB),
    "TP (mp) wire MiB/step": ("comm_mp_wire_bytes_per_device", 1 / MiB),
    "DP (dp) wire MiB/step": ("comm_dp_wire_bytes_per_device", 1 / MiB),
    "all-reduces/step": ("comm_allreduce_count", 1),
}
ROW_NAME = ("rank", "variant")  # columns kept in a table even where constant: they name its rows


def section_headline(a: Analysis) -> list[str]:
    """The TPU ranking first (a projection, with its reasons), then what this machine measured."""
    lines = ["## 1. Headline", ""]
    lines += projection_headline(a.projections, reasons=effect_lines(a.projections))
    timed = a.summary.dropna(subset=["tokens_per_s"])
    if a.projections and a.run.measured:
        lines += [f"**What this machine measured** ({devices_text(a.run)}; not the TPU):", ""]
    if not timed.empty:
        best = timed.iloc[0]
        lines.append(
            f"Fastest: **{best['variant']}** (jax {best['jax']}) at **{fmt(best['tokens_per_s'])} tokens/s** "
            f"({fmt(best['tokens_per_s_per_device'])} per device, {devices_text(a.run)}), "
            f"MFU {pct(best['mfu'])}, MFU (6N) {pct(best['mfu_6n'])}, HFU {pct(best['hfu'])} "
            f"of its own peak ({peak_source(a.run.measured, best)})."
        )
    lines += [f"**{w}** (section 7)." for w in peak_warnings(a.run)]  # the MFU figures' own caveat, said first
    lines.append("")
    for effect in a.effects:
        if effect.pairs:
            lines.append(f"- {effect_sentence(effect, a.noise)}")
    if not any(e.pairs for e in a.effects) and not timed.empty:
        lines.append("- No design effect can be measured: no two variants differ in exactly one axis.")
    lines.append(f"- GPT-J-6B: {gptj_sentence()} (section 4).")
    return lines


def devices_text(run: RunRecords) -> str:
    config = run.config or {}
    kinds = sorted({str(r.get("device_kind")) for r in run.measured if r.get("device_kind")})
    count = config.get("mesh_dp", 0) * config.get("mesh_mp", 0)
    return f"{count} {'/'.join(kinds) or 'unknown'} device{'' if count == 1 else 's'}"


def summary_table(summary: pd.DataFrame, headers: dict[str, tuple[str, float]] = SUMMARY_HEADERS) -> pd.DataFrame:
    table = pd.DataFrame({"rank": range(1, len(summary) + 1), "variant": summary["variant"], "jax": summary["jax"]})
    if headers is SUMMARY_HEADERS:
        table["repeats"] = summary["repeats"].map(str)
    for header, (column, scale) in headers.items():
        table[header] = scaled(summary[column], scale)
        if column == "tokens_per_s":
            table["spread %"] = [
                "n/a" if math.isnan(s) else f"{fmt(s * 100, 2)} ({source})"
                for s, source in zip(summary["spread"], summary["spread_source"])
            ]
    return table


def _table_lines(table: pd.DataFrame) -> list[str]:
    said, shown = constant_columns(table, keep=ROW_NAME)
    return [*([said, ""] if said else []), markdown_table(shown), ""]


def section_summary(a: Analysis) -> list[str]:
    return [
        "## 2. Summary",
        "",
        "One row per variant and JAX version, ranked by tokens/s. Values are medians over the ok repeats; spread is "
        "(max - min) / median over repeats, or the timed steps' IQR / median where a variant ran once. "
        f"Run noise: {a.noise.text()}.",
        "",
        *_table_lines(summary_table(a.summary)),
        *figure(a.figures, "throughput", "Measured tokens/s by variant"),
        f"What each variant costs, in the same order. Wire bytes are what each device sends per step (ring "
        f"algorithms, {source(comm)}); memory is the compiler's peak estimate per device.",
        "",
        *_table_lines(summary_table(a.summary, RESOURCE_HEADERS)),
    ]


def section_failed(a: Analysis) -> list[str]:
    table = a.failed.copy()
    table["error"] = table["error"].map(lambda e: e if len(e) <= ERROR_CHARS else e[:ERROR_CHARS] + "...")
    table["repeat"] = table["repeat"].map(str)
    table["ok repeats"] = table["ok repeats"].map(str)
    return ["### Failed variants", "", markdown_table(table), ""]
