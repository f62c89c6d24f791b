"""A one-GPU run's sections (``python -m bench.gpu``): the device and its peaks, each planned run's result, where
the traced run's time goes, and what failed or was skipped. Read from RUN_DIR's records and the probe's device.json
(``RunRecords.device``); every number is from a record, the probe's measured matmul or the hardware table (which
cites its sources). None is a projection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.gpu import plan
from bench.hardware.table import accelerator_for_device_kind
from bench.report.analyse import Analysis
from bench.report.format import figure, fmt, markdown_table, pct
from model.config import Variant

GiB = 2**30
H200_KIND = "NVIDIA H200"  # the lent GPU's device_kind, whose table row the GPU run is measured against
# The stated goal for GPT-J's configuration with its fastest kernel, bf16, against the spec peak: what a tuned
# dense-transformer step reaches on this class of GPU, so a run below it says the block leaves speed unused.
MFU_GOAL = 0.55
ERROR_CHARS = 400


def _first(text: Any, limit: int = ERROR_CHARS) -> str:
    return " ".join(str(text or "").split())[:limit]


def _gib(value: Any) -> str:
    return fmt(value / GiB) if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def _records(a: Analysis) -> list[Mapping[str, Any]]:
    return list(a.run.measured)


def _ran(a: Analysis) -> dict[str, Mapping[str, Any]]:
    return {r["variant"]: r for r in _records(a) if r.get("status") == "ok" and not r.get("skipped_reason")}


def has_device(a: Analysis) -> bool:
    return a.run.device is not None


def probe_ok(a: Analysis) -> bool:
    return a.run.device is not None and "error" not in a.run.device


def section_setup(a: Analysis) -> list[str]:
    """What ran where: the mode, the device, the budget and, where the probe worked, the model's sizes."""
    facts = a.run.device or {}
    dry = "dry run on CPU (tiny sizes: the numbers test the path, they measure nothing)"
    lines = [
        "## Setup",
        "",
        f"Mode: {dry if facts.get('dry_run') else 'GPU'}. Device: {facts.get('device_kind')} "
        f"({facts.get('platform')}), jax {facts.get('jax')}, {facts.get('device_count')} device(s); nvidia-smi: "
        f"{facts.get('nvidia_smi', 'not present')}; allocator bytes_limit {_gib(facts.get('bytes_limit'))} GiB. "
        f"Whole run {fmt(facts.get('elapsed_s'))} s of a {fmt(facts.get('budget_s'))} s budget.",
        "",
    ]
    if "error" in facts:
        return lines + [f"**The probe failed; nothing ran.** {_first(facts['error'], 4000)}", ""]
    sizing = plan.DRY_RUN if facts.get("dry_run") else plan.GPU
    return lines + [
        f"Model: GPT-J's block at d_model {sizing.d_model}, d_ff {sizing.d_ff}, seq {sizing.seq}, vocab "
        f"{sizing.vocab}, {sizing.n_layers} layers; bf16 compute, f32 master weights; mesh dp=1, mp=1; batch "
        f"{facts.get('batch')} ({facts.get('batch_source')}); {sizing.warmup} warm-up and {sizing.steps} timed steps.",
        "",
    ]


def section_peaks(a: Analysis) -> list[str]:
    """The hardware-table rows the utilisations are against: this device's, and the H200's."""
    facts = a.run.device or {}
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
    rate = facts.get("matmul_flops_per_s_per_device")
    return lines + [
        f"- measured matmul ceiling: {fmt(rate / 1e12) if rate else 'n/a'} TFLOP/s ({facts.get('matmul_source')}); "
        "the column *MFU vs matmul* is the model FLOP/s over this rate, measured by this run, not a constant",
        "",
    ]


def results_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    why = {run.variant: run.why for run in reversed(plan.PLAN)}  # a name planned twice: its first reason
    traced = next(run.why for run in plan.PLAN if run.profile)
    rows = [
        {
            "variant": r["variant"],
            "why": traced if r.get("profile_trace_path") else why.get(r["variant"], traced),
            "status": "skipped" if r.get("skipped_reason") else r["status"],
            "tokens/s": fmt(r.get("tokens_per_s")),
            "step ms": fmt(r["step_median_s"] * 1e3) if r.get("step_median_s") else "n/a",
            "MFU": pct(r.get("mfu")),
            "MFU vs matmul": pct(r.get("mfu_matmul")),
            "HFU": pct(r.get("hfu")),
            "peak GiB (memory_stats)": _gib(r.get("mem_peak_in_use_bytes_per_device")),
            "peak GiB (compiled)": _gib(r.get("mem_peak_estimate_bytes_per_device")),
        }
        for r in records
    ]
    return pd.DataFrame(rows)


