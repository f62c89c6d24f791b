"""Section 3a: each attention kernel against the reference, paired on the variants the sweep's kernel part ran.

The kernel part (bench.launch.sweep) is a run directory of its own, RUN_DIR/kernels/ (schema.KERNEL_DIR): per
variant and JAX environment, the kernels with one reference run of the same variant measured among them, and one
refused record per kernel that the platform or JAX lacks. A ratio pairs a kernel with that reference (stats.
pair_effect on the kernel axis), and is judged as section 3 judges an effect (stats.Effect.exceeds), against the
larger of the sweep's noise and the kernel part's own, both stats.run_noise: the kernel part runs last, and a
machine that got busier by then must not turn its wider spread into findings.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.projection.throughput import GPTJ_VARIANT
from bench.records.schema import KERNEL_DIR, RecordKind
from bench.records.store import RESULTS
from bench.report.analyse import Analysis, first_line
from bench.report.format import fmt, fmt_ratio, markdown_table
from bench.report.load import ReportError, RunRecords, load_run
from bench.report.stats import Comparison, Effect, Noise, pair_effect, run_noise, summarise
from kernels.choice import AttentionKernel

REFERENCE = AttentionKernel.reference.value
# The table's columns (kernel_pairs), in order; the numbers stay numbers until the section formats them.
PAIR_COLUMNS = [
    "kernel",
    "variant",
    "jax",
    "tokens_per_s",
    "reference_tokens_per_s",
    "ratio",
    "beyond_noise",
    "memory_ratio",
    "reference_vs_sweep",
]


def load_kernel_run(run_dir: Path) -> RunRecords | None:
    """RUN_DIR/kernels/'s records; None where the run has none (a `bench run` directory, or an older sweep)."""
    if not (Path(run_dir) / KERNEL_DIR / RESULTS).exists():
        return None
    try:
        return load_run(Path(run_dir) / KERNEL_DIR)
    except ReportError:  # a file with no usable line: said in the section as no records
        return None


def judging_noise(sweep: Noise, kernel_part: Noise) -> Noise:
    """The larger of the sweep's noise and the kernel part's (each ``run_noise``), saying which it is."""
    known = [
        (n, who) for n, who in ((sweep, "the sweep's"), (kernel_part, "the kernel part's")) if n.fraction is not None
    ]
    if not known:
        return Noise(None, "neither the sweep nor the kernel part gives a noise estimate")
    noise, who = max(known, key=lambda item: item[0].fraction)
    which = f"{who}, the larger" if len(known) == 2 else f"{who}, the only one known"
    return Noise(noise.fraction, f"{which}: {noise.source}")


