"""The TPU projection's ICI time, its two bounds and their narrowing, the fallback to the roofline, the efficiency
published runs imply (bench/projection/throughput.py), and the report's sections built on them.

Every record here is hand-made: the numbers are chosen so that each result can be counted by hand, not measured.
"""

from pathlib import Path

import pytest
from report_text import unwrap

from bench.hardware import baseline
from bench.hardware.table import PeakBasis
from bench.projection import throughput as projection
from bench.projection.throughput import ProjectionModel
from bench.records.collectives import CollectiveKind
from bench.records.schema import SCHEMA_VERSION
from bench.report.analyse import analyse
from bench.report.format import fmt
from bench.report.load import RunRecords
from bench.report.write import draw, render

MB = 1e6
# A v3-256 compile of GPT-J's mesh whose step is 0.3 s by the compiler's estimate, with 2 GB on the wire per device
# over mp and 3 GB over dp: 20 ms and 30 ms at 1e11 B/s per device.
RECORD = {
    "schema_version": SCHEMA_VERSION,
    "kind": "tpu-aot",
    "backend": "tpu-aot",
    "status": "ok",
    "variant": "parallel-h256-xmap-full",
    "preset": "gptj-6b",
    "jax": "0.4.30",
    "topology": "v3:8x16",
    "devices": 256,
    "mesh_dp": 32,
    "mesh_mp": 8,
    "grad_accum": 16,
    "tokens_per_step": 16 * 65536,
    "hardware_flops_per_step_total": 1.344e16,
    "xla_bytes_accessed_per_step_total": 256 * 4.5e10,
    "comm_mp_wire_bytes_per_device": 2e9,
    "comm_dp_wire_bytes_per_device": 3e9,
    "comm_dpmp_wire_bytes_per_device": 0.0,
    "xla_optimal_s_per_step_per_device": 0.3,
    "xla_optimal_source": "hand-made",
    "mem_peak_estimate_bytes_per_device": 10 * 2**30,
}


def test_one_all_reduce_on_v3_by_hand():
    # The example: a 16.8 MB psum over mp=8. A ring all-reduce sends 2 (n-1)/n of the payload per device:
    # 2 x 7/8 x 16.8 MB = 29.4 MB. A v3 chip has 2 one-way links of 1e11 B/s on the mp ring (the scaling book's
    # 2e11 bidirectional), shared by its 2 cores: 1e11 B/s per device, so 294 us. The ring takes 2 x 7 = 14 steps,
    # one hop each at 1 us: 14 us more.
    wire = 2 * 7 / 8 * 16.8 * MB
    record = RECORD | {
        "comm_mp_wire_bytes_per_device": wire,
        "comm_dp_wire_bytes_per_device": 0.0,
        "comm_mp_allreduce_count": 1,
        "comm_dp_allreduce_count": 0,
    }
    p = projection.project(record)
    assert dict(p.ici_s_by_axis)["mp"] == pytest.approx(294e-6)
    assert dict(p.ici_latency_s_by_axis) == pytest.approx({"mp": 14e-6, "dp": 0.0})
    assert p.ici_s == pytest.approx(308e-6)
    assert projection.ring_steps(CollectiveKind.ALL_REDUCE, 8) == 14
    assert projection.ring_steps(CollectiveKind.ALL_GATHER, 8) == 7
    assert projection.ring_steps(CollectiveKind.COLLECTIVE_PERMUTE, 8) == 1
    assert projection.ring_steps(CollectiveKind.ALL_REDUCE, 1) == 0
    assert projection.ici_latency_s(60, 14) == pytest.approx(840e-6)


def test_two_bounds_on_the_compiler_estimate():
    p = projection.project(RECORD)
    assert p.model is ProjectionModel.XLA_OPTIMAL and p.work_s == (0.3,)
    assert p.ici_s == pytest.approx(0.05)  # no collective counts: no latency term
    assert p.overlap_step_s == pytest.approx(0.3)  # max(0.3, 0.05)
    assert p.serial_step_s == pytest.approx(0.35)  # 0.3 + 0.05
    assert p.tokens_per_s_overlap == pytest.approx(16 * 65536 / 0.3)  # every micro-batch's tokens
    assert p.tokens_per_s_serial == pytest.approx(16 * 65536 / 0.35)
    assert p.band == pytest.approx(0.35 / 0.3 - 1)
    assert p.ici_share == pytest.approx(0.05 / 0.35)
    assert p.bound_by == "compute" and p.grad_accum == 16 and p.xla_optimal_source == "hand-made"
    assert projection.bases_for_record(RECORD) == (PeakBasis.SPEC,)  # the estimate has its own peak


