import dataclasses
import sys

import jax

from bench.launch.sweep import (
    FULL,
    QUICK,
    QUICK_VARIANTS,
    Job,
    env_variants,
    fastest_reference,
    jobs,
    kernel_jobs,
    kernel_part,
    kernel_support,
    kernel_variants,
    record_refusals,
    rotated,
    run_job,
    share_start_peaks,
)
from bench.records.context import failed_record
from bench.records.peakfile import PeakEntry, append_peak, read_peaks
from bench.records.schema import KERNEL_DIR, RecordKind
from bench.records.store import append_record, load_records
from kernels.attention import check_kernel_supported, dot_product_attention_has_implementation
from kernels.choice import AttentionKernel
from model.config import Scope, Strategy, Variant, apply_overrides, get_preset


def test_every_variant_is_planned_once_per_environment_and_repeat():
    planned = jobs(FULL.__class__("cpu", 5, 1, 2, True), ["current", "xmap"])
    assert len(planned) == 2 * (16 + 24)
    xmap_env = {j.variant.name for j in planned if j.env == "xmap"}
    assert {v.strategy for v in map(Variant.parse, xmap_env)} == {Strategy.XMAP, Strategy.PJIT, Strategy.SHARD_MAP}
    assert not any(j.variant.strategy is Strategy.XMAP for j in planned if j.env == "current")


def test_quick_leaves_the_xmap_baselines_out():
    assert {v.strategy for v in env_variants("xmap", QUICK)} == {Strategy.XMAP}


def test_quick_measures_gptj_and_its_one_choice_neighbours():
    names = {v.name for env in ("current", "xmap") for v in env_variants(env, QUICK)}
    assert names == set(QUICK_VARIANTS)
    assert {v.name for v in env_variants("xmap", QUICK)} == {"parallel-h256-xmap-full"}
    assert len(env_variants("current", FULL)) == 16  # the main job still measures every variant


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


def test_full_profiles_one_run_and_no_other(tmp_path):
    from bench.launch.sweep import command

    profiled = Job("current", Variant.parse("parallel-h256-shard_map-full"), repeat=0)
    assert "--profile" in command(profiled, FULL, "python3", tmp_path, [])
    for other in (
        Job("xmap", profiled.variant, 0),  # jax 0.4.30's CPU runtime writes no op events
        Job("current", profiled.variant, 1),  # one trace, not one per repeat
        Job("current", Variant.parse("parallel-h256-pjit-full"), 0),
    ):
        assert "--profile" not in command(other, FULL, "python3", tmp_path, [])
    assert not QUICK.profiled


# ---------------------------------------------------------------------------------------------------- kernel part

GPTJ = Variant.parse("parallel-h256-xmap-full")
FASTEST = Variant.parse("serial-h128-pjit-none")
K = AttentionKernel


def cpu_refusals() -> dict[str, dict[AttentionKernel, str | None]]:
    """What each environment answers on CPU: jax 0.10.2 has dot_product_attention(implementation=), 0.4.30 not."""
    return {
        env: {k: check_kernel_supported(k, "cpu", has_dpa) for k in AttentionKernel}
        for env, has_dpa in (("current", True), ("xmap", False))
    }


def names(planned: list[Job]) -> list[tuple[str, str, bool]]:
    return [(j.env, j.variant.name, j.refusal is not None) for j in planned]


def test_full_runs_each_kernel_that_runs_here_with_a_reference_among_them_and_records_the_rest_refused():
    planned = kernel_jobs(FULL, ["current", "xmap"], FASTEST, cpu_refusals())
    gptj, fast = GPTJ.name, FASTEST.name
    assert names([j for j in planned if j.refusal is None]) == [
        ("xmap", gptj, False),
        ("xmap", f"{gptj}+blockwise", False),
        ("current", f"{fast}+xla", False),  # the reference between the two kernels: each is next to it
        ("current", fast, False),
        ("current", f"{fast}+blockwise", False),
    ]  # one environment per variant: FULL also measures pjit in the xmap one, but current JAX has every kernel
    refused = {(j.env, j.variant.name): j.refusal for j in planned if j.refusal}
    assert set(refused) == {
        ("xmap", f"{gptj}+xla"), ("xmap", f"{gptj}+cudnn"), ("xmap", f"{gptj}+pallas"),
        ("current", f"{fast}+cudnn"), ("current", f"{fast}+pallas"),
    }  # fmt: skip
    assert "needs jax.nn.dot_product_attention" in refused["xmap", f"{gptj}+xla"]
    assert "GPU only" in refused["current", f"{fast}+cudnn"]
    assert all(j.repeat == 0 for j in planned)