def kernel_pairs(kernel_summary: pd.DataFrame, sweep_summary: pd.DataFrame, noise: Noise) -> pd.DataFrame:
    """One row per kernel, variant and JAX version with a reference of the same variant and version in the kernel
    part: tokens/s of both, their ratio, whether it is beyond ``noise``, the peak-memory ratio, and that reference
    against the sweep's own record of the variant (how far the machine moved between the two; nan without one)."""
    sweep = {(v, j): t for v, j, t in sweep_summary[["variant", "jax", "tokens_per_s"]].itertuples(index=False)}
    rows = []
    for kernel in AttentionKernel:
        if kernel is AttentionKernel.reference:
            continue
        effect = pair_effect(kernel_summary, Comparison("kernel", kernel.value, REFERENCE))
        for pair in effect.pairs:
            a, b = kernel_summary.loc[pair.a_index], kernel_summary.loc[pair.b_index]
            rows.append(
                {
                    "kernel": kernel.value,
                    "variant": b["variant"],
                    "jax": pair.jax,
                    "tokens_per_s": a["tokens_per_s"],
                    "reference_tokens_per_s": b["tokens_per_s"],
                    "ratio": pair.tokens_per_s_ratio,
                    "beyond_noise": Effect(effect.comparison, (pair,)).exceeds(noise),
                    "memory_ratio": pair.memory_ratio,
                    "reference_vs_sweep": b["tokens_per_s"] / sweep.get((b["variant"], b["jax"]), math.nan),
                }
            )
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def unpaired(kernel_summary: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    """Kernel rows that ran but have no reference of their variant and version beside them."""
    paired = {(f"{v}+{k}", j) for k, v, j in pairs[["kernel", "variant", "jax"]].itertuples(index=False)}
    return [
        f"{v} (jax {j}): {fmt(t)} tokens/s, no ok reference run of {v.partition('+')[0]} beside it to pair with"
        for v, j, t in kernel_summary[["variant", "jax", "tokens_per_s"]].itertuples(index=False)
        if "+" in v and (v, j) not in paired
    ]


def refusals(run: RunRecords) -> list[str]:
    """One line per refused kernel and JAX version, with its reason and the variants it was refused for."""
    by_reason: dict[tuple[str, str, str], list[str]] = {}
    for r in run.measured:
        if r.get("kind") == RecordKind.REFUSED.value:
            key = (r.get("attention_kernel", "?"), str(r.get("jax")), first_line(r.get("error")))
            by_reason.setdefault(key, []).append(r["variant"].partition("+")[0])
    return [
        f"`{kernel}` on jax {jax} (for {', '.join(sorted(set(variants)))}): {reason}"
        for (kernel, jax, reason), variants in sorted(by_reason.items())
    ]


def failed_runs(run: RunRecords) -> list[str]:
    return [
        f"{r['variant']} (jax {r.get('jax')}): {first_line(r.get('error'))}"
        for r in run.measured
        if r["status"] == "failed" and r.get("kind") != RecordKind.REFUSED.value
    ]


def _where(run: RunRecords) -> str:
    """Where the kernel part measured, from its records: "this machine's CPU (model, 8 devices)"."""
    ok = [r for r in run.measured if r["status"] == "ok"]
    if not ok:
        return "this machine"
    r = ok[0]
    return f"this machine's {str(r.get('backend', 'cpu')).upper()} ({r.get('cpu_model')}, {r.get('devices')} devices)"


def _table(pairs: pd.DataFrame) -> pd.DataFrame:
    verdict = {True: "yes", False: "no", None: "unknown"}
    return pd.DataFrame(
        {
            "kernel": pairs["kernel"],
            "variant": [f"{v} (GPT-J's)" if v == GPTJ_VARIANT else v for v in pairs["variant"]],
            "jax": pairs["jax"],
            "tokens/s": pairs["tokens_per_s"].map(fmt),
            "reference tokens/s": pairs["reference_tokens_per_s"].map(fmt),
            "tokens/s ratio": pairs["ratio"].map(fmt_ratio),
            "beyond noise": pairs["beyond_noise"].map(verdict.get),
            "peak-memory ratio": pairs["memory_ratio"].map(fmt_ratio),
            "reference here / in the sweep": pairs["reference_vs_sweep"].map(fmt_ratio),
        }
    )


def section_kernels(a: Analysis) -> list[str]:
    lines = ["## 3a. Attention kernels against the reference", ""]
    run = load_kernel_run(a.run.run_dir)
    if run is None:
        return lines + [f"No kernel comparison in this run (a sweep writes one into RUN_DIR/{KERNEL_DIR}/)."]
    kernel_summary = summarise(run.measured)
    noise = judging_noise(a.noise, run_noise(kernel_summary))
    pairs = kernel_pairs(kernel_summary, a.summary, noise)
    lines += [
        f"Measured on {_where(run)}, in {run.run_dir}: the sweep's kernel part ran each kernel on GPT-J's "
        f"configuration ({GPTJ_VARIANT}) and on the sweep's fastest reference variant, each in one JAX environment "
        "(current JAX first, which has every kernel), with a reference run of the same variant and environment "
        "measured among the kernel's runs. The ratio is the kernel's tokens/s over that reference's; it is beyond "
        "the noise when it differs "
        f"from 1 by more than the noise ({noise.text()}; the sweep's, as in section 3, is {a.noise.short()}). "
        "Peak memory is per device, as the "
        "compiler estimates it. The last column is that reference over the sweep's own record of the variant: how "
        "far this machine moved in between.",
        "",
    ]
    lines += [markdown_table(_table(pairs)), ""] if not pairs.empty else ["No kernel has a paired reference.", ""]
    for title, items in (
        ("Refused (recorded, not run, nothing compiled)", refusals(run)),
        ("Failed runs", failed_runs(run)),
        ("Unpaired", unpaired(kernel_summary, pairs)),
        ("Skipped input", list(run.skipped)),
    ):
        if items:
            lines += [f"{title}:", ""] + [f"- {item}" for item in items] + [""]
    return lines
