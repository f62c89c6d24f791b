"""Sections 1 and 2: the headline (the TPU ranking, a projection, with its reasons; then this machine's fastest
variant, each measured design effect and GPT-J) and the summary table of every variant, with the failed ones."""

from __future__ import annotations

import math

import pandas as pd

from bench.report.analyse import Analysis
from bench.report.format import MiB, figure, fmt, markdown_table, pct, scaled
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
    "tokens/s per device": ("tokens_per_s_per_device", 1),
    "MFU %": ("mfu", 100),
    "MFU (6N) %": ("mfu_6n", 100),
    "HFU %": ("hfu", 100),
    "step ms": ("step_s_median", 1e3),
    "compile s": ("compile_s", 1),
    "peak memory per device MiB": ("mem_peak_estimate_bytes", 1 / MiB),
    "TP (mp) wire MiB/step": ("comm_mp_wire_bytes", 1 / MiB),
    "DP (dp) wire MiB/step": ("comm_dp_wire_bytes", 1 / MiB),
    "all-reduces/step": ("comm_allreduce_count", 1),
}


def section_headline(a: Analysis) -> list[str]:
    """The TPU ranking first (a projection, with its reasons), then what this machine measured."""
    lines = ["## 1. Headline", ""]
    lines += projection_headline(a.projections, reasons=effect_lines(a.projections))
    timed = a.summary.dropna(subset=["tokens_per_s"])
    if a.projections and a.run.measured:
        lines += [f"**What this machine measured** ({_devices_text(a.run)}; not the TPU):", ""]
    if timed.empty:
        lines.append("No measured variant has a throughput in this run (see sections 2 and 4).")
    else:
        best = timed.iloc[0]
        lines.append(
            f"Fastest: **{best['variant']}** (jax {best['jax']}) at **{fmt(best['tokens_per_s'])} tokens/s** "
            f"({fmt(best['tokens_per_s_per_device'])} per device, {_devices_text(a.run)}), "
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


def _devices_text(run: RunRecords) -> str:
    config = run.config or {}
    kinds = sorted({str(r.get("device_kind")) for r in run.measured if r.get("device_kind")})
    return f"{config.get('mesh_dp', 0) * config.get('mesh_mp', 0)} {'/'.join(kinds) or 'unknown'} devices"


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({"rank": range(1, len(summary) + 1), "variant": summary["variant"], "jax": summary["jax"]})
    table["repeats"] = summary["repeats"].map(str)
    for header, (column, scale) in SUMMARY_HEADERS.items():
        table[header] = scaled(summary[column], scale)
        if column == "tokens_per_s":
            table["spread %"] = [
                "n/a" if math.isnan(s) else f"{fmt(s * 100, 2)} ({source})"
                for s, source in zip(summary["spread"], summary["spread_source"])
            ]
    return table


def section_summary(a: Analysis) -> list[str]:
    lines = ["## 2. Summary", ""]
    if a.summary.empty:
        lines += ["No measured variant finished (failures below, if any).", ""]
    else:
        lines += [
            f"One row per variant and JAX version, ranked by tokens/s. Values are medians over the ok repeats; "
            f"spread is (max - min) / median over repeats, or the timed steps' IQR / median where a variant ran once. "
            f"Run noise: {a.noise.text()}. Wire bytes are what each device sends per step (ring algorithms, "
            f"bench/comm.py); memory is the compiler's peak estimate per device.",
            "",
            markdown_table(summary_table(a.summary)),
            "",
        ]
        lines += figure(a.figures, "throughput", "Measured tokens/s by variant")
    lines += ["### Failed variants", ""]
    if a.failed.empty:
        lines.append("None: every recorded variant finished.")
    else:
        table = a.failed.copy()
        table["error"] = table["error"].map(lambda e: e if len(e) <= ERROR_CHARS else e[:ERROR_CHARS] + "...")
        table["repeat"] = table["repeat"].map(str)
        table["ok repeats"] = table["ok repeats"].map(str)
        lines += [markdown_table(table)]
    return lines
