"""Section 3a of the report (bench/report/sections/kernels.py): each attention kernel against the reference.

The records are hand-made from the one real tiny-preset record (tests/data/records/measured_run1_tiny.jsonl, read as
today's schema reads it): names, tokens/s, step-time spreads and peak memory changed to round numbers, so every ratio
below is a hand count.
"""

import json
from pathlib import Path

import pytest
from report_text import unwrap
from test_report import table_after

from bench.records.context import failed_record
from bench.records.schema import KERNEL_DIR, RecordKind, upgrade, variant_fields
from bench.records.store import RESULTS, append_record
from bench.report.sections.kernels import judging_noise, kernel_pairs
from bench.report.stats import Noise, summarise
from bench.report.write import write_report
from model.config import Scope, Variant, get_preset

REAL = Path(__file__).parent / "data" / "records" / "measured_run1_tiny.jsonl"
FASTEST = "serial-h128-pjit-none"
GPTJ = "parallel-h256-xmap-full"
CURRENT, XMAP = "0.10.2", "0.4.30"
CUDNN_REFUSAL = "attention kernel 'cudnn' runs on GPU only (through cuDNN), not on cpu"
XLA_REFUSAL = "attention kernel 'xla' needs jax.nn.dot_product_attention(implementation=...), which this JAX lacks"


def record(name: str, jax: str, tokens_per_s: float, memory: int = 1000, spread: float = 0.02) -> dict:
    """An ok record of ``name`` in ``jax`` at ``tokens_per_s``; its step IQR / median is ``spread`` (the noise)."""
    base = upgrade(json.loads(REAL.read_text()))  # a version-1 record, as today's schema reads it
    return (
        base
        | variant_fields(Variant.parse(name))
        | {
            "jax": jax,
            "tokens_per_s": float(tokens_per_s),
            "step_median_s": 1.0,
            "step_iqr_s": spread,
            "mem_peak_estimate_bytes_per_device": memory,
        }
    )


def refused(name: str, jax: str, reason: str) -> dict:
    preset = get_preset("tiny")
    return failed_record(Variant.parse(name), preset, preset.mesh, Scope.MODEL, 0, jax, reason, RecordKind.REFUSED)


def make_sweep(tmp_path: Path, kernel_records: list[dict] | None) -> Path:
    """A run directory: the sweep's reference records (noise 2%), and its kernel part unless None."""
    run_dir = tmp_path / "run"
    for r in [record(FASTEST, CURRENT, 1000), record(FASTEST, XMAP, 800), record(GPTJ, XMAP, 500)]:
        append_record(run_dir, r)
    if kernel_records is not None:
        (run_dir / KERNEL_DIR).mkdir()
        for r in kernel_records:
            append_record(run_dir / KERNEL_DIR, r)
    return run_dir


KERNEL_PART = [
    record(f"{FASTEST}+xla", CURRENT, 1100, memory=900),
    record(FASTEST, CURRENT, 950, memory=1000),  # the fresh reference: 0.95x the sweep's 1000
    record(f"{FASTEST}+blockwise", CURRENT, 960, memory=500),
    record(GPTJ, XMAP, 500, memory=2000),
    record(f"{GPTJ}+blockwise", XMAP, 400, memory=1000),
    record(f"{FASTEST}+blockwise", XMAP, 700),  # its reference failed: unpaired
    refused(f"{GPTJ}+xla", XMAP, XLA_REFUSAL),
    refused(f"{GPTJ}+cudnn", XMAP, CUDNN_REFUSAL),
    refused(f"{FASTEST}+cudnn", XMAP, CUDNN_REFUSAL),
    refused(f"{FASTEST}+cudnn", CURRENT, CUDNN_REFUSAL),
    failed_record(Variant.parse(FASTEST), get_preset("tiny"), get_preset("tiny").mesh, Scope.MODEL, 0, XMAP, "boom"),
]


def test_pairs_are_each_kernel_over_the_reference_beside_it():
    kernels = summarise(KERNEL_PART)
    sweep = summarise([record(FASTEST, CURRENT, 1000), record(GPTJ, XMAP, 500)])
    pairs = kernel_pairs(kernels, sweep, Noise(0.02, "hand-made"))
    got = {(r.kernel, r.variant, r.jax): r for r in pairs.itertuples(index=False)}
    assert set(got) == {("xla", FASTEST, CURRENT), ("blockwise", FASTEST, CURRENT), ("blockwise", GPTJ, XMAP)}
    xla, blockwise = got["xla", FASTEST, CURRENT], got["blockwise", FASTEST, CURRENT]
    gptj = got["blockwise", GPTJ, XMAP]
    assert (xla.tokens_per_s, xla.reference_tokens_per_s) == (1100, 950)
    assert xla.ratio == pytest.approx(1100 / 950) and xla.beyond_noise is True
    assert blockwise.ratio == pytest.approx(960 / 950) and blockwise.beyond_noise is False  # 1.05% < 2%
    assert blockwise.memory_ratio == pytest.approx(0.5) and xla.memory_ratio == pytest.approx(0.9)
    assert gptj.ratio == pytest.approx(0.8) and gptj.memory_ratio == pytest.approx(0.5)
    assert xla.reference_vs_sweep == pytest.approx(0.95) and gptj.reference_vs_sweep == pytest.approx(1.0)
    unknown = kernel_pairs(kernels, sweep, Noise(None, "none"))
    assert list(unknown["beyond_noise"]) == [None, None, None]


