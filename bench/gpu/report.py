"""REPORT.md and its plots for ``python -m bench.gpu``, from ``results.jsonl`` and ``device.json`` alone.

Every number here is from a record or the probe (the measured matmul), or from the hardware table
(bench.hardware.table, which cites its sources); none is a projection.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.gpu import plan
from bench.hardware.table import accelerator_for_device_kind
from bench.measure.pipeline import PROFILE_STEPS
from bench.records.store import load_records
from bench.report.format import fmt, markdown_table, pct
from model.config import Variant

REPORT = "REPORT.md"
DEVICE_FILE = "device.json"
PLOTS = {"throughput": "throughput.png", "components": "components.png"}
GiB = 2**30
H200_KIND = "NVIDIA H200"  # the lent GPU's device_kind, whose table row the GPU run is measured against
MFU_GOAL = 0.55  # the goal set for GPT-J's configuration with the best kernel, bf16, against the spec peak
ERROR_CHARS = 400


def _first(text: Any, limit: int = ERROR_CHARS) -> str:
    return " ".join(str(text or "").split())[:limit]


def _gib(value: Any) -> str:
    return fmt(value / GiB) if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def row_section(facts: Mapping[str, Any]) -> list[str]:
    """The hardware-table rows the utilisations are against: this device's, and the H200's."""
    lines = ["## Peaks", ""]
    for label, kind in (("this device", facts.get("device_kind", "")), ("the lent GPU", H200_KIND)):
        row = accelerator_for_device_kind(kind)
        if row is None:
            lines.append(f"- {label} ({kind!r}): no hardware-table row; MFU and HFU against a spec peak are n/a")
            continue
        lines.append(
            f"- {label}: hardware-table row **{row.name}**, dense bf16 peak "
            f"{fmt(row.peak_bf16_flops_per_device / 1e12)} TFLOP/s per device (source: {row.source})"
        )
    rate = facts.get("matmul_flops_per_s")
    lines += [
        f"- measured matmul ceiling: {fmt(rate / 1e12) if rate else 'n/a'} TFLOP/s ({facts.get('matmul_source')}); "
        "the column *MFU vs matmul* is the model FLOP/s over this rate, measured by this run, not a constant",
        "",
    ]
    return lines


def results_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    why = {run.variant: run.why for run in reversed(plan.PLAN)}  # a name planned twice: its first reason
    traced = next(run.why for run in plan.PLAN if run.profile)
    rows = []
    for r in records:
        rows.append(
            {
                "variant": r["variant"],
                "why": traced if r.get("profile_trace_path") else why.get(r["variant"], traced),
                "status": "skipped" if r.get("skipped_reason") else r["status"],
                "tokens/s": fmt(r.get("tokens_per_s")),
                "step ms": fmt(r["step_s_median"] * 1e3) if r.get("step_s_median") else "n/a",
                "MFU": pct(r.get("mfu")),
                "MFU vs matmul": pct(r.get("mfu_matmul")),
                "HFU": pct(r.get("hfu")),
                "peak GiB (memory_stats)": _gib(r.get("mem_device_peak_bytes")),
                "peak GiB (compiled)": _gib(r.get("mem_peak_estimate_bytes")),
                "collectives": fmt(r.get("comm_count_total")),
                "compile s": fmt(r.get("compile_s")),
            }
        )
    return pd.DataFrame(rows)


def goal_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    ok = {r["variant"]: r for r in records if r.get("status") == "ok" and not r.get("skipped_reason")}
    best = plan.best_kernel({name: r["tokens_per_s"] for name, r in ok.items()})
    if best is None:
        return ["- GPT-J's configuration: no kernel ran, so no MFU to compare with the goal", ""]
    record = ok[Variant.parse(plan.GPTJ_CONFIG).replace(attention_kernel=best).name]
    mfu = record.get("mfu")
    verdict = "n/a (no spec peak)" if mfu is None else ("reached" if mfu >= MFU_GOAL else "not reached")
    return [
        f"- GPT-J's configuration with its fastest kernel (**{best.value}**): {fmt(record.get('tokens_per_s'))} "
        f"tokens/s, MFU {pct(mfu)} against the spec peak, {pct(record.get('mfu_matmul'))} against the measured "
        f"matmul; the goal of {pct(MFU_GOAL)}: {verdict}",
        "",
    ]


def component_lines(records: Sequence[Mapping[str, Any]], figures: Mapping[str, str]) -> list[str]:
    lines = ["## Where the time goes (XProf trace, by block component)", ""]
    traced = [r for r in records if r.get("profile_trace_path") or r.get("profile_component_ms_per_step")]
    if not traced:
        return lines + ["No trace was captured (the traced run was skipped or failed; see its record).", ""]
    record = traced[-1]
    ms = record.get("profile_component_ms_per_step")
    if not ms:
        return lines + [f"{record['variant']}: trace captured, no breakdown: {_first(record.get('profile_error'))}", ""]
    total = sum(ms.values())
    frame = pd.DataFrame(
        [{"component": k, "ms per step": fmt(v), "share": pct(v / total if total else math.nan)} for k, v in
         sorted(ms.items(), key=lambda kv: -kv[1])]
    )  # fmt: skip
    lines += [
        f"MEASURED: {record['variant']}: op self times of {record.get('profile_steps', PROFILE_STEPS)} traced steps "
        "under the block-component labels of its optimized HLO (bench.measure.profile.component_fields), per step; "
        f"{pct(record.get('profile_component_matched_share'))} of the op time matched an HLO op; shares of busy "
        "device time, not of wall time.",
        "",
        markdown_table(frame),
        "",
    ]
    return lines + ([f"![components]({figures['components']})", ""] if "components" in figures else [])


def failure_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    failed = [r for r in records if r.get("status") != "ok"]
    if not failed:
        return []
    lines = ["## Failed and skipped runs, in the compiler's (or the budget's) words", ""]
    for r in failed:
        lines.append(f"- `{r['variant']}`: {_first(r.get('error'))}")
    return lines + [""]


def draw(records: Sequence[Mapping[str, Any]], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    ok = [r for r in records if r.get("status") == "ok" and r.get("tokens_per_s")]
    if ok:
        fig, axes = plt.subplots(figsize=(9, 0.4 * len(ok) + 1.5))
        axes.barh([r["variant"] for r in ok], [r["tokens_per_s"] for r in ok])
        axes.set_xlabel("tokens/s (measured)")
        axes.invert_yaxis()
        fig.tight_layout()
        fig.savefig(out / PLOTS["throughput"], dpi=100)
        plt.close(fig)
        figures["throughput"] = PLOTS["throughput"]
    ms = next((r["profile_component_ms_per_step"] for r in records if r.get("profile_component_ms_per_step")), None)
    if ms:
        fig, axes = plt.subplots(figsize=(8, 0.35 * len(ms) + 1.5))
        ranked = sorted(ms.items(), key=lambda kv: kv[1])
        axes.barh([k for k, _ in ranked], [v for _, v in ranked])
        axes.set_xlabel("ms of op self time per step (measured)")
        fig.tight_layout()
        fig.savefig(out / PLOTS["components"], dpi=100)
        plt.close(fig)
        figures["components"] = PLOTS["components"]
    return figures


def render(facts: Mapping[str, Any], records: Sequence[Mapping[str, Any]], figures: Mapping[str, str]) -> str:
    dry = "dry run on CPU (tiny sizes: the numbers test the path, they measure nothing)"
    mode = dry if facts.get("dry_run") else "GPU"
    sizing = plan.DRY_RUN if facts.get("dry_run") else plan.GPU
    lines = [
        "# gptj-bench on one GPU (`python -m bench.gpu`)",
        "",
        f"Mode: {mode}. Device: {facts.get('device_kind')} ({facts.get('platform')}), jax {facts.get('jax')}, "
        f"{facts.get('device_count')} device(s); nvidia-smi: {facts.get('nvidia_smi', 'not present')}; allocator "
        f"bytes_limit {_gib(facts.get('bytes_limit'))} GiB. Whole run {fmt(facts.get('elapsed_s'))} s of a "
        f"{fmt(facts.get('budget_s'))} s budget.",
        "",
    ]
    if "error" in facts:
        return "\n".join(lines + [f"**The probe failed; nothing ran.** {_first(facts['error'], 4000)}", ""])
    lines += [
        f"Model: GPT-J's block at d_model {sizing.d_model}, d_ff {sizing.d_ff}, seq {sizing.seq}, vocab "
        f"{sizing.vocab}, {sizing.n_layers} layers; bf16 compute, f32 master weights; mesh dp=1, mp=1; batch "
        f"{facts.get('batch')} ({facts.get('batch_source')}); {sizing.warmup} warm-up and {sizing.steps} timed steps.",
        "",
    ]
    lines += row_section(facts)
    lines += ["## Results", "", *goal_lines(records), markdown_table(results_frame(records)), ""]
    lines += [f"![throughput]({figures['throughput']})", ""] if "throughput" in figures else []
    lines += [
        "- HFU counts the recomputed forward for remat `full` only; for the named policies (`dots`, `attn`) it "
        "counts none, so their HFU is a lower bound.",
        "- Peak GiB (memory_stats) is the allocator's peak_bytes_in_use in the run's own process.",
        f"- {plan.XMAP_NOTE}.",
        "",
    ]
    lines += component_lines(records, figures)
    lines += failure_lines(records)
    return "\n".join(lines)


def write_report(out: Path) -> Path:
    facts = json.loads((out / DEVICE_FILE).read_text())
    records = load_records(out).records if (out / "results.jsonl").exists() else []
    figures = draw(records, out)
    path = out / REPORT
    path.write_text(render(facts, records, figures))
    return path
