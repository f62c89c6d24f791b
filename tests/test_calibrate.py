"""The calibration of the projection against published runs (bench/projection/calibrate.py): the split of a step
into its parts, the fit, and leave-one-out. Every run here is synthetic, made so the right answer is known by hand."""

import math

import pytest

from bench.projection import calibrate
from bench.projection.calibrate import SHARED, Fit, Observation, Part
from bench.projection.throughput import ProjectionModel

# A v3-256 record: 256 devices x 61.5 TFLOP/s (spec) x 0.2 s of FLOPs; the whole-step roofline (the headline model)
# 0.4 s, so 0.2 s of it is HBM-bound (0.1 s of the compiler's 0.3 s estimate); 2 GB on the wire over mp and 3 GB over
# dp at 1e11 B/s per device: 0.05 s of ICI.
RECORD = {
    "kind": "tpu-aot",
    "status": "ok",
    "variant": "parallel-h256-shard_map-full",
    "preset": "gptj-6b",
    "topology": "v3:8x16",
    "devices": 256,
    "tokens_per_step": 1_000_000,
    "hardware_flops_per_step_total": 256 * 61.5e12 * 0.2,
    "comm_mp_wire_bytes_per_device": 2e9,
    "comm_dp_wire_bytes_per_device": 3e9,
    "comm_dpmp_wire_bytes_per_device": 0.0,
    "xla_optimal_s_per_step_per_device": 0.3,
    "hlo_roofline_s_per_step_per_device": 0.4,
    "validation_id": "synthetic",
    "published_tokens_per_s": 1_000_000 / 0.7,
    "projected_model": ProjectionModel.HLO_ROOFLINE.value,
    "projected_tokens_per_s": 1_000_000 / 0.4,
}


def test_parts_of_a_record_by_hand() -> None:
    obs = calibrate.observation(RECORD)
    assert obs.parts_s[Part.MXU] == pytest.approx(0.2)
    assert obs.parts_s[Part.HBM] == pytest.approx(0.2)
    assert obs.parts_s[Part.ICI] == pytest.approx(0.05)
    # the compiler's estimate: 0.3 s of work, 0.2 s of it MXU-bound
    estimate = calibrate.observation(RECORD, ProjectionModel.XLA_OPTIMAL)
    assert estimate.parts_s[Part.HBM] == pytest.approx(0.1)


def test_mxu_part_is_capped_at_the_work() -> None:
    # FLOPs worth 0.5 s against 0.4 s of work: all 0.4 s MXU-bound, nothing HBM-bound
    obs = calibrate.observation(RECORD | {"hardware_flops_per_step_total": 256 * 61.5e12 * 0.5})
    assert (obs.parts_s[Part.MXU], obs.parts_s[Part.HBM]) == pytest.approx((0.4, 0.0))


def test_calibrated_tokens_per_s_by_hand() -> None:
    # k = 2 on MXU time, 1.5 on HBM, 4 on ICI: 0.4 + 0.3 + 0.2 = 0.9 s per step
    fit = Fit(((Part.MXU.value, 2.0), (Part.HBM.value, 1.5), (Part.ICI.value, 4.0)), ("a",))
    assert calibrate.calibrated_tokens_per_s(RECORD, fit) == pytest.approx(1_000_000 / 0.9)
    # the fit calibrates the headline model only
    estimate = calibrate.throughput.project(RECORD, model=ProjectionModel.XLA_OPTIMAL)
    assert calibrate.calibrated_projection(estimate, fit) is None


def _obs(run_id: str, mxu: float, hbm: float, ici: float, k: tuple[float, float, float], noise: float = 1.0):
    """A run whose published step time is k . parts, times ``noise``."""
    step = (k[0] * mxu + k[1] * hbm + k[2] * ici) * noise
    return Observation(run_id, 1e6, {Part.MXU: mxu, Part.HBM: hbm, Part.ICI: ici}, 1e6 / step, 1e6 / (mxu + hbm + ici))


K = (1.6, 2.5, 0.5)
SEVEN = [
    _obs("a", 1.0, 0.1, 0.1, K),
    _obs("b", 0.2, 1.0, 0.1, K),
    _obs("c", 0.3, 0.2, 1.0, K),
    _obs("d", 1.0, 1.0, 0.2, K),
    _obs("e", 0.5, 0.1, 0.8, K),
    _obs("f", 0.7, 0.4, 0.3, K),
    _obs("g", 0.9, 0.6, 0.4, K),
]
SIX = SEVEN[:6]


def test_fit_recovers_known_efficiencies() -> None:
    fit = calibrate.fit(SIX)
    assert dict(fit.k) == pytest.approx({Part.MXU.value: 1.6, Part.HBM.value: 2.5, Part.ICI.value: 0.5}, rel=1e-6)
    summary = calibrate.summarise(SEVEN)
    assert summary.max_abs_error < 1e-6  # exact data: every run predicted from the other six
    # uncalibrated efficiency, published / projected = modelled step / published step: a's 1.2 / 1.9
    assert summary.efficiency_low == pytest.approx(min(o.efficiency for o in SEVEN))
    assert SEVEN[0].efficiency == pytest.approx(1.2 / 1.9)


