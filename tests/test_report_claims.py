"""The GPT-J article's claims table (bench/report/sections/claims.py) from synthetic v3-256 records whose numbers
are counted by hand."""

import pytest

from bench.hardware import baseline
from bench.projection import throughput as projection
from bench.report.sections import claims

# The compiler's estimate of the step, no ICI: tokens/s = 1e6 / estimate.
BASE = {
    "kind": "tpu-aot",
    "status": "ok",
    "preset": "gptj-6b",
    "topology": "v3:8x16",
    "devices": 256,
    "tokens_per_step": 1_000_000,
    "hardware_flops_per_step_total": 1e15,
    "comm_mp_wire_bytes_per_device": 0.0,
    "comm_dp_wire_bytes_per_device": 0.0,
    "comm_dpmp_wire_bytes_per_device": 0.0,
    "n_params": 6_050_882_784,
}


def _record(variant: str, step_s: float, **fields) -> dict:
    return BASE | {"variant": variant, "xla_optimal_s_per_step_per_device": step_s} | fields


RECORDS = [
    _record("parallel-h256-shard_map-full", 4.0, comm_mp_wire_bytes_per_device=30e9),
    _record("parallel-h128-shard_map-full", 5.0),
    _record("serial-h256-shard_map-full", 4.4, comm_mp_wire_bytes_per_device=60e9),
    _record("serial-h128-pjit-full", 2.0, preset="gpt-neo-2.7b", n_params=2_700_000_000),
]


def _projections(records):
    # ICI is zero on every axis except mp: 30e9 / 1e11 = 0.3 s (parallel), 0.6 s (serial), hidden under the work in
    # the full-overlap bound the claims compare, so tokens/s = 1e6 / estimate
    return [projection.project(r) for r in records]


def test_head_width_by_hand() -> None:
    claim = claims.head_width(_projections(RECORDS))
    # h256: 1e6 / 4.0 = 250,000; h128: 1e6 / 5.0 = 200,000; 1.25x
    assert claim.verdict == "holds"
    assert "250,000 vs h128 200,000 tokens/s: 1.250x" in claim.number


def test_parallel_block_sends_half() -> None:
    claim = claims.parallel_block(RECORDS)
    assert claim.verdict == "holds" and "serial 60 GB vs parallel 30 GB, serial sends 2.000x" in claim.number


def test_against_gpt_neo_by_hand() -> None:
    claim = claims.against_gpt_neo(_projections(RECORDS))
    # GPT-J 151k / 250k = 60.4%; GPT-Neo 148k / 500k = 29.6%; ratio 204%
    gptj = baseline.TOKENS_PER_S.value / 250_000
    neo = baseline.GPT_NEO_2_7B_TOKENS_PER_S.value / 500_000
    assert gptj == pytest.approx(0.604) and neo == pytest.approx(0.296)
    assert "GPT-J 60.4%, GPT-Neo 29.6%" in claim.number and "204% of GPT-Neo's" in claim.number


def test_local_attention_without_a_record_names_what_is_missing() -> None:
    claim = claims.local_attention(RECORDS, _projections(RECORDS))
    assert claim.verdict == "not decided" and "no compile of gptj-6b with local attention" in claim.number


def test_local_attention_with_a_record() -> None:
    local = _record(
        "parallel-h256-shard_map-full+local", 3.7, comm_mp_wire_bytes_per_device=30e9, local_attention_every=2
    )
    claim = claims.local_attention([*RECORDS, local], _projections(RECORDS))
    # 1e6 / 3.7 = 270,270 against 1e6 / 4.0: 1.081x faster, over the 5% bar
    assert claim.verdict == "does not hold" and "270,270 vs global 250,000 tokens/s: 1.081x" in claim.number


def test_largest_model_by_layout() -> None:
    assert claims.largest_model(RECORDS).verdict == "not decided"
    big = [
        _record("parallel-h256-shard_map-full", 9.0, n_params=20_000_000_000, fits_hbm=True, layout="fsdp"),
        _record("parallel-h256-shard_map-full", 9.0, n_params=13_000_000_000, fits_hbm=True, layout="megatron"),
        _record("parallel-h256-shard_map-full", 9.0, n_params=26_000_000_000, fits_hbm=False, layout="megatron"),
    ]
    claim = claims.largest_model([*RECORDS, *big])
    assert claim.verdict == "holds"
    assert claim.number.startswith("fsdp: 20.0B fits, megatron: 13.0B fits")


def test_section_has_every_claim() -> None:
    lines = claims.section_claims_records(_projections(RECORDS), RECORDS)
    assert lines[0] == claims.TITLE
    table = [line for line in lines[-1].splitlines() if line.startswith("| ")][1:]
    assert len(table) == 6
