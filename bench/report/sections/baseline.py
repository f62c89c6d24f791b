"""Section 4: GPT-J-6B's published figures on a TPU v3-256, this run's utilisation beside them, then the projection."""

from __future__ import annotations

import pandas as pd

from bench.hardware import baseline
from bench.hardware import table as hardware
from bench.hardware.table import PeakBasis
from bench.report.analyse import Analysis
from bench.report.format import figure, fmt, markdown_table, source
from bench.report.sections.components import section_components
from bench.report.sections.projection import section_projection
from bench.report.stats import peak_source


def section_baseline(a: Analysis) -> list[str]:
    lines = ["## 4. Against the baseline: GPT-J-6B on a TPU v3-256", ""]
    lines += [markdown_table(published_table()), ""]
    lines += _this_run_utilisation(a)
    lines += figure(a.figures, "utilisation", "MFU and HFU by variant")
    if a.projections or a.unprojected:  # the PROJECTION, where the run has TPU compiles
        lines += section_projection(a)
        lines += section_components(a)
    return lines


def gptj_sentence() -> str:
    mfu_6n = baseline.utilisation(baseline.effective_flops_per_s())
    hfu = baseline.utilisation(baseline.hardware_flops_per_s_total(as_benchmark_py=True))
    return (
        f"{fmt(baseline.TOKENS_PER_S.value)} tokens/s on a TPU v3-256, MFU (6N) {fmt(mfu_6n * 100, 3)}% and HFU "
        f"{fmt(hfu * 100, 3)}% on GPT-J's {fmt(_v3_peak_tflops(PeakBasis.GPTJ), 3)} TFLOP/s-per-core basis"
    )


def _v3_peak_tflops(basis: PeakBasis) -> float:
    peak, _ = hardware.peak_flops_per_s_per_device(baseline.DEVICE_KIND, basis)
    return peak / 1e12


def published_table() -> pd.DataFrame:
    gptj, spec = PeakBasis.GPTJ, PeakBasis.SPEC
    effective = baseline.effective_flops_per_s()
    hardware_as_script = baseline.hardware_flops_per_s_total(as_benchmark_py=True)
    hardware_own_shape = baseline.hardware_flops_per_s_total()
    tokens = fmt(baseline.TOKENS_PER_S.value)
    rows = [
        (
            "training throughput, GPT-J-6B",
            f"{fmt(baseline.TOKENS_PER_S.value)} tokens/s",
            baseline.TOKENS_PER_S.wording,
            baseline.TOKENS_PER_S.source,
        ),
        (
            "training throughput, GPT-Neo 2.7B, same pod",
            f"{fmt(baseline.GPT_NEO_2_7B_TOKENS_PER_S.value)} tokens/s",
            baseline.GPT_NEO_2_7B_TOKENS_PER_S.wording,
            baseline.GPT_NEO_2_7B_TOKENS_PER_S.source,
        ),
        (
            "gradient accumulation, GPT-J-6B's v3-256 run",
            f"{fmt(baseline.GRAD_ACCUM.value)} {baseline.GRAD_ACCUM.unit}",
            baseline.GRAD_ACCUM.wording,
            baseline.GRAD_ACCUM.source,
        ),
        (
            f"peer on the same pod: {baseline.LEVANTER_SETUP}, MFU",
            f"{fmt(baseline.LEVANTER_6_7B_MFU.value * 100, 3)}%",
            baseline.LEVANTER_6_7B_MFU.wording,
            baseline.LEVANTER_6_7B_MFU.source,
        ),
        (
            f"peer on the same pod: {baseline.LEVANTER_SETUP}, HFU (profiler)",
            f"{fmt(baseline.LEVANTER_6_7B_HFU.value * 100, 3)}%",
            baseline.LEVANTER_6_7B_HFU.wording,
            baseline.LEVANTER_6_7B_HFU.source,
        ),
        (
            "6N FLOP/s",
            f"{fmt(effective / 1e15, 3)} PFLOP/s ({tokens} tokens/s x 6 x {fmt(baseline.N_PARAMS_HF)} params)",
            baseline.EFFECTIVE_PFLOPS.wording,
            baseline.EFFECTIVE_PFLOPS.source,
        ),
        (
            f"theoretical peak, GPT-J basis ({fmt(_v3_peak_tflops(gptj), 3)} TFLOP/s per core)",
            f"{fmt(baseline.theoretical_flops_per_s(gptj) / 1e15, 3)} PFLOP/s",
            baseline.THEORETICAL_PFLOPS.wording,
            baseline.THEORETICAL_PFLOPS.source,
        ),
        (
            f"theoretical peak, spec basis ({fmt(_v3_peak_tflops(spec), 3)} TFLOP/s per core)",
            f"{fmt(baseline.theoretical_flops_per_s(spec) / 1e15, 3)} PFLOP/s",
            "derived",
            source(hardware),
        ),
        ("MFU (6N), GPT-J basis", f"{fmt(baseline.utilisation(effective, gptj) * 100, 3)}%", "derived", "6N / peak"),
        ("MFU (6N), spec basis", f"{fmt(baseline.utilisation(effective, spec) * 100, 3)}%", "derived", "6N / peak"),
        (
            "HFU, GPT-J basis, benchmark.py's attention constants",
            f"{fmt(hardware_as_script / 1e15, 3)} PFLOP/s = {fmt(baseline.utilisation(hardware_as_script) * 100, 3)}%",
            baseline.HARDWARE_PFLOPS.wording,
            baseline.HARDWARE_PFLOPS.source,
        ),
        (
            "HFU, GPT-J basis, GPT-J-6B's own shape",
            f"{fmt(hardware_own_shape / 1e15, 3)} PFLOP/s = {fmt(baseline.utilisation(hardware_own_shape) * 100, 3)}%",
            "derived",
            baseline.BENCHMARK_PY,
        ),
    ]
    return pd.DataFrame(
        rows, columns=["published on a TPU v3-256 (GPT-J-6B unless named)", "value", "wording", "source"]
    )


def _this_run_utilisation(a: Analysis) -> list[str]:
    timed = a.summary.dropna(subset=["tokens_per_s"])
    if timed.empty:
        return []
    best = timed.iloc[0]
    rows = []
    for label, column in (("MFU (6N)", "mfu_6n"), ("MFU", "mfu"), ("HFU", "hfu")):
        values = a.summary[column].dropna()
        rows.append(
            {
                "this run": label,
                f"fastest variant ({best['variant']}) %": fmt(best[column] * 100),
                "lowest %": fmt(values.min() * 100) if len(values) else "n/a",
                "highest %": fmt(values.max() * 100) if len(values) else "n/a",
            }
        )
    return [
        f"This run beside them, each against its own peak ({peak_source(a.run.measured, best)}); "
        f"GPT-J's figures are against TPU v3 peaks, so only the percentages compare:",
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
    ]