def test_exposed_ici_narrows_the_band():
    # All of dp's 30 ms is exposed (nothing scheduled inside its collectives); mp's 20 ms can hide under the work.
    record = RECORD | {"comm_mp_overlappable_wire_bytes_per_device": 2e9, "comm_dp_exposed_wire_bytes_per_device": 3e9}
    p = projection.project(record)
    assert p.ici_exposed_s == pytest.approx(0.03) and p.ici_overlappable_s == pytest.approx(0.02)
    assert p.overlap_step_s == pytest.approx(0.33)  # 0.03 exposed + max(0.3, 0.02)
    assert p.serial_step_s == pytest.approx(0.35)
    # only the overlappable part recorded: the rest of the axis's bytes is exposed
    same = projection.project(
        RECORD | {"comm_mp_overlappable_wire_bytes_per_device": 2e9, "comm_dp_overlappable_wire_bytes_per_device": 0}
    )
    assert same.overlap_step_s == pytest.approx(0.33)
    # overlappable ICI longer than the work sets the bound
    assert projection.step_bounds_s((0.1,), 0.01, 0.2) == pytest.approx((0.21, 0.31))
    assert projection.project(RECORD | {"xla_optimal_s_per_step_per_device": 0.01}).bound_by == "ICI"


def test_without_the_estimate_the_roofline_prices_the_work():
    for missing in ({"xla_optimal_s_per_step_per_device": None}, {}):
        record = {k: v for k, v in RECORD.items() if k != "xla_optimal_s_per_step_per_device"} | missing
        p = projection.project(record, PeakBasis.GPTJ)
        assert p.model is ProjectionModel.ROOFLINE and p.xla_optimal_s is None and p.xla_optimal_source is None
        assert p.work_s == pytest.approx((1.0, 0.1))  # 1.344e16 / (256 x 52.5e12); 4.5e10 / 450e9
        assert p.overlap_step_s == pytest.approx(1.0) and p.serial_step_s == pytest.approx(1.15)
        assert projection.bases_for_record(record) == (PeakBasis.SPEC, PeakBasis.GPTJ)


def test_the_whole_step_hlo_roofline_prices_the_work_where_asked_or_alone():
    record = RECORD | {"hlo_roofline_s_per_step_per_device": 0.4}
    assert projection.project(record).model is projection.HEADLINE is ProjectionModel.HLO_ROOFLINE  # the headline first
    p = projection.project(record, model=ProjectionModel.HLO_ROOFLINE)
    assert p.model is ProjectionModel.HLO_ROOFLINE and p.work_s == (0.4,) and p.hlo_roofline_s == 0.4
    assert p.overlap_step_s == pytest.approx(0.4) and p.serial_step_s == pytest.approx(0.45)  # + 50 ms of ICI
    alone = {k: v for k, v in record.items() if k != "xla_optimal_s_per_step_per_device"}
    assert projection.project(alone).model is ProjectionModel.HLO_ROOFLINE
    assert projection.project(RECORD).model is ProjectionModel.XLA_OPTIMAL  # the cross-check where it is alone
    assert projection.bases_for_record(alone) == (PeakBasis.SPEC,)  # priced at the topology row's own peak
    with pytest.raises(projection.ProjectionError, match="hlo_roofline_s_per_step_per_device"):
        projection.project(RECORD, model=ProjectionModel.HLO_ROOFLINE)
    # a block-looping kernel's whole step keeps its loops (priced once): only the unrolled estimate prices them all
    unrolled = record | {"xla_cost_points_attention_blocks_unrolled": True}
    assert projection.project(unrolled, model=ProjectionModel.XLA_OPTIMAL).attention_blocks_unrolled
    assert not projection.project(unrolled).attention_blocks_unrolled


def _projections(*records):
    return [projection.project(r) for r in records]


def test_gptj_efficiency_is_measured_over_its_own_projection():
    own = projection.project(RECORD)
    other = RECORD | {"variant": "serial-h128-pjit-full", "jax": "0.10.2", "xla_optimal_s_per_step_per_device": 0.6}
    c = projection.calibrate_gptj(_projections(RECORD, other), baseline.TOKENS_PER_S, 16)
    assert c.projection.variant == "parallel-h256-xmap-full" and c.notes == ("compiler estimate: hand-made",)
    assert c.efficiency_overlap == pytest.approx(151_000 / (16 * 65536 / 0.3))
    assert c.efficiency_serial == pytest.approx(151_000 / (16 * 65536 / 0.35))
    assert c.at_efficiency(own) == pytest.approx((151_000, 151_000))  # itself at its own efficiency
    slower = projection.project(other)  # twice the work, same ICI: 0.6 and 0.65 s
    assert c.at_efficiency(slower) == pytest.approx((151_000 * 0.35 / 0.65, 151_000 * 0.3 / 0.6))
    assert projection.efficiency(151_000, 200_000) == pytest.approx(0.755)
    with pytest.raises(ValueError, match="projected_tokens_per_s"):
        projection.efficiency(151_000, 0)


def test_gptj_stand_in_and_differences_are_named():
    no_estimate = {k: v for k, v in RECORD.items() if k != "xla_optimal_s_per_step_per_device"}
    shard_map = RECORD | {"variant": "parallel-h256-shard_map-full", "jax": "0.10.2"}
    c = projection.calibrate_gptj(_projections(no_estimate, shard_map), baseline.TOKENS_PER_S, 16)
    assert c.projection.variant == "parallel-h256-shard_map-full"
    assert "stands in" in c.notes[0]
    c = projection.calibrate_gptj(_projections(no_estimate | {"grad_accum": 1}), baseline.TOKENS_PER_S, 16)
    assert any("accumulation 1, not the published run's 16" in n for n in c.notes)
    assert any("roofline" in n for n in c.notes)
    assert (
        projection.calibrate_gptj(_projections(RECORD | {"preset": "gpt-neo-2.7b"}), baseline.TOKENS_PER_S, 16) is None
    )


