import sys

import jax

from bench.launch.sweep import FULL, QUICK, Job, env_variants, jobs, rotated, run_job
from bench.records.store import load_records
from model.config import Strategy, Variant


def test_every_variant_is_planned_once_per_environment_and_repeat():
    planned = jobs(FULL.__class__("cpu", 5, 1, 2, True), ["current", "xmap"])
    assert len(planned) == 2 * (16 + 24)
    xmap_env = {j.variant.name for j in planned if j.env == "xmap"}
    assert {v.strategy for v in map(Variant.parse, xmap_env)} == {Strategy.XMAP, Strategy.PJIT, Strategy.SHARD_MAP}
    assert not any(j.variant.strategy is Strategy.XMAP for j in planned if j.env == "current")


def test_quick_leaves_the_xmap_baselines_out():
    assert {v.strategy for v in env_variants("xmap", QUICK)} == {Strategy.XMAP}


def test_repeats_rotate_the_order():
    items = list(range(6))
    assert rotated(items, 0, 3) == [0, 1, 2, 3, 4, 5]
    assert rotated(items, 1, 3) == [2, 3, 4, 5, 0, 1]
    assert rotated(items, 2, 3) == [4, 5, 0, 1, 2, 3]
    planned = jobs(FULL.__class__("tiny", 1, 0, 2, False), ["current"])
    assert planned[0].variant != planned[16].variant and planned[16].repeat == 1


def test_a_process_that_dies_without_a_record_is_recorded_as_failed(tmp_path):
    job = Job("current", Variant.parse("parallel-h256-pjit-none"), repeat=0)
    dying = [sys.executable, "-c", "import sys; sys.stderr.write('segfault-ish'); sys.exit(139)"]
    run_job(job, QUICK, python=dying[0], out=tmp_path, extra=[], timeout_s=60, command_override=dying)
    (record,) = load_records(tmp_path).records
    assert record["status"] == "failed" and "code 139" in record["error"] and "segfault-ish" in record["error"]
    assert record["kind"] == "failed-placeholder" and record["jax"] == jax.__version__  # the child's python's jax


def test_a_jobs_command_is_a_run_the_cli_parses_back(tmp_path):
    from bench.cli.spec import run_parser
    from bench.launch.sweep import command

    job = Job("current", Variant.parse("parallel-h256-pjit-none"), repeat=1)
    argv = command(job, QUICK, "python3", tmp_path, ["seq=8"])
    assert argv[:4] == ["python3", "-m", "bench", "run"]
    args = run_parser().parse_args(argv[4:])
    assert (args.variant, args.preset, args.overrides) == (["parallel-h256-pjit-none"], "tiny", ["seq=8"])
    assert (args.steps, args.warmup, args.repeat, args.out, args.resume) == (3, 1, 1, str(tmp_path), True)
