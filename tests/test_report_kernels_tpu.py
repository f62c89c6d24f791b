"""The report's attention kernels on TPU: each kernel's projection against its reference twin, the compiler's
refusals in its own words, and a headline ranking that holds the reference kernel only. Hand-made tpu-aot records
(tests/test_projection.py's hand-counted compile); pure (no JAX)."""

import json

import pytest
from report_text import section, unwrap
from test_projection import RECORD as PROJECTION_RECORD

from bench.records.schema import validate
from bench.records.store import RESULTS
from bench.report.sections.kernels_tpu import kernel_pairs, kernel_table
from bench.report.write import build, write_report
from bench.tpu_aot.compile import compiler_refusal_fields, is_finding, whole_step_costs

REFERENCE = "parallel-h256-shard_map-full"
# libtpu 0.0.42.1's words for tiny (bf16) on v3:2x2, as tests/test_tpu_aot.py records them, shortened MLIR
MOSAIC_MESSAGE = (
    "MosaicError: INTERNAL: Mosaic failed to compile TPU kernel: E2001: CompileTimeMosaicUnsupportedRhsType: "
    "Unsupported matmul RHS type on target: vector<128x128xbf16>\nSee https://openxla.org/xla/errors/error_2001 for "
    'more details.\n\nThe MLIR operation involved:\n  %193 = "tpu.matmul"(...)\n\nPlease report a bug at: '
    "https://github.com/jax-ml/jax/issues/new/choose\n"
)


def compile_of(variant: str, optimal_s: float, **more) -> dict:
    """The hand-counted v3-256 compile (2 GB over mp and 3 GB over dp per device: 50 ms of ICI, every collective
    overlappable) with ``optimal_s`` of compiler-estimated work."""
    kernel = variant.partition("+")[2] or "reference"
    return PROJECTION_RECORD | {
        "timestamp_utc": "2026-12-01T00:00:00Z",
        "scope": "model",
        "variant": variant,
        "attention_kernel": kernel,
        "jax": "0.10.2",
        "xla_optimal_s_per_step_per_device": optimal_s,
        "fits_hbm": True,
        **more,
    }


def refused(variant: str) -> dict:
    record = compile_of(variant, 0.0) | {"status": "failed", "error": MOSAIC_MESSAGE, "device_kind": "TPU v3"}
    for field in ("xla_optimal_s_per_step_per_device", "fits_hbm", "mem_peak_estimate_bytes_per_device"):
        record.pop(field)
    return record | compiler_refusal_fields(MOSAIC_MESSAGE)


# a compile of this code: its cost-analysis compiles wrote the block loops out (bench.tpu_aot.compile.unrolled)
UNROLLED = {"xla_cost_points_attention_blocks_unrolled": True}
RECORDS = (
    compile_of(REFERENCE, 0.31, **UNROLLED),
    compile_of(REFERENCE + "+blockwise", 0.25, mem_peak_estimate_bytes_per_device=8 * 2**30, **UNROLLED),
    compile_of(REFERENCE + "+xla", 0.31),
    compile_of("parallel-h256-pjit-full", 0.33),
    refused(REFERENCE + "+pallas"),
)