def test_gpt_neo_is_checked_against_its_own_preset():
    neo = RECORD | {"preset": "gpt-neo-2.7b", "grad_accum": 1, "tokens_per_step": 65536}
    fast = neo | {"variant": "serial-h128-pjit-full", "xla_optimal_s_per_step_per_device": 0.2}
    slow = neo | {"variant": "serial-h128-shard_map-full", "xla_optimal_s_per_step_per_device": 0.4}
    parallel = neo | {"variant": "parallel-h128-pjit-full", "xla_optimal_s_per_step_per_device": 0.1}
    c = projection.calibrate_gpt_neo(_projections(slow, fast, parallel), baseline.GPT_NEO_2_7B_TOKENS_PER_S)
    assert c.projection.variant == "serial-h128-pjit-full"
    assert c.efficiency_overlap == pytest.approx(148_000 / (65536 / 0.2))
    assert "Mesh TensorFlow" in c.notes[0]


def test_published_peers_are_stored_as_published():
    assert baseline.GRAD_ACCUM.value == 16 and "6B_roto_256.json" in baseline.GRAD_ACCUM.source
    assert baseline.LEVANTER_6_7B_MFU.value == 0.473 and baseline.LEVANTER_6_7B_HFU.value == 0.715
    assert "Levanter-1.0-Release.md" in baseline.LEVANTER_6_7B_MFU.source
    assert baseline.GPT_NEO_2_7B_TOKENS_PER_S.value == 148_000


def _aot_analysis(tmp_path: Path):
    """Hand-made compiles: GPT-J's configuration, two rivals, one that does not fit, and GPT-Neo's preset. Analysed
    in memory: the loader refuses fields the schema has not declared yet (xla_optimal_s_per_step_per_device,
    grad_accum)."""
    records = (
        RECORD,
        RECORD
        | {"variant": "parallel-h256-shard_map-full", "jax": "0.10.2", "xla_optimal_s_per_step_per_device": 0.31},
        RECORD | {"variant": "serial-h128-pjit-full", "jax": "0.10.2", "xla_optimal_s_per_step_per_device": 0.36},
        RECORD | {"variant": "serial-h256-xmap-full", "xla_optimal_s_per_step_per_device": 0.33},
        RECORD
        | {"variant": "parallel-h128-pjit-full", "jax": "0.10.2", "mem_peak_estimate_bytes_per_device": 20 * 2**30},
        RECORD | {"variant": "serial-h128-pjit-full", "jax": "0.10.2", "preset": "gpt-neo-2.7b", "grad_accum": 1},
    )
    return analyse(RunRecords(run_dir=tmp_path, measured=(), aot=records, skipped=(), config=None))


def test_report_leads_with_the_tpu_ranking_and_states_efficiencies(tmp_path):
    analysis = _aot_analysis(tmp_path)
    analysis.figures = draw(analysis, tmp_path)
    text = unwrap(render(analysis))
    headline = text[text.index("## 1. Headline") : text.index("## 4.")]
    assert "TPU ranking, a PROJECTION" in headline and "What this machine measured" not in headline
    assert "## 2. Summary" not in text  # no measured variant: no summary, not an empty one
    ranking = [line for line in headline.splitlines() if line.startswith("| ")][1:]  # after the header
    assert [row.split(" | ")[1].strip() for row in ranking] == [
        "parallel-h256-xmap-full",
        "parallel-h256-shard_map-full",
        "serial-h256-xmap-full",
        "serial-h128-pjit-full",
    ]  # the one that does not fit is left out, GPT-Neo's preset ranks apart
    # one residual pair (xmap, h256): 0.33 s against 0.30 s of work, the same ICI
    assert (
        "PROJECTION: parallel runs at 1.100x the projected tokens/s of serial on the full-overlap bound (median of 1 "
        "pair(s), 1.100x; 1.086x on the no-overlap bound). Per step parallel saves 30.00 ms of work and 0 ms "
        "of ICI" in headline
    )
    assert "h256 runs at" not in headline  # no pair differs in heads alone
    assert "parallel-h128-pjit-full left out" in headline
    own = next(p for p in analysis.projections if p.variant == "parallel-h256-xmap-full")
    low, high = 151_000 / own.tokens_per_s_overlap * 100, 151_000 / own.tokens_per_s_serial * 100
    assert f"GPT-J-6B's measured 151,000 tokens/s is {fmt(low, 3)}% to {fmt(high, 3)}% of the PROJECTION" in headline
    assert "GPT-Neo 2.7B's measured 148,000 tokens/s" in text and "Mesh TensorFlow" in text
    assert "47.3%" in text and "71.5%" in text and "Levanter-1.0-Release.md" in text
    assert "projection_tpu.png" in text and (tmp_path / "projection_tpu.png").read_bytes().startswith(b"\x89PNG")