def test_at_most_half_as_many_parameters_as_runs() -> None:
    assert calibrate.parameters_for(7) == tuple(p.value for p in Part)
    assert calibrate.parameters_for(5) == (SHARED,)
    assert calibrate.fit(SIX[:5]).n_params == 1
    with pytest.raises(calibrate.CalibrationError):
        calibrate.parameters_for(1)


def test_shared_factor_is_the_geometric_mean_slowdown() -> None:
    # One parameter: log k = mean over runs of log(published step / modelled step). Slowdowns 2, 2 and 1.25
    # (efficiencies 0.5, 0.5, 0.8): k = (2 x 2 x 1.25) ** (1/3) = 5 ** (1/3)
    runs = [_obs("a", 1, 0, 0, (2, 1, 1)), _obs("b", 0, 1, 0, (1, 2, 1)), _obs("c", 1, 0, 0, (1.25, 1, 1))]
    assert dict(calibrate.fit(runs).k)[SHARED] == pytest.approx(5 ** (1 / 3))


def _leaky_loo(runs):
    """A mutated leave-one-out whose fit sees every run, the held-out one too."""
    return calibrate.leave_one_out(runs, fitter=lambda rest: calibrate.fit(runs))


def test_leave_one_out_never_sees_the_held_out_run() -> None:
    # Held out, c is predicted with k = 2 from a and b: predicted 0.5 x projected against a published 0.8 x
    # projected, an error of 0.5 / 0.8 - 1 = -0.375. A fit that saw c would predict it closer.
    runs = [_obs("a", 1, 0, 0, (2, 1, 1)), _obs("b", 0, 1, 0, (1, 2, 1)), _obs("c", 1, 0, 0, (1.25, 1, 1))]

    def holds(predictions) -> bool:
        c = next(p for p in predictions if p.run_id == "c")
        return math.isclose(c.error, -0.375, rel_tol=1e-9)

    assert holds(calibrate.leave_one_out(runs))
    assert not holds(_leaky_loo(runs))
    seen = []
    calibrate.leave_one_out(runs, fitter=lambda rest: seen.append({o.run_id for o in rest}) or calibrate.fit(rest))
    assert seen == [{"b", "c"}, {"a", "c"}, {"a", "b"}]


def test_loo_summary_median_and_max() -> None:
    runs = [_obs("a", 1, 0, 0, (2, 1, 1)), _obs("b", 0, 1, 0, (1, 2, 1)), _obs("c", 1, 0, 0, (1.25, 1, 1))]
    summary = calibrate.summarise(runs)
    # a and b each predicted from k = sqrt(2 x 1.25) = 1.581: 2 / 1.581 - 1 = 0.265; c: -0.375
    assert summary.median_abs_error == pytest.approx(2 / math.sqrt(2.5) - 1)
    assert summary.max_abs_error == pytest.approx(0.375)


def test_model_spread_on_runs_with_both_models() -> None:
    records = [
        {
            "published_tokens_per_s": 100.0,
            "projected_tokens_per_s_by_model": {
                ProjectionModel.XLA_OPTIMAL.value: [150.0, 200.0],
                ProjectionModel.HLO_ROOFLINE.value: [150.0, 250.0],
            },
        },
        {
            "published_tokens_per_s": 100.0,
            "projected_tokens_per_s_by_model": {
                ProjectionModel.XLA_OPTIMAL.value: [150.0, 400.0],
                ProjectionModel.HLO_ROOFLINE.value: [150.0, 250.0],
            },
        },
        # only the roofline: left out of the comparison
        {
            "published_tokens_per_s": 100.0,
            "projected_tokens_per_s_by_model": {ProjectionModel.HLO_ROOFLINE.value: [150.0, 1000.0]},
        },
    ]
    spread = calibrate.model_spread(records)
    assert spread[ProjectionModel.XLA_OPTIMAL] == (2, pytest.approx(2.0))
    assert spread[ProjectionModel.HLO_ROOFLINE] == (2, pytest.approx(1.0))


def test_committed_fit_never_sees_a_run_from_outside() -> None:
    from bench.projection.published import committed_runs, load_runs

    ids = [run.id for run in load_runs(committed_runs())][:3]
    records = [
        RECORD | {"validation_id": i, "published_tokens_per_s": 1e6 / (s * 0.45)} for i, s in zip(ids, (2, 2, 1.25))
    ]
    outside = RECORD | {"validation_id": "my-own-run", "published_tokens_per_s": 1e9}
    kept = calibrate.committed_only([*records, outside])
    assert [r["validation_id"] for r in kept] == ids
    fit = calibrate.fit([calibrate.observation(r) for r in kept])
    assert dict(fit.k)[SHARED] == pytest.approx(5 ** (1 / 3))  # the outside run's 1e9 would move it
    assert calibrate.calibrated_tokens_per_s(outside, fit) == pytest.approx(1e6 / (5 ** (1 / 3) * 0.45))