def write_run(directory, records):
    directory.mkdir()
    (directory / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


@pytest.fixture
def run_dir(tmp_path):
    return write_run(tmp_path / "run", RECORDS)


@pytest.fixture
def looped_run_dir(tmp_path):
    """The same compiles as written before the block loops were unrolled for cost analysis (no such field)."""
    return write_run(tmp_path / "looped", [{k: v for k, v in r.items() if k not in UNROLLED} for r in RECORDS])


def test_the_refusal_keeps_the_compilers_line_and_is_a_finding():
    fields = compiler_refusal_fields(MOSAIC_MESSAGE)
    assert fields == {
        "refused_by_compiler": True,
        "compiler_refusal": "Mosaic failed to compile TPU kernel: E2001: CompileTimeMosaicUnsupportedRhsType: "
        "Unsupported matmul RHS type on target: vector<128x128xbf16>",
    }
    assert compiler_refusal_fields("XlaRuntimeError: INTERNAL: something else") == {}
    assert is_finding(fields) and not is_finding({"status": "failed"})
    assert validate(refused(REFERENCE + "+pallas")) == []


def test_each_kernel_is_set_against_its_reference_twin_by_hand(run_dir):
    a = build(run_dir)
    assert [(p.variant, ref.variant) for p, ref in kernel_pairs(a.projections)] == [
        (REFERENCE + "+blockwise", REFERENCE),
        (REFERENCE + "+xla", REFERENCE),
    ]
    rows = {row["kernel"]: row for row in kernel_table(a.projections).to_dict("records")}
    # xla, full overlap: 0.31 s over 0.31 s of work (the 50 ms of ICI hides under it); no overlap: 0.36 s over 0.36
    assert rows["xla"]["ratio to reference, full overlap"] == "1.000x"
    assert rows["xla"]["ratio to reference, no overlap"] == "1.000x"
    # blockwise, its block loops written out for the estimate: 0.31 s over 0.25 s of work with the ICI hidden, and
    # 0.36 s over 0.30 s with it exposed
    assert rows["blockwise"]["ratio to reference, full overlap"] == "1.240x"
    assert rows["blockwise"]["ratio to reference, no overlap"] == "1.200x"
    assert rows["blockwise"]["block loops"] == "every block pair priced" and rows["xla"]["block loops"] == "none"
    assert rows["blockwise"]["projected tokens/s, no overlap to full overlap"]  # still shown, as a projection
    assert rows["blockwise"]["topology"] == "v3:8x16" and rows["blockwise"]["preset"] == "gptj-6b"
    assert rows["blockwise"]["peak HBM per device GiB (reference)"] == "8 (10)"


def test_a_compile_that_kept_the_block_loops_is_shown_not_ranked(looped_run_dir):
    a = build(looped_run_dir)
    rows = {row["kernel"]: row for row in kernel_table(a.projections).to_dict("records")}
    assert rows["blockwise"]["ratio to reference, full overlap"] == "not comparable: block loops priced once"
    assert rows["blockwise"]["ratio to reference, no overlap"] == "not comparable: block loops priced once"
    assert rows["blockwise"]["block loops"] == "priced once"
    assert rows["blockwise"]["projected tokens/s, no overlap to full overlap"]  # still shown, as a projection
    assert rows["xla"]["ratio to reference, full overlap"] == "1.000x"  # no block loops: ranked either way
    text = unwrap(write_report(looped_run_dir, plots=False).read_text())
    assert "blockwise: NOT COMPARABLE with the reference here" in text
    assert "+blockwise (NOT COMPARABLE: block loops priced once" in text  # section 4's table marks it too


def test_the_report_labels_the_kernels_a_projection_and_quotes_the_refusal(run_dir):
    text = unwrap(write_report(run_dir, plots=False).read_text())
    section = text[text.index("### PROJECTION: attention kernels on TPU") :].split("\n## ")[0]
    assert "PROJECTIONS from TPU ahead-of-time compiles, not measurements" in section
    assert "- blockwise: ranked against the reference, a PROJECTION." in section
    assert "NOT COMPARABLE" not in text
    refusal = next(line for line in section.splitlines() if line.startswith("| pallas"))
    cells = [cell.strip() for cell in refusal.strip("| ").split("|")]
    assert cells[:4] == ["pallas", "v3:8x16", "TPU v3", "parallel-h256-shard_map-full+pallas"]
    assert cells[-1].endswith("Unsupported matmul RHS type on target: vector<128x128xbf16>")
    assert "Skipped input" not in text  # a refusal is a finding, not input the report could not use


def test_the_headline_ranks_the_reference_kernel_only(run_dir):
    """blockwise is projected fastest of all here; the ranking still holds the two reference compiles alone."""
    text = unwrap(write_report(run_dir, plots=False).read_text())
    headline = section(text, "## 1. Headline")
    ranking = [line for line in headline.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[1].strip() for row in ranking] == [REFERENCE, "parallel-h256-pjit-full"]
    assert "+blockwise" not in headline and "+xla" not in headline


def test_a_negative_compiler_estimate_is_no_estimate_and_the_roofline_prices_the_work():
    """libtpu 0.0.42.1 gave -38.0 and -48.0 s for v5e:16x16 at 2 and 3 layers (bench/tpu_aot/compile.py)."""
    points = {
        (2, 1): {"flops": 1.1e12, "bytes accessed": 1.3e10, "optimal_seconds": -38.0},
        (3, 1): {"flops": 1.5e12, "bytes accessed": 1.6e10, "optimal_seconds": -48.0},
    }
    fields = whole_step_costs(points, layers=28, microsteps=1, devices=256)
    assert fields["xla_optimal_s_per_step_per_device"] is None
    assert fields["xla_optimal_source"] == "the TPU compiler reported a negative optimal_seconds (no estimate)"
    assert fields["xla_flops_per_step_total"] > 0


def test_cross_check_prices_a_looping_kernel_the_headline_cannot() -> None:
    from test_calibrate import RECORD as BASE

    from bench.projection import throughput as projection
    from bench.report.sections.kernels_tpu import NOT_COMPARABLE, _cross_check

    # the whole-step roofline kept the block loops (priced once); the unrolled estimates did not: 0.3 s / 0.4 s
    ref = BASE | {"variant": "parallel-h256-shard_map-full", "jax": "0.10.2", "grad_accum": 1}
    kernel = ref | {
        "variant": "parallel-h256-shard_map-full+blockwise",
        "xla_optimal_s_per_step_per_device": 0.4,
        "xla_cost_points_attention_blocks_unrolled": True,
    }
    p, r = projection.project(kernel), projection.project(ref)
    assert _cross_check([ref, kernel], p, r) == "0.750x"
    looped = kernel | {"xla_cost_points_attention_blocks_unrolled": False}
    assert _cross_check([ref, looped], projection.project(looped), r) == NOT_COMPARABLE
    assert _cross_check([kernel], p, r) == "n/a"
