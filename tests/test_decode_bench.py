"""``bench decode``: the decode step's analytic model against hand counts, its bad input refused before any compile,
and one small run on tiny writing a record the schema accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.analysis.decode import (
    bandwidth_floor_s,
    decode_mbu,
    decode_read_bytes,
    embedding_unread_bytes,
    expected_decode_comm,
    percentile,
)
from bench.analysis.hlo import CollectiveKind
from bench.measure.bandwidth import copy_bytes_moved
from model.config import Dtype, Mesh, ModelConfig, Residual

REPO = Path(__file__).resolve().parents[1]
GPTJ = ModelConfig()  # GPT-J-6B: 28 layers, d_model 4096, bf16


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "run directory" not in result.stderr  # refused before anything ran


# --- the analytic model, by hand ----------------------------------------------------------------------------------


def test_parallel_block_decodes_with_one_allreduce_per_layer_plus_the_embedding():
    # 28 layers x 1 + 1 embedding; each carries batch 8 x 4096 x 2 bytes (bf16) = 65,536 bytes
    expected = expected_decode_comm(GPTJ, Mesh(dp=1, mp=8), batch=8)
    assert (expected.layer_allreduce_count, expected.other_allreduce_count) == (28, 1)
    assert expected.layer_allreduce_bytes == 28 * 65_536
    assert expected.allreduce_bytes == 29 * 65_536


def test_serial_block_decodes_with_two_per_layer():
    serial = ModelConfig(residual=Residual.SERIAL)
    expected = expected_decode_comm(serial, Mesh(dp=1, mp=8), batch=1)
    assert expected.allreduce_count == 57  # 2 x 28 + 1
    assert expected.layer_allreduce_bytes == 56 * 8192  # 1 x 4096 x 2 bytes each


def test_decode_allreduces_carry_the_per_replica_batch_and_vanish_without_mp():
    f32 = ModelConfig(n_layers=2, d_model=1024, compute_dtype=Dtype.FLOAT32)
    assert expected_decode_comm(f32, Mesh(dp=2, mp=4), batch=8).layer_allreduce_bytes == 2 * 4 * 1024 * 4
    assert expected_decode_comm(f32, Mesh(dp=4, mp=1), batch=8).allreduce_count == 0
    with pytest.raises(ValueError):
        expected_decode_comm(f32, Mesh(dp=2, mp=4), batch=3)


def test_read_bytes_floor_and_mbu_by_hand():
    read = decode_read_bytes(weight_bytes=3_000, kv_cache_bytes=1_000)
    assert read == 4_000
    assert bandwidth_floor_s(read, 2_000.0) == 2.0
    assert decode_mbu(read, step_s=4.0, bandwidth_bytes_per_s=2_000.0) == 0.5  # the step took twice its floor
    with pytest.raises(ValueError):
        decode_mbu(read, 0.0, 1.0)
    # GPT-J-6B's embedding in bf16 at batch 8: (50,400 - 8) rows x 4096 x 2 bytes go unread
    assert embedding_unread_bytes(GPTJ, 8, 2) == 50_392 * 8192
    assert decode_read_bytes(3_000, 1_000, unread_bytes=500) == 3_500


def test_copy_moves_twice_the_array_and_p90_interpolates():
    assert copy_bytes_moved(256) == 512
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 90) == 10.0
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)


def test_small_allreduce_costs_its_latency_and_a_large_one_its_bytes():
    from bench.hardware.table import ICI_HOP_LATENCY_S
    from bench.projection.decode import collective_cost

    bandwidth = 1e11  # bytes/s per device: TPU v3's one-way link x 2 directions / 2 cores per chip
    small = collective_cost(CollectiveKind.ALL_REDUCE, 8192, 8, bandwidth)  # GPT-J batch 1: 4096 bf16
    assert small.latency_s == 14 * ICI_HOP_LATENCY_S  # 2 x (8 - 1) ring steps
    assert small.seconds == small.latency_s  # 2 x 7/8 x 8192 bytes / 1e11 = 0.14 us < 14 us
    large = collective_cost(CollectiveKind.ALL_REDUCE, 2**30, 8, bandwidth)
    assert large.seconds == pytest.approx(2 * 7 / 8 * 2**30 / bandwidth)


# --- bad input: one error line, exit 2, before any compile --------------------------------------------------------


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--prompt-tokens", "60", "--max-new-tokens", "8"], "the context holds 64"),
        (["--max-new-tokens", "0"], "--max-new-tokens 0: generate at least 1 token"),
        (["--batch", "0"], "--batch values must be at least 1"),
        (["--temperature", "-0.5"], "temperature -0.5: must be at least 0"),
        (["--top-p", "0"], "top-p 0.0: must be in (0, 1]"),
        (["--top-p", "1.5"], "top-p 1.5: must be in (0, 1]"),
        (["--context", "128"], "longer than the preset's context 64"),
    ],
)
def test_bad_input_is_one_error_line(flags, fragment):
    assert_one_line_error(bench("decode", "--preset", "tiny", *flags), fragment)


def test_a_cache_that_cannot_fit_is_refused_with_what_it_needs(tmp_path):
    # 2 layers x 2 (k, v) x batch 128 x 2**22 positions x 1024 x 4 bytes = 8 TiB of cache
    result = bench(
        "decode",
        "--preset",
        "tiny",
        "--set",
        "context=4194304",
        "--context",
        "4194304",
        "--batch",
        "128",
        "--variant",
        "parallel-h256-single-none",
        "--out",
        str(tmp_path),
    )
    assert_one_line_error(result, "needs 8192.00 GiB")


# --- one small run -------------------------------------------------------------------------------------------------


def test_tiny_decode_writes_a_valid_record(tmp_path):
    from bench.records.schema import validate

    result = bench(
        "decode",
        "--preset",
        "tiny",
        "--variant",
        "serial-h128-shard_map-none",
        "--mesh",
        "dp=1,mp=4",
        "--batch",
        "2",
        "--context",
        "64",
        "--prompt-tokens",
        "8",
        "--max-new-tokens",
        "3",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert validate(record) == []
    assert record["kind"] == "decode" and record["status"] == "ok"
    assert (record["batch"], record["seq"], record["mesh_mp"]) == (2, 64, 4)
    assert record["decode_comm_matches_model"], record["comm_differences"]
    assert record["comm_mp_allreduce_tensors"] == 2 * 2 + 1  # serial: two per layer, plus the embedding
    unread = (256 - 2) * 1024 * 4  # tiny: vocab 256, d_model 1024, f32; the lookup reads 2 rows
    assert (
        record["decode_read_bytes_per_step_total"]
        == record["decode_weight_bytes_total"] - unread + record["kv_cache_bytes_total"]
    )
    assert np.isclose(record["decode_mbu"], record["decode_floor_s"] / record["decode_step_median_s"])


# --- the report section --------------------------------------------------------------------------------------------


def _projected(residual: str, step_s: float, ici_s: float, latency_s: float) -> dict:
    return {
        "kind": "decode",
        "status": "ok",
        "backend": "tpu",
        "topology": "v3:2x2",
        "preset": "gptj-6b",
        "variant": f"{residual}-h256-shard_map-none",
        "residual": residual,
        "d_head": 256,
        "batch": 1,
        "seq": 2048,
        "mesh_dp": 1,
        "mesh_mp": 8,
        "decode_projected_step_s_per_device": step_s,
        "decode_projected_work_s_per_device": step_s - ici_s,
        "decode_projected_ici_s_per_device": ici_s,
        "decode_projected_ici_latency_s_per_device": latency_s,
        "decode_projected_hbm_floor_s_per_device": 1e-3,
        "decode_projected_tokens_per_s": 1 / step_s,
        "decode_projected_component_s_per_device": {"ff_in": step_s - ici_s, "ici": ici_s},
    }


def test_report_section_is_empty_without_decode_records_and_splits_the_lead():
    from bench.report.sections.decode import section_decode

    assert section_decode([]) == []
    # serial is 500 us slower: 400 us of ICI (all of it latency) and 100 us of work
    records = [_projected("parallel", 3.0e-3, 0.4e-3, 0.4e-3), _projected("serial", 3.5e-3, 0.8e-3, 0.8e-3)]
    text = "\n".join(section_decode(records))
    assert "**parallel-h256-shard_map-none** fastest (PROJECTION), 1.17x ahead" in text
    assert "parallel leads serial by 500 us a step (1.17x); ICI 400 us of it, 80% of it collective latency" in text
    assert "; work 100 us" in text
    assert "decode fastest in 1 of 1 projected" in text
