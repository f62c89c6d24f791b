"""The report's "Does the projection hold?" section (bench/report/sections/validation.py) from synthetic validation
records whose numbers are counted by hand."""

from pathlib import Path

import pytest
from test_calibrate import RECORD

from bench.projection.throughput import ProjectionModel
from bench.report.sections import validation

XLA, HLO = ProjectionModel.XLA_OPTIMAL.value, ProjectionModel.HLO_ROOFLINE.value
# RECORD's modelled step at no overlap, by the headline model: 0.2 s MXU-bound + 0.2 s HBM-bound + 0.05 s ICI; 0.4 s
# at full overlap
STEP_S = 0.45


def _run(run_id: str, slowdown: float) -> dict:
    """A published run whose pod took ``slowdown`` x the modelled step."""
    return RECORD | {
        "validation_id": run_id,
        "published_tokens_per_s": 1e6 / (slowdown * STEP_S),
        "published_quote": f"{run_id} quote",
        "published_source": f"{run_id} source",
        "published_conversion": [["tokens per step", 1e6], ["step time s", slowdown * STEP_S]],
        "projected_tokens_per_s_by_model": {XLA: [1e6 / 0.35, 1e6 / 0.3], HLO: [1e6 / 0.45, 1e6 / 0.4]},
        "fits_hbm": run_id != "c",
        "validation_notes": ["priced with the reference attention kernel"] if run_id == "b" else [],
    }


RUNS = [_run("a", 2.0), _run("b", 2.0), _run("c", 1.25)]


def test_nothing_without_validation_records() -> None:
    assert validation.section_validation_records([]) == []
    assert validation.section_validation_records([RECORD | {"validation_id": None}]) == []


def test_rows_and_leave_one_out_by_hand() -> None:
    frame, summary = validation.validation_frame(RUNS)
    c = frame.set_index("run").loc["c"]
    # c held out: k = 2 from a and b, predicted 1e6 / 0.9 against 1e6 / 0.5625: -37.5%
    assert c["loo_predicted"] == pytest.approx(1e6 / 0.9)
    assert c["loo_error"] == pytest.approx(-0.375)
    assert c[XLA] == pytest.approx(1e6 / 0.3)
    # the fit on all three: k = 5 ** (1/3)
    assert dict(summary.fit.k)[validation.SHARED] == pytest.approx(5 ** (1 / 3))
    assert c["calibrated"] == pytest.approx(1e6 / (5 ** (1 / 3) * STEP_S))


def test_section_text() -> None:
    text = "\n".join(validation.section_validation_records(RUNS, {"validation": validation.PLOT}))
    assert text.startswith(validation.TITLE)
    # a and b predicted by k = sqrt(2.5): 2 / 1.581 - 1 = +26.5%; c -37.5%
    assert "leave-one-out error median 26.5%, maximum 37.5%" in text
    # published over the full-overlap bound: 0.4 / 0.9 and 0.4 / 0.5625
    assert "44.4% to 71.1% of their projection" in text
    assert "| c " in text and "-37.5%" in text
    assert "c do(es) not fit HBM" in text
    assert '"a quote" (a source). tokens per step = 1,000,000; step time s = 0.9' in text
    assert "b: priced with the reference attention kernel" in text
    # published 1e6 / (2 x 0.45) and 1e6 / (1.25 x 0.45) against one projection per model: 2 / 1.25 = 1.6x under both
    assert (
        "On the 3 run(s) priced by both, PROJECTION: published / projected varies 1.600x" in text
        and "and 1.600x" in text
    )
    assert f"]({validation.PLOT})" in text
    assert "whole step" in text and "1.710" in text  # k = 5 ** (1/3)
    # every run misses by over 20%; each modelled step is 0.2 + 0.2 + 0.05 s
    assert "- misses c by -37.5%; its modelled step (no overlap): 44.4% MXU-bound work, 44.4% HBM-bound work, " in text
    assert "- misses a by +26.5%" in text


def test_a_refused_run_is_reported_not_dropped() -> None:
    refused = RECORD | {
        "validation_id": "d",
        "status": "failed",
        "projected_tokens_per_s": None,
        "error": "RESOURCE_EXHAUSTED: Ran out of memory on HBM",
    }
    text = "\n".join(validation.section_validation_records([*RUNS, refused]))
    assert "- d (v3:8x16): RESOURCE_EXHAUSTED: Ran out of memory on HBM" in text
    assert "| d " not in text  # no row of numbers for it


def test_plot(tmp_path: Path) -> None:
    assert validation.plot(RUNS, tmp_path / "v.png").stat().st_size > 0
    assert validation.plot([], tmp_path / "none.png") is None


def test_calibrated_cell_and_margin_by_hand() -> None:
    from bench.projection import calibrate, throughput

    _, summary = validation.validation_frame(RUNS)  # k = 5 ** (1/3) = 1.710, largest leave-one-out error 37.5%
    k = 5 ** (1 / 3)
    p = throughput.project(RECORD)
    value = 1e6 / (k * STEP_S)
    assert validation.calibrated_cell(p, summary) == (
        f"{validation.fmt(value)} ({validation.fmt(value * 0.625)} to {validation.fmt(value * 1.375)})"
    )
    assert validation.calibrated_cell(throughput.project(RECORD, model=throughput.CROSS_CHECK), summary) == "n/a"
    # a step a third as long: 3x faster, over the (1.375 / 0.625) = 2.2x the interval needs; 2x is not
    fast = throughput.project(
        RECORD
        | {
            "hlo_roofline_s_per_step_per_device": 0.4 / 3,
            "hardware_flops_per_step_total": 0,
            "xla_flops_per_step_total": 1.0,
            "comm_mp_wire_bytes_per_device": 2e9 / 3,
            "comm_dp_wire_bytes_per_device": 1e9,
        }
    )
    assert calibrate.calibrated_projection(fast, summary.fit) == pytest.approx(3 * value)
    assert "3.000x" in validation.margin_line(fast, p, summary) and "so the margin exceeds it (2.200x needed)" in (
        validation.margin_line(fast, p, summary)
    )
    assert "does not exceed" in validation.margin_line(p, p, summary)
    assert "too few for a leave-one-out interval" in validation.margin_line(p, p, None)
