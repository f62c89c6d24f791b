"""The command line and the noxfile: the variant list has one home, and bad input fails before any compile."""

import subprocess
import sys
from pathlib import Path

import pytest

from bench.tpu_aot.compile import check_mesh
from model import compat
from model.config import ConfigError, Mesh, all_variants

REPO = Path(__file__).resolve().parents[1]
NAMES = [v.name for v in all_variants()]


def bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_list_prints_every_variant_once():
    result = bench("list")
    assert result.returncode == 0 and result.stdout.split() == NAMES


def test_noxfile_sessions_cover_exactly_the_models_variants():
    nox = pytest.importorskip("nox")  # noqa: F841  (the noxfile imports it)
    sys.path.insert(0, str(REPO))
    import noxfile

    ids = [str(param) for param in noxfile.bench.parametrize]
    assert ids == NAMES
    assert {noxfile.environment_for(n) for n in NAMES if "-xmap-" in n} == {"xmap"}
    assert {noxfile.environment_for(n) for n in NAMES if "-xmap-" not in n} == {"current"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--variant", "parallel-h256-gspmd-none"], "valid strategy values: xmap, pjit, shard_map, single"),
        (["run", "--variant", "all", "--preset", "gptj-7b"], "valid presets: tiny, cpu, gptj-6b, gpt-neo-2.7b"),
        (["run", "--variant", "parallel-h256-pjit-none", "--mesh", "dp=two"], "expected e.g. dp=2,mp=4"),
        (
            ["run", "--variant", "parallel-h256-pjit-none", "--preset", "tiny", "--mesh", "mp=8"],
            "not divisible by mp=8",
        ),
        (["run", "--variant", "parallel-h256-pjit-none", "--set", "seq=4096"], "longer than the context"),
        (["run", "--variant", "parallel-h256-pjit-none", "--scope", "layer"], "valid scope values: model, block"),
        (["tpu-aot", "--topology", "v3-256"], "v3:8x16"),
        (["sweep", "--resume"], "--resume needs --out"),
        (["report", "/nonexistent/run"], "no run directory at /nonexistent/run"),
    ],
)
def test_bad_input_fails_fast_with_what_is_valid(args, message):
    result = bench(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_xmap_on_current_jax_names_the_command_that_runs_it():
    if compat.has_xmap():
        pytest.skip("this JAX has xmap: the message is for current JAX")
    result = bench("run", "--variant", "parallel-h256-xmap-full", "--preset", "tiny")
    assert result.returncode == 2
    assert "nox -s" in result.stderr and "jax 0.4.30" in result.stderr


def test_a_mesh_that_does_not_fit_the_topology_lists_what_does():
    with pytest.raises(ConfigError, match="valid meshes have dp x mp = 256"):
        check_mesh(Mesh(16, 8), 256, "v3:8x16")
    check_mesh(Mesh(32, 8), 256, "v3:8x16")


def test_run_records_a_real_variant_end_to_end(tmp_path):
    from bench.records.store import load_records

    result = bench(
        "run", "--variant", "parallel-h256-shard_map-full", "--preset", "tiny", "--steps", "2", "--warmup", "1",
        "--out", str(tmp_path), "--overhead", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = load_records(tmp_path).records
    assert record["status"] == "ok" and record["tokens_per_step"] == 4 * 16
    assert record["tokens_per_s"] == pytest.approx(64 / record["step_s_median"])
    assert 0 < record["hfu"] <= 1 and record["mfu"] <= record["hfu"]  # remat adds recompute to HFU only
    assert record["comm_mp_allreduce_bytes"] > 0 and record["devices"] == 8
    assert record["harness_overhead_frac"] is not None


def test_tpu_out_of_memory_keeps_the_compilers_figures():
    from bench.tpu_aot.compile import out_of_memory_fields

    message = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (18.00G) "
        "exceeds available HBM (15.48G)."
    )
    fields = out_of_memory_fields(message)
    assert fields["fits_hbm"] is False
    assert fields["oom_required_bytes"] == 18.00 * 2**30 and fields["oom_available_hbm_bytes"] == 15.48 * 2**30
    legacy = "XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 19.35G of 15.48G hbm."
    assert out_of_memory_fields(legacy)["oom_required_bytes"] == 19.35 * 2**30
    assert out_of_memory_fields("some other failure") == {}