def test_the_section_reports_pairs_refusals_and_failures(tmp_path):
    run_dir = make_sweep(tmp_path, KERNEL_PART)
    text = unwrap(write_report(run_dir, plots=False).read_text())
    section = text.split("## 3a. Attention kernels against the reference")[1].split("\n## 4.")[0]
    assert "Measured on this machine's CPU (AMD EPYC, 8 devices)" in section
    assert "the noise (2% (the sweep's, the larger: median over variants of the timed steps' IQR" in section
    assert "the sweep's, as in section 3, is 2%" in section
    table = table_after(section, "| kernel")
    rows = {(r["kernel"], r["variant"], r["jax"]): r for _, r in table.iterrows()}
    assert set(rows) == {
        ("xla", FASTEST, CURRENT),
        ("blockwise", FASTEST, CURRENT),
        ("blockwise", f"{GPTJ} (GPT-J's)", XMAP),
    }
    xla = rows["xla", FASTEST, CURRENT]
    assert (xla["tokens/s"], xla["reference tokens/s"], xla["tokens/s ratio"]) == ("1,100", "950", "1.158x")
    assert (xla["beyond noise"], xla["peak-memory ratio"], xla["reference here / in the sweep"]) == (
        "yes",
        "0.900x",
        "0.950x",
    )
    assert rows["blockwise", FASTEST, CURRENT]["beyond noise"] == "no"
    assert f"- `cudnn` on jax {CURRENT} (for {FASTEST}): {CUDNN_REFUSAL}" in section
    assert f"- `cudnn` on jax {XMAP} (for {GPTJ}, {FASTEST}): {CUDNN_REFUSAL}" in section
    assert f"- `xla` on jax {XMAP} (for {GPTJ}): {XLA_REFUSAL}" in section
    assert f"- {FASTEST} (jax {XMAP}): boom" in section
    assert f"- {FASTEST}+blockwise (jax {XMAP}): 700 tokens/s, no ok reference run of {FASTEST}" in section


def test_kernel_records_stay_out_of_the_sweeps_ranking_and_noise(tmp_path):
    text = unwrap(write_report(make_sweep(tmp_path, KERNEL_PART), plots=False).read_text())
    summary = table_after(text, "| rank")
    assert len(summary) == 3 and not any("+" in v for v in summary["variant"])
    alone = unwrap(write_report(make_sweep(tmp_path / "alone", None), plots=False).read_text())
    sections_1_to_3 = [t.split("## 1.")[1].split("\n## 3a.")[0].split("\n## 4.")[0] for t in (text, alone)]
    assert sections_1_to_3[0] == sections_1_to_3[1]  # they read the sweep's records only


def test_a_run_without_a_kernel_part_leaves_the_section_out(tmp_path):
    text = unwrap(write_report(make_sweep(tmp_path, None), plots=False).read_text())
    assert "## 3a." not in text  # left out, not printed empty
    empty = make_sweep(tmp_path / "empty", [])
    (empty / KERNEL_DIR / RESULTS).write_text("")
    assert "## 3a." not in unwrap(write_report(empty, plots=False).read_text())


def test_a_busier_kernel_part_judges_against_its_own_wider_noise(tmp_path):
    busy = [r | {"step_iqr_s": 0.2} if r["status"] == "ok" else r for r in KERNEL_PART]  # 20% step spread
    section = unwrap(write_report(make_sweep(tmp_path, busy), plots=False).read_text()).split("## 3a.")[1]
    assert "the noise (20% (the kernel part's, the larger:" in section
    rows = {(r["kernel"], r["jax"]): r for _, r in table_after(section, "| kernel").iterrows()}
    assert rows["xla", CURRENT]["tokens/s ratio"] == "1.158x" and rows["xla", CURRENT]["beyond noise"] == "no"


def test_the_judging_noise_is_the_larger_known_one():
    sweep, part, unknown = Noise(0.01, "a"), Noise(0.03, "b"), Noise(None, "c")
    assert judging_noise(sweep, part) == Noise(0.03, "the kernel part's, the larger: b")
    assert judging_noise(unknown, sweep) == Noise(0.01, "the kernel part's, the only one known: a")
    assert judging_noise(Noise(0.0, "a"), unknown) == Noise(0.0, "the sweep's, the only one known: a")
    assert judging_noise(unknown, unknown).fraction is None
