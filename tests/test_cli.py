"""The command line and the noxfile: the variant list has one home, and bad input fails before any compile."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.tpu_aot.compile import check_mesh
from kernels.attention import dot_product_attention_has_implementation
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
    assert record["tokens_per_s"] == pytest.approx(64 / record["step_median_s"])
    assert 0 < record["hfu"] <= 1 and record["mfu"] <= record["hfu"]  # remat adds recompute to HFU only
    assert record["comm_mp_allreduce_bytes_per_device"] > 0 and record["devices"] == 8
    assert record["harness_overhead_frac"] is not None


def test_tpu_out_of_memory_keeps_the_compilers_figures():
    from bench.tpu_aot.compile import out_of_memory_fields

    message = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (18.00G) "
        "exceeds available HBM (15.48G)."
    )
    fields = out_of_memory_fields(message)
    assert fields["fits_hbm"] is False
    assert (
        fields["oom_required_bytes_per_device"] == 18.00 * 2**30
        and fields["oom_available_hbm_bytes_per_device"] == 15.48 * 2**30
    )
    legacy = "XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 19.35G of 15.48G hbm."
    assert out_of_memory_fields(legacy)["oom_required_bytes_per_device"] == 19.35 * 2**30
    assert out_of_memory_fields("some other failure") == {}


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int = 2) -> None:
    """Exit ``code``, one ``error:`` line naming what is valid, and no Python traceback."""
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert "Traceback" not in result.stderr


PJIT_NONE = "parallel-h256-pjit-none"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--variant", "all", "--variant", PJIT_NONE], "--variant all stands alone"),
        (["run", "--variant", PJIT_NONE, "--set", "seq=0"], "seq=0: sizes must be positive"),
        (["run", "--variant", PJIT_NONE, "--set", "seq=-5"], "seq=-5: sizes must be positive"),
        (["run", "--variant", PJIT_NONE, "--set", "batch=0"], "batch=0: sizes must be positive"),
        (["run", "--variant", PJIT_NONE, "--set", "n_layers=0"], "n_layers=0: sizes must be positive"),
        (["run", "--variant", PJIT_NONE, "--set", "vocab=-1"], "vocab=-1: sizes must be positive"),
        (["run", "--variant", PJIT_NONE, "--set", "d_head=128"], "choose it with --variant"),
        (["run", "--variant", PJIT_NONE, "--set", "residual=serial"], "choose it with --variant"),
        (["run", "--variant", PJIT_NONE, "--set", "attention_kernel=xla"], "choose it with --variant"),
        (["run", "--variant", f"{PJIT_NONE}+flash"], "valid kernels: reference, xla, blockwise, cudnn, pallas"),
        (["sweep", "--set", "remat=full"], "choose it with --variant"),
        (["run", "--variant", PJIT_NONE, "--resume"], "--resume needs --out"),
        (["tpu-aot", "--variant", PJIT_NONE, "--topology", "v3:2x2", "--mesh", "dp=2,mp=2"], "dp x mp = 8"),
        (["tpu-aot", "--variant", PJIT_NONE, "--set", "seq=0"], "seq=0: sizes must be positive"),
    ],
)
def test_user_mistakes_end_in_one_line_not_a_traceback(args, fragment):
    assert_one_line_error(bench(*args), fragment)


@pytest.mark.parametrize(
    "kernel, fragment",
    [
        ("cudnn", "attention kernel 'cudnn' runs on GPU only (through cuDNN), not on cpu"),
        ("pallas", "attention kernel 'pallas' runs on GPU and TPU; on cpu only with interpret=True"),
    ],
)
def test_a_kernel_that_does_not_run_on_cpu_is_refused_before_compiling(kernel, fragment):
    result = bench("run", "--variant", f"{PJIT_NONE}+{kernel}", "--preset", "tiny")
    assert_one_line_error(result, fragment)
    assert "run directory:" not in result.stderr  # printed just before the first compile


def test_the_xla_kernel_is_refused_where_this_jax_lacks_it():
    # mp=8 does not divide the tiny preset's 4 heads: a run past the kernel check stops there, before compiling
    result = bench("run", "--variant", f"{PJIT_NONE}+xla", "--preset", "tiny", "--mesh", "mp=8")
    if dot_product_attention_has_implementation():
        assert_one_line_error(result, "not divisible by mp=8")
    else:  # jax 0.4.30
        assert_one_line_error(result, "attention kernel 'xla' needs jax.nn.dot_product_attention(implementation=...)")


def test_tpu_aot_without_libtpu_names_the_nox_session():
    from bench.tpu_aot.env import libtpu_available

    if libtpu_available():
        pytest.skip("libtpu is installed here: the message is for environments without it")
    result = bench("tpu-aot", "--variant", PJIT_NONE, "--preset", "tiny", "--topology", "v3:2x2", "--mesh", "dp=2,mp=4")
    assert_one_line_error(result, "nox -s tpu_aot")


def test_all_means_every_variant_this_jax_can_build():
    # mp=8 does not divide the tiny preset's 4 heads: the run stops at validation, after 'all' was resolved
    result = bench("run", "--variant", "all", "--preset", "tiny", "--mesh", "mp=8")
    assert_one_line_error(result, "not divisible by mp=8")
    if not compat.has_xmap():
        assert "'all' leaves out the xmap variants, which need jax 0.4.30" in result.stderr
        assert "parallel-h256-xmap-full" in result.stderr


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "results.txt"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--variant", PJIT_NONE, "--preset", "tiny"],
        ["sweep", "--quick", "--no-report"],
        ["tpu-aot", "--variant", PJIT_NONE, "--preset", "tiny", "--topology", "v3:2x2", "--mesh", "dp=2,mp=4"],
        ["distributed", "--processes", "2", "--devices-per-process", "4", "--", "run", "--variant", PJIT_NONE],
    ],
    ids=["run", "sweep", "tpu-aot", "distributed"],
)
@pytest.mark.parametrize("under", [False, True], ids=["a-file", "under-a-file"])
def test_an_out_that_cannot_be_written_fails_before_measuring(command, under, a_file):
    out = a_file / "run" if under else a_file
    result = bench(*command, "--out", str(out), timeout=30)
    assert_one_line_error(result, f"--out {out}")
    assert "run directory:" not in result.stderr  # printed just before the first compile


def interrupt(
    args: list[str], after: str, sig: signal.Signals = signal.SIGINT
) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -m bench ARGS``, send ``sig`` once a stderr line contains ``after``; the result and seconds."""
    child = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    seen = []
    for line in child.stderr:
        seen.append(line)
        if after in line:
            time.sleep(0.5)  # inside the compile, or the child process
            child.send_signal(sig)
            break
    seen.append(child.stderr.read())
    child.wait(timeout=60)
    return subprocess.CompletedProcess(args, child.returncode, "", "".join(seen)), time.monotonic() - start