def test_the_quick_look_has_no_kernel_part():
    assert QUICK.kernels == ()


def test_a_kernel_part_on_cpu_runs_blockwise_only_and_where_the_variant_exists():
    fastest = Variant.parse("parallel-h256-pjit-full")  # the fastest is one of the variants the look measured
    plan = dataclasses.replace(QUICK, kernels=(K.blockwise, K.cudnn, K.pallas))
    planned = kernel_jobs(plan, ["current", "xmap"], fastest, cpu_refusals())
    runs = names([j for j in planned if j.refusal is None])
    assert runs == [
        ("xmap", GPTJ.name, False),
        ("xmap", f"{GPTJ.name}+blockwise", False),
        ("current", fastest.name, False),  # QUICK has no pjit in the xmap environment
        ("current", f"{fastest.name}+blockwise", False),
    ]
    assert {j.variant.attention_kernel for j in planned if j.refusal} == {K.cudnn, K.pallas}


def test_the_kernel_variants_are_gptjs_and_the_fastest_once_each():
    assert kernel_variants(FASTEST) == [GPTJ, FASTEST]
    assert kernel_variants(GPTJ) == [GPTJ] and kernel_variants(None) == [GPTJ]
    xmap_fastest = Variant.parse("serial-h128-xmap-none")
    planned = kernel_jobs(FULL, ["current", "xmap"], xmap_fastest, cpu_refusals())
    assert {j.env for j in planned if j.variant.name.startswith(xmap_fastest.name)} == {"xmap"}
    without_xmap = kernel_jobs(FULL, ["current"], FASTEST, cpu_refusals())
    assert {j.variant.name.partition("+")[0] for j in without_xmap} == {FASTEST.name}
    # an environment that could not say what it runs tries every kernel (bench run then records why it fails)
    unknown = kernel_jobs(FULL, ["current"], FASTEST, {})
    assert [j.variant.attention_kernel for j in unknown] == [K.xla, K.blockwise, K.reference, K.cudnn, K.pallas]
    assert not any(j.refusal for j in unknown)


def measured(name: str, tokens_per_s: float, jax_version: str = "0.10.2", **changes) -> dict:
    preset = get_preset("cpu")
    head = failed_record(
        Variant.parse(name), preset, preset.mesh, Scope.MODEL, 0, jax_version, None, RecordKind.MEASURED
    )
    return head | {"status": "ok", "tokens_per_s": tokens_per_s} | changes


def test_the_fastest_is_the_best_median_of_the_sweeps_own_reference_records():
    records = [
        measured("parallel-h256-pjit-none", 100.0),
        measured("parallel-h256-pjit-none", 300.0, repeat=1),  # median 200 over the plan's two repeats
        measured("serial-h128-pjit-none", 150.0),
        measured("serial-h128-pjit-none", 190.0, "0.4.30"),  # its own row: another environment
        measured("serial-h256-pjit-none", 900.0, repeat=2),  # a repeat the plan did not make
        measured("serial-h128-shard_map-none", 900.0, status="failed"),
        measured("serial-h128-shard_map-full", 900.0, kind="failed-placeholder"),
        measured("parallel-h128-pjit-none", 900.0, preset="tiny"),
        measured("parallel-h128-pjit-full+blockwise", 900.0),  # a kernel run is never the reference
        measured("parallel-h128-xmap-full", None, status="ok"),  # no tokens/s
    ]
    plan = dataclasses.replace(FULL, repeats=2)
    assert fastest_reference(records, plan) == Variant.parse("parallel-h256-pjit-none")
    assert fastest_reference(records[2:4], plan) == Variant.parse("serial-h128-pjit-none")  # 190 in jax 0.4.30
    assert fastest_reference(records[4:], plan) is None
    tie = [measured("serial-h128-pjit-none", 5.0), measured("parallel-h128-pjit-none", 5.0)]
    assert fastest_reference(tie, plan) == Variant.parse("parallel-h128-pjit-none")  # ties: the first name


