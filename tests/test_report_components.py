"""The report's component breakdown of the TPU projection: rows that add up to the step, and paired effects
explained by the components that carry them. Hand-made tpu-aot records; pure (no JAX)."""

import json

import pytest
from report_text import unwrap
from test_projection import RECORD as PROJECTION_RECORD

from bench.records.store import RESULTS
from bench.report.sections.components import component_frame, effect_by_component, effect_lines
from bench.report.write import build, write_report

# GPT-J's mesh with accumulation 16; the compiler's estimate and its components per variant (seconds per step). The
# serial block pays a second mp all-reduce region per layer (collective mp, and twice the mp wire bytes) and a
# second LayerNorm (elementwise).
PARTS = {
    "parallel": {
        "qkv_proj": 0.5,
        "ff_in": 1.0,
        "ff_out": 1.0,
        "elementwise": 0.3,
        "optimizer": 0.1,
        "collective mp": 0.1,
    },
    "serial": {
        "qkv_proj": 0.5,
        "ff_in": 1.0,
        "ff_out": 1.0,
        "elementwise": 0.4,
        "optimizer": 0.1,
        "collective mp": 0.2,
    },
}


def record(residual: str, optimal_scale: float = 1.0) -> dict:
    """tests/test_projection.py's hand-counted v3-256 compile (2e9 wire bytes over mp, 20 ms), as a pjit variant
    with a breakdown; the serial block moves twice the mp bytes."""
    parts = PARTS[residual]
    return PROJECTION_RECORD | {
        "backend": "tpu",
        "timestamp_utc": "2026-12-01T00:00:00Z",
        "variant": f"{residual}-h256-pjit-full",
        "scope": "model",
        "jax": "0.10.2",
        "comm_mp_wire_bytes_per_device": (2e9 if residual == "parallel" else 4e9),
        "xla_optimal_s_per_step_per_device": sum(parts.values()) * optimal_scale,
        "component_s_per_step_per_device": parts,
        "component_source": "hand-made",
        "fits_hbm": True,
    }


def analysis(tmp_path, *records):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir, build(run_dir)


def test_a_row_is_the_no_overlap_step_by_component(tmp_path):
    _, a = analysis(tmp_path, record("parallel"), record("serial"))
    frame = component_frame(a.projections)
    assert list(frame["variant"]) == ["parallel-h256-pjit-full", "serial-h256-pjit-full"]  # ranked
    by_variant = {p.variant: p for p in a.projections}
    for _, row in frame.iterrows():
        p = by_variant[row["variant"]]
        assert row["no-overlap step ms"] == pytest.approx(p.serial_step_s * 1e3)
        # 2e9 wire bytes over mp at 1e11 B/s per v3 device: 20 ms (tests/test_projection.py counts it by hand)
        assert row["ICI mp"] == pytest.approx(20.0 if p.variant.startswith("parallel") else 40.0)
        assert row["unattributed"] == 0.0  # the parts sum to the estimate exactly


def test_parts_off_the_estimate_by_more_than_five_percent_show_the_rest(tmp_path):
    _, a = analysis(tmp_path, record("parallel", optimal_scale=1.1))
    [row] = component_frame(a.projections).to_dict("records")
    assert row["unattributed"] == pytest.approx(0.1 * sum(PARTS["parallel"].values()) * 1e3)
    assert row["no-overlap step ms"] == pytest.approx(a.projections[0].serial_step_s * 1e3)


def test_the_parallel_block_is_explained_by_its_collectives_and_layernorm(tmp_path):
    _, a = analysis(tmp_path, record("parallel"), record("serial"))
    [(better, worse, pairs, savings)] = effect_by_component(a.projections)
    assert (better, worse, pairs) == ("parallel", "serial", 1)
    assert savings["ICI mp"] == pytest.approx(0.02)  # the second all-reduce region's wire time
    assert savings["collective mp"] == pytest.approx(0.1) and savings["elementwise"] == pytest.approx(0.1)
    assert savings["ff_in"] == 0.0
    [line] = effect_lines(a.projections)
    assert line.startswith("- PROJECTION, by component: parallel saves 220 ms per step over serial")
    assert "collective mp 100 ms" in line and "elementwise 100 ms" in line and "ICI mp 20" in line
    assert "Collectives (their HBM traffic and ICI time) carry 120 ms of it, elementwise work" in line


def test_the_report_shows_the_breakdown_and_the_headline_its_reasons(tmp_path):
    run_dir, _ = analysis(tmp_path, record("parallel"), record("serial"))
    text = unwrap(write_report(run_dir, plots=False).read_text())
    headline = text.split("## 2.")[0]
    assert "PROJECTION, by component: parallel saves" in headline
    assert "### PROJECTION: where each variant's step goes, by block component" in text


def test_a_reconciliation_rest_is_named_apart_from_the_components(tmp_path):
    """Where the components' own pricing is off the compiler's estimate, the saving's rest is 'unattributed': it is
    stated on its own, never listed as one of the parts that carry the effect."""
    _, a = analysis(tmp_path, record("parallel"), record("serial", optimal_scale=1.1))
    [line] = effect_lines(a.projections)
    parts = line.split("The largest parts: ")[1]
    assert not parts.startswith("unattributed") and "(the reconciliation rest, 'unattributed', moves" in parts