@pytest.mark.parametrize(
    "command, after",
    [
        (["run", "--variant", PJIT_NONE, "--preset", "tiny", "--steps", "1", "--warmup", "0"], "run directory:"),
        (["sweep", "--quick", "--no-report"], "[1/"),
    ],
    ids=["run", "sweep"],
)
@pytest.mark.parametrize(
    "sig, code, how", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]
)
def test_ctrl_c_and_sigterm_say_where_the_records_are_and_how_to_finish(command, after, sig, code, how, tmp_path):
    result, seconds = interrupt([*command, "--out", str(tmp_path)], after, sig)
    assert_one_line_error(result, f"intact in {tmp_path}; rerun with --resume --out {tmp_path} to finish", code=code)
    assert f"error: {how};" in result.stderr
    assert seconds < 60


def test_sigterm_mid_run_keeps_the_records_written_before_it(tmp_path):
    """Terminated after the first variant's record: that record stays whole, and resuming runs only the rest."""
    from bench.records.store import load_records

    second = "serial-h256-pjit-none"
    command = ["run", "--variant", PJIT_NONE, "--variant", second, "--preset", "tiny", "--mesh", "dp=1,mp=1"]
    command += ["--steps", "1", "--warmup", "0", "--out", str(tmp_path)]
    result, _ = interrupt(command, " tokens/s", signal.SIGTERM)  # the first record's line, printed once written
    assert result.returncode == 143, result.stderr[-2000:]
    loaded = load_records(tmp_path)
    assert not loaded.skipped and [r["variant"] for r in loaded.records] == [PJIT_NONE]
    resumed = bench(*command, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["variant"] for r in load_records(tmp_path).records] == [PJIT_NONE, second]


def test_nox_is_ignored_as_a_directory_or_a_symlink():
    # `.nox/` would match only a directory; the nox environments here are often a symlink
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", ".nox"], cwd=REPO)
    assert ignored.returncode == 0


def test_the_launcher_and_the_cli_read_the_same_run_flags():
    from bench.cli.spec import run_parser
    from bench.launch.local import LocalCluster
    from bench.records.runspec import run_argv

    argv = run_argv(variant=[PJIT_NONE], preset="tiny", overrides=["seq=8"], steps=3, resume=True, out="/tmp/x")
    assert argv[0] == "run"
    args = run_parser().parse_args(argv[1:])
    assert (args.variant, args.preset, args.overrides) == ([PJIT_NONE], "tiny", ["seq=8"])
    assert (args.steps, args.warmup) == (3, 2)
    assert args.resume and args.out == "/tmp/x" and not args.distributed
    cluster = LocalCluster(argv, processes=2, devices_per_process=4, port=12345, env={})
    launched = run_parser().parse_args(cluster.argv(1)[4:])
    assert (launched.distributed, launched.coordinator) == (True, "127.0.0.1:12345")
    assert (launched.num_processes, launched.process_id, launched.variant) == (2, 1, [PJIT_NONE])
    with pytest.raises(TypeError, match="not a bench run flag: colour"):
        run_argv(colour="red")