def resources_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "variant": r["variant"],
                "collectives": fmt(r.get("comm_count")),
                "compile s": fmt(r.get("compile_s")),
            }
            for r in records
        ]
    )


def best_gptj(a: Analysis) -> tuple[str, Mapping[str, Any]] | None:
    """GPT-J's configuration with its fastest kernel: the kernel's name and its record."""
    ok = _ran(a)
    best = plan.best_kernel({name: r["tokens_per_s"] for name, r in ok.items()})
    if best is None:
        return None
    return best.value, ok[Variant.parse(plan.GPTJ_CONFIG).replace(attention_kernel=best).name]


def goal_line(a: Analysis) -> str:
    found = best_gptj(a)
    if found is None:
        return "- GPT-J's configuration: no kernel ran, so no MFU to compare with the goal"
    kernel, record = found
    mfu = record.get("mfu")
    verdict = "n/a (no spec peak)" if mfu is None else ("reached" if mfu >= MFU_GOAL else "not reached")
    return (
        f"- GPT-J's configuration with its fastest kernel (**{kernel}**): {fmt(record.get('tokens_per_s'))} "
        f"tokens/s, MFU {pct(mfu)} against the spec peak, {pct(record.get('mfu_matmul'))} against the measured "
        f"matmul; the goal of {pct(MFU_GOAL)} MFU: {verdict}"
    )


def gpu_lead(a: Analysis) -> list[str]:
    if not probe_ok(a):
        return ["- The probe failed; nothing ran (see Setup)."]
    ok = _ran(a)
    lines = [goal_line(a)]
    if ok:
        fastest = max(ok.values(), key=lambda r: r.get("tokens_per_s") or 0)
        lines.append(f"- Fastest run: **{fastest['variant']}** at {fmt(fastest.get('tokens_per_s'))} tokens/s, MFU "
                     f"{pct(fastest.get('mfu'))}.")  # fmt: skip
    return lines


def section_results(a: Analysis) -> list[str]:
    records = _records(a)
    return [
        "## Results",
        "",
        goal_line(a),
        "",
        markdown_table(results_frame(records)),
        "",
        *figure(a.figures, "throughput", "Measured tokens/s by variant"),
        "What each run's compile holds:",
        "",
        markdown_table(resources_frame(records)),
        "",
        "- HFU counts the recomputed forward for remat `full` only; for the named policies (`dots`, `attn`) it "
        "counts none, so their HFU is a lower bound.",
        "- Peak GiB (memory_stats) is the allocator's peak_bytes_in_use in the run's own process.",
        f"- {plan.XMAP_NOTE}.",
        "",
    ]


def traced(a: Analysis) -> Mapping[str, Any] | None:
    found = [r for r in _records(a) if r.get("profile_trace_path") or r.get("profile_component_s_per_step_per_device")]
    return found[-1] if found else None


def traced_components(a: Analysis) -> Mapping[str, float]:
    """The traced run's measured seconds per step by block component; empty without one."""
    record = traced(a)
    return (record or {}).get("profile_component_s_per_step_per_device") or {}


def section_components(a: Analysis) -> list[str]:
    lines = ["## Where the time goes (XProf trace, by block component)", ""]
    record = traced(a)
    if record is None:
        return lines + ["No trace was captured (the traced run was skipped or failed; see its record).", ""]
    seconds = record.get("profile_component_s_per_step_per_device")
    if not seconds:
        return lines + [f"{record['variant']}: trace captured, no breakdown: {_first(record.get('profile_error'))}", ""]
    total = sum(seconds.values())
    frame = pd.DataFrame(
        [{"component": k, "ms per step": fmt(v * 1e3), "share": pct(v / total if total else math.nan)} for k, v in
         sorted(seconds.items(), key=lambda kv: -kv[1])]
    )  # fmt: skip
    return lines + [
        f"MEASURED: {record['variant']}: op self times of {record.get('profile_steps', 'the')} traced steps under the "
        "block-component labels of its optimized HLO (bench.measure.profile.component_fields), per step; "
        f"{pct(record.get('profile_component_matched_frac'))} of the op time matched an HLO op; shares of busy "
        "device time, not of wall time.",
        "",
        markdown_table(frame),
        "",
        *figure(a.figures, "measured_components", "MEASURED: ms of op self time per step by block component"),
    ]


def has_failures(a: Analysis) -> bool:
    return any(r.get("status") != "ok" for r in _records(a))


def section_failures(a: Analysis) -> list[str]:
    lines = ["## Failed and skipped runs, in the compiler's (or the budget's) words", ""]
    lines += [f"- `{r['variant']}`: {_first(r.get('error'))}" for r in _records(a) if r.get("status") != "ok"]
    return lines + [""]