def test_refusals_are_failed_records_written_once_across_resumes(tmp_path):
    refusal = check_kernel_supported(K.cudnn, "cpu", True)
    job = Job("current", FASTEST.replace(attention_kernel=K.cudnn), 0, refusal)
    preset = apply_overrides(get_preset("cpu"), ["seq=32"])
    for _ in range(2):
        record_refusals([job, Job("current", FASTEST, 0)], preset, {"current": "0.10.2"}, tmp_path)
    (record,) = load_records(tmp_path).records
    assert (record["kind"], record["status"], record["error"]) == ("refused", "failed", refusal)
    assert (record["variant"], record["attention_kernel"], record["jax"]) == (
        f"{FASTEST.name}+cudnn",
        "cudnn",
        "0.10.2",
    )
    assert (record["jax"], record["preset"], record["seq"], record["mesh_dp"], record["mesh_mp"]) == (
        "0.10.2", "cpu", 32, 2, 4
    )  # fmt: skip


def test_an_environment_answers_which_kernels_it_refuses_in_one_process():
    version, refusals = kernel_support(sys.executable, timeout_s=120)
    assert version == jax.__version__
    has_dpa = dot_product_attention_has_implementation()
    assert refusals == {k: check_kernel_supported(k, jax.default_backend(), has_dpa) for k in AttentionKernel}
    assert kernel_support("/nonexistent/python", timeout_s=10) == (None, {})


def test_the_kernel_part_shares_the_sweeps_start_peak(tmp_path):
    start = PeakEntry("start", "0.10.2", "0.10.2", "py", "float32", 8, 2e10, "m", "s", "t", 1.0, 1.0, None, "")
    append_peak(tmp_path, start)
    append_peak(tmp_path, dataclasses.replace(start, when="end", flops_per_device=1e10))
    share_start_peaks(tmp_path, tmp_path / "kernels")
    share_start_peaks(tmp_path, tmp_path / "kernels")
    assert read_peaks(tmp_path / "kernels") == [start]


def test_a_kernel_part_runs_its_pair_records_its_refusal_and_reports_them(tmp_path):
    """Real runs, kept short: the tiny preset cut to one small layer, one timed step, blockwise (and cudnn, refused
    here) on one variant."""
    from report_text import unwrap

    from bench.report.write import write_report

    plan = dataclasses.replace(QUICK, steps=1, warmup=0, kernels=(K.blockwise, K.cudnn), variants=())
    fastest = Variant.parse("parallel-h128-pjit-none")
    preset = get_preset("tiny")
    head = failed_record(fastest, preset, preset.mesh, Scope.MODEL, 0, jax.__version__, None, RecordKind.MEASURED)
    append_record(tmp_path, head | {"status": "ok", "tokens_per_s": 100.0})  # the sweep's record: its fastest
    # a start peak as the sweep's calibration writes it (made-up figure): the kernel runs reuse it, measuring none
    made_up = PeakEntry(
        "start", jax.__version__, jax.__version__, sys.executable, "float32", 8, 1.5e10, "m", "made up", "t", 0.0, 0.0,
        None, "no theoretical peak (a test's made-up entry)",
    )  # fmt: skip
    append_peak(tmp_path, made_up)
    small = ["n_layers=1", "d_model=512", "d_ff=512"]  # 4 heads of 128: still split over mp=4
    kernel_part(plan, {"current": sys.executable}, tmp_path, small, timeout_s=300)
    records = load_records(tmp_path / KERNEL_DIR).records
    assert [(r["variant"], r["status"], r["kind"]) for r in records] == [
        (f"{fastest.name}+cudnn", "failed", "refused"),
        (fastest.name, "ok", "measured"),
        (f"{fastest.name}+blockwise", "ok", "measured"),
    ]
    assert all(r["peak_flops_per_s_per_device"] == 1.5e10 for r in records[1:])
    section = unwrap(write_report(tmp_path, plots=False).read_text()).split("## 3a.")[1].split("\n## 4.")[0]
    assert f"| blockwise | {fastest.name} | {jax.__version__} |" in " ".join(section.split()).replace("  ", " ")
    assert f"`cudnn` on jax {jax.__version__} (for {fastest.name}): attention kernel 'cudnn' runs on GPU" in section
