"""nox drives the suite: tests in both JAX environments, a session per variant, the sweep, profiles, reports.

`nox` with no arguments runs the default session: the `cpu`-preset sweep of every variant in both environments,
then its report (the main job). `nox -l` lists every session.

Two pinned environments serve every session: current JAX (requirements/current.txt) and jax 0.4.30, the last
release with xmap (requirements/xmap.txt). They are built once under .nox/_env_* and rebuilt when their
requirements file changes, so `nox -R` and repeated sessions reuse them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))
from model.config import Strategy, Variant, all_variants  # noqa: E402  (no JAX import: safe in nox's own interpreter)

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["sweep"]

ENVS = {
    "current": "requirements/current.txt",
    "xmap": "requirements/xmap.txt",
    # The same plus libtpu, the TPU compiler, for compile-only runs against TPU topologies.
    "tpu": "requirements/tpu.txt",
    "tpu-xmap": "requirements/tpu-xmap.txt",
}
VARIANT_NAMES = [v.name for v in all_variants()]  # the model's own list: no second, hand-kept one


def _env_state(name: str) -> tuple[Path, Path, str]:
    """(venv, its python, the digest of its requirements file) of a pinned environment."""
    venv = ROOT / ".nox" / f"_env_{name}"
    return venv, venv / "bin" / "python", hashlib.sha256((ROOT / ENVS[name]).read_bytes()).hexdigest()


def _env_is_built(name: str) -> bool:
    venv, python, digest = _env_state(name)
    stamp = venv / "requirements.sha256"
    return python.exists() and stamp.exists() and stamp.read_text() == digest


def _build_env(name: str, run: Callable[[list[str]], bool]) -> None:
    """Build an environment from scratch, each command through ``run`` (True: it succeeded); stamped when all did."""
    venv, python, digest = _env_state(name)
    shutil.rmtree(venv, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / ENVS[name])],
    ]
    if all(run(step) for step in steps):
        (venv / "requirements.sha256").write_text(digest)


# Environments being built in the background (name -> thread): see prebuild_env.
_BUILDING: dict[str, threading.Thread] = {}


def prebuild_env(session: nox.Session, name: str) -> None:
    """Start building an environment that a later session of this same nox run needs, in a thread, while this
    session's own work goes on: pip mostly downloads and unpacks, so the build overlaps the tests at little cost
    (`nox -s tests tests_xmap` builds jax 0.4.30's environment while the current-JAX tests run; CI time). Its
    output goes to .nox/_env_NAME.build.log; env_python waits for it, and builds again in the open if it failed."""
    if _env_is_built(name) or name in _BUILDING:
        return
    log = ROOT / ".nox" / f"_env_{name}.build.log"

    def build() -> None:
        with log.open("w") as out:
            _build_env(
                name, lambda step: subprocess.run(step, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode == 0
            )

    log.parent.mkdir(exist_ok=True)
    session.log(f"building the {name} environment in the background for a later session (log: {log})")
    _BUILDING[name] = threading.Thread(target=build, daemon=True)
    _BUILDING[name].start()


def env_python(session: nox.Session, name: str) -> str:
    """The python of a pinned environment, built (or rebuilt when its requirements changed) on first use."""
    if name in _BUILDING:
        _BUILDING.pop(name).join()
    if not _env_is_built(name):
        _build_env(name, lambda step: session.run(*step, external=True) is not False)
    return str(_env_state(name)[1])


def environment_for(variant_name: str) -> str:
    """xmap variants need jax 0.4.30; the rest run on current JAX."""
    return "xmap" if Variant.parse(variant_name).strategy is Strategy.XMAP else "current"


# Two workers (one per core of the CI machine), one test file each so per-file reference caches hold.
PYTEST = ["-m", "pytest", "-q", "--benchmark-disable", "-n", "2", "--dist", "loadfile"]
# The test sessions have XLA build its CPU executables without LLVM's optimisations. The optimized HLO is XLA's
# passes, not LLVM's, and stays the same: measured on tiny (parallel-h256-shard_map-full, serial-h128-pjit-none), the
# compiled HLO text is identical with and without the flag in both JAX versions and the losses agree to 1e-7, while a
# compile takes 30% less time on jax 0.10.2 and 60% less on jax 0.4.30 (CI time). Only tests set it: whatever
# measures a speed (the sweep, `bench run`, the benchmarks session) compiles as a user's run does.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def test_env(**more: str) -> dict[str, str]:
    """The test sessions' environment: the user's XLA_FLAGS, if any, then TEST_XLA_FLAGS (tests/conftest.py adds the
    8 simulated devices)."""
    return {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip(), **more}


# The test sessions select by pytest markers (pyproject.toml), never by test names: tests/conftest.py's TEST_FILES
# gives each test file its role and markers, and a case's own markers sit beside it in its file. tpu_aot needs libtpu
# (tests_tpu_aot); benchmark_extra is a pytest-benchmark case beyond GPT-J's configuration (`nox -s benchmarks` times
# all 24); current_jax_only is what jax 0.4.30 cannot change the outcome of (CI time). A later -m in posargs
# replaces these (`nox -s tests_xmap -- -m ""` runs every case).
TESTS_SELECTION = "not tpu_aot and not benchmark_extra"
XMAP_SELECTION = f"{TESTS_SELECTION} and not current_jax_only"


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run the tests on current JAX (simulated 8-device CPU mesh)."""
    select = ["-m", TESTS_SELECTION]
    python = env_python(session, "current")
    if "tests_xmap" in sys.argv[1:]:  # the same `nox -s tests tests_xmap` runs it next
        prebuild_env(session, "xmap")
    session.run(python, *PYTEST, *select, *session.posargs, env=test_env(), external=True)


@nox.session(python=False)
def tests_xmap(session: nox.Session) -> None:
    """Run the tests on jax 0.4.30, where xmap exists and its tests must run, not skip."""
    env = test_env(GPTJ_BENCH_REQUIRE_XMAP="1")
    select = ["-m", XMAP_SELECTION]
    session.run(env_python(session, "xmap"), *PYTEST, *select, *session.posargs, env=env, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("-q", "ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=False)
@nox.parametrize("variant", VARIANT_NAMES, ids=VARIANT_NAMES)
def bench(session: nox.Session, variant: str) -> None:
    """Measure one variant (args after -- go to `python -m bench run`, e.g. -- --preset tiny --steps 5)."""
    python = env_python(session, environment_for(variant))
    session.run(python, "-m", "bench", "run", "--variant", variant, *session.posargs, external=True)


def _new_run_dir(prefix: str = "") -> str:
    return str(ROOT / "reports" / "runs" / f"{prefix}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")


def _options(args: list[str], name: str) -> list[str]:
    """Every value of ``--name V`` or ``--name=V`` in ``args``."""
    found = [b for a, b in zip(args, args[1:]) if a == name]
    return found + [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``args``, else None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


# The main job's TPU projection: GPT-J-6B on GPT-J's v3-256 mesh with accumulation 16, every variant that fits.
# Every remat=none variant asks for more HBM than a v3 core has (reports/example-tpu-aot: the compiler's refusals),
# so the fitting ones are the remat=full twelve; plus GPT-Neo 2.7B's own configuration, the method's second check.
TPU_PROJECTED = [n for n in VARIANT_NAMES if Variant.parse(n).remat.value == "full"]
# GPT-J's configuration (its shard_map twin) on each attention kernel that targets TPU, set against the reference in
# the report (bench/report/sections/kernels_tpu.py); cudnn runs on GPU only. Pallas on v3: Mosaic's refusal, recorded.
TPU_PROJECTED += [f"parallel-h256-shard_map-full+{kernel}" for kernel in ("xla", "blockwise", "pallas")]
TPU_NEO = ["--preset", "gpt-neo-2.7b", "--variant", "serial-h128-pjit-full"]
# Reused compile figures, keyed by program, compiler and analysis code (bench/tpu_aot/cache.py). Committed, so that
# a fresh clone of the same code reuses them; any change to a program or its compiler compiles it again.
TPU_CACHE = "reports/tpu-aot-cache"
MAIN_JOB_FLAGS = {"--no-tpu": "leave the TPU projection out (CPU sweep and report only)"}


# Decoding (`python -m bench decode`): the four block designs under shard_map on the preset's mp, and GPT-J's design
# on one device (the decode MBU figure). The main job's part is bounded to about 2 minutes on a 2-core machine
# (batch 1 and 8 at the cpu preset's context); `nox -s decode` runs the full grid, every strategy.
DECODE_DESIGNS = [f"{r}-{h}-shard_map-none" for r in ("parallel", "serial") for h in ("h256", "h128")]
# (the four designs at batch 1 and 8 took 4.5 minutes at load average 15, 2026-12-07: the part keeps GPT-J's design
# and its serial twin at batch 1, and GPT-J's on one device)
DECODE_MAIN_JOB = [*(f"--variant={n}" for n in [*DECODE_DESIGNS[:1], DECODE_DESIGNS[2], "parallel-h256-single-none"])]
DECODE_MAIN_JOB += ["--preset=cpu", "--batch=1", "--context=256", "--max-new-tokens=8"]
# --quick's: GPT-J's design on one device, the tiny preset
DECODE_QUICK = ["--variant=parallel-h256-single-none", "--preset=tiny", "--batch=1", "--max-new-tokens=8"]
# The TPU decode PROJECTION: GPT-J-6B with bf16 weights, as GPT-J was served (mesh-transformer-jax
# resharding_example.py: "early_cast": True), at context 2048 on a v3-8 with mp=8 (device_sample.py reshapes the
# devices into (count // cores_per_replica, cores_per_replica), and configs/6B_roto_256.json sets cores_per_replica 8)
# and on a v5e-8 with the same mp=8: the same tensor-parallel degree and about the same HBM (8 x 16 GB against
# 4 x 32 GiB), so only the chip changes. Compile-only, through the committed cache.
DECODE_TPU = {"v3:2x2": "dp=1,mp=8", "v5e:2x4": "dp=1,mp=8"}
DECODE_TPU_FLAGS = [*(f"--variant={n}" for n in DECODE_DESIGNS), "--preset=gptj-6b", "--set=param_dtype=bfloat16"]
DECODE_TPU_FLAGS += ["--context=2048", "--batch=1,8,32,128", f"--compile-cache={TPU_CACHE}"]


def _decode_tpu(session: nox.Session, out: str) -> None:
    python = env_python(session, "tpu")
    for topology, mesh in DECODE_TPU.items():
        flags = [f"--topology={topology}", f"--mesh={mesh}", f"--out={out}", "--resume", *DECODE_TPU_FLAGS]
        session.run(python, "-m", "bench", "decode", *flags, external=True, success_codes=[0, 1])


@nox.session(python=False, default=False)
def decode(session: nox.Session) -> None:
    """Prefill and decode of every variant at remat none on CPU (batch 1 to 128, contexts to the preset's), then the
    TPU decode PROJECTION (v3-8, v5e-8): records in DIR/decode (-- --out DIR; other flags go to `bench decode`)."""
    args = list(session.posargs)
    out = _option(args, "--out") or _new_run_dir("decode-")
    args = [a for i, a in enumerate(args) if not a.startswith("--out") and (i == 0 or args[i - 1] != "--out")]
    where = [f"--out={out}/decode", "--resume"]
    recorded = [0, 1]  # 1: a point failed and was recorded
    current, xmap = env_python(session, "current"), env_python(session, "xmap")
    session.run(current, "-m", "bench", "decode", *where, *args, external=True, success_codes=recorded)
    xmap_variants = [f"--variant={n}" for n in VARIANT_NAMES if environment_for(n) == "xmap" and n.endswith("-none")]
    session.run(xmap, "-m", "bench", "decode", *where, *xmap_variants, *args, external=True, success_codes=recorded)
    _decode_tpu(session, f"{out}/decode")
    session.log(f"decode records: {out}/decode/results.jsonl")


@nox.session(python=False)
def sweep(session: nox.Session) -> None:
    """The main job: every variant measured on CPU in both environments, then the TPU projection of the variants
    that fit a v3-256 (compiled ahead of time, two at a time), then the report (-- --quick: CPU only, tiny;
    -- --no-tpu: CPU only; other flags go to `python -m bench sweep`)."""
    args = [a for a in session.posargs if a not in MAIN_JOB_FLAGS]
    with_tpu = "--no-tpu" not in session.posargs and "--quick" not in args
    out = _option(args, "--out")
    if out is None:
        out = _new_run_dir()
        args += ["--out", out]
    current, xmap = env_python(session, "current"), env_python(session, "xmap")
    start = time.monotonic()
    session.run(current, "-m", "bench", "sweep", "--python-xmap", xmap, "--no-report", *args, external=True)
    session.log(f"CPU sweep: {time.monotonic() - start:.0f} s")
    aot = []
    if with_tpu:
        aot_dir = str(Path(out) / "tpu-aot")
        cached = ["--out", aot_dir, "--resume", "--compile-cache", TPU_CACHE]
        # xmap: the whole-step compile only; a ranking gives it the estimate of its shard_map twin (one compiler)
        _tpu_aot_both(session, cached, TPU_PROJECTED, then=[*cached, *TPU_NEO], xmap_args=("--no-extrapolate",))
        aot = ["--aot", aot_dir]
        session.log(f"CPU sweep and TPU projection: {time.monotonic() - start:.0f} s")
    decode_dir = f"{out}/decode"
    decoding = DECODE_QUICK if "--quick" in args else DECODE_MAIN_JOB
    session.run(current, "-m", "bench", "decode", f"--out={decode_dir}", "--resume", *decoding, external=True)
    if with_tpu:
        _decode_tpu(session, decode_dir)
    session.log(f"with decoding: {time.monotonic() - start:.0f} s")
    given = [f"--aot={d}" for d in _options(args, "--aot")]  # more compile records for the report (e.g. refusals)
    # the published runs' records give the report its "Does the projection hold?"
    # and the resized models' compiles, the claims table's "scales to about 20B"
    for committed in (VALIDATION_OUT, SCALE_OUT):
        if with_tpu and (Path(committed) / "results.jsonl").exists():
            given.append(f"--aot={committed}")
    session.run(current, "-m", "bench", "report", out, *aot, *given, external=True)
    session.log(f"main job: {time.monotonic() - start:.0f} s; report: {out}/REPORT.md")


def _tpu_aot_both(
    session: nox.Session,
    args: list[str],
    variants: list[str],
    then: list[str] | None = None,
    xmap_args: tuple[str, ...] = (),
) -> None:
    """Compile for the TPU topology two at a time on two cores: the jax 0.4.30 environment's variants in one process,
    current JAX's in two (each half of them; the xmap process has fewer, so its core then takes the other half).
    ``then``: one more `tpu-aot` command line for the current-JAX environment, run after its variants;
    ``xmap_args``: flags for the jax 0.4.30 one only. Records go to the same run directory (appends are locked)."""
    jobs = []
    for env in ("tpu", "tpu-xmap"):
        names = [n for n in variants if (environment_for(n) == "xmap") == (env == "tpu-xmap")]
        python = env_python(session, env)
        halves = [names[::2], names[1::2]] if env == "tpu" else [names]
        for half, part in enumerate(p for p in halves if p):
            flags = [f"--variant={n}" for n in part] + (list(xmap_args) if env == "tpu-xmap" else [])
            jobs.append((f"{env}#{half}", [[python, "-m", "bench", "tpu-aot", *flags, *args]]))
        if then and env == "tpu":
            jobs[-1][1].append([python, "-m", "bench", "tpu-aot", *then])
    session.log("compiling for the TPU in both environments at once: " + ", ".join(env for env, _ in jobs))
    codes: dict[str, list[int]] = {env: [] for env, _ in jobs}

    def run_in_turn(env: str, commands: list[list[str]]) -> None:
        codes[env] = [subprocess.run(command, cwd=ROOT).returncode for command in commands]

    threads = [threading.Thread(target=run_in_turn, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [env for env, returned in codes.items() if any(code not in (0, 1) for code in returned)]
    if failed:  # 1: a variant failed and was recorded (the report lists it); anything else stopped the run
        session.error(f"tpu-aot stopped in {', '.join(failed)} (see its output above)")


@nox.session(python=False)
def profile(session: nox.Session) -> None:
    """XProf trace of one variant, summarised into its record: -- --variant NAME [--preset tiny] [--out DIR]."""
    names = _options(session.posargs, "--variant")
    if len(names) != 1:
        session.error("usage: nox -s profile -- --variant NAME [--preset P] [--out DIR] (one variant)")
    python = env_python(session, environment_for(names[0]))
    session.run(python, "-m", "bench", "run", "--profile", *session.posargs, external=True)
    log_dir = "RUN_DIR/traces/" + names[0]
    session.log(f"open the trace: tensorboard --logdir {log_dir} --host localhost (run directory printed above)")


# The single-device CPU block: GPT-J's choice without remat at d_model 1024, d_ff 4096, batch 8 x 512 tokens.
CPU_BLOCK = ["--variant", "parallel-h256-pjit-none", "--preset", "cpu", "--scope", "block", "--mesh", "dp=1,mp=1"]
CPU_BLOCK += [f"--set={field}" for field in ("context=2048", "seq=512", "batch=8", "d_model=1024", "d_ff=4096")]
CPU_BLOCK_REPEATS = 3


@nox.session(python=False)
def cpu_block(session: nox.Session) -> None:
    """The single-device CPU block with [B, T, D] projections (DIR/batched) and with flat tokens (DIR/flat), in
    turn, three times each, every run with its GEMM floor and a profile; then their reports, DIR/flat's against
    DIR/batched: -- [--out DIR]. One CPU peak, measured before the first run, is every record's (and again after
    the last)."""
    out = _option(session.posargs, "--out") or _new_run_dir("cpu-block-")
    python = env_python(session, "current")
    calibrate = [python, "-m", "bench", "calibrate", "--mesh=dp=1,mp=1", f"--out={out}/batched"]
    session.run(*calibrate, external=True)
    Path(out, "flat").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(out, "batched", "peaks.jsonl"), Path(out, "flat", "peaks.jsonl"))
    for repeat in range(CPU_BLOCK_REPEATS):  # in turn, so that a drift of the machine falls on both alike
        for layout, flat in (("batched", "false"), ("flat", "true")):
            where = [f"--out={out}/{layout}", f"--repeat={repeat}", f"--set=flat_tokens={flat}"]
            flags = ["--steps=10", "--warmup=2", "--gemm-floor", "--profile"]
            session.run(python, "-m", "bench", "run", *CPU_BLOCK, *where, *flags, external=True)
    session.run(*calibrate, "--when=end", external=True)
    shutil.copyfile(Path(out, "batched", "peaks.jsonl"), Path(out, "flat", "peaks.jsonl"))
    session.run(python, "-m", "bench", "report", f"{out}/batched", external=True)
    session.run(python, "-m", "bench", "report", f"{out}/flat", "--compare", f"{out}/batched", external=True)


@nox.session(python=False)
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark timings of every current-JAX variant (-- --benchmark-json out.json, --benchmark-compare)."""
    python = env_python(session, "current")
    session.run(python, "-m", "pytest", "-q", "tests/test_benchmarks.py", *session.posargs, external=True)


@nox.session(python=False)
def report(session: nox.Session) -> None:
    """Write REPORT.md for a run directory: -- RUN_DIR [--compare OTHER_RUN_DIR]."""
    if not session.posargs:
        session.error("usage: nox -s report -- RUN_DIR [--compare OTHER_RUN_DIR] [--aot AOT_RUN_DIR]")
    session.run(env_python(session, "current"), "-m", "bench", "report", *session.posargs, external=True)


@nox.session(python=False)
def tpu_aot(session: nox.Session) -> None:
    """Compile every gptj-6b variant for a TPU v3-256 (v3:8x16, dp=32 x mp=8) without a TPU; record the compiler's
    memory, FLOPs and communication (-- --topology v4:4x4x4 --mesh dp=16,mp=8 --out DIR ...)."""
    args = list(session.posargs)
    if _option(args, "--out") is None:
        args += ["--out", _new_run_dir("tpu-aot-")]
    if _option(args, "--compile-cache") is None:
        args += ["--compile-cache", TPU_CACHE]
    given = _options(args, "--variant")
    rest = [a for i, a in enumerate(args) if not a.startswith("--variant") and (i == 0 or args[i - 1] != "--variant")]
    unknown = sorted(set(given) - set(VARIANT_NAMES) - {"all"})
    if unknown:
        session.error(f"unknown variant(s) {', '.join(unknown)}; `python -m bench list` prints the valid names")
    chosen = [n for n in VARIANT_NAMES if n in given] if given and given != ["all"] else VARIANT_NAMES
    _tpu_aot_both(session, rest, chosen)


# Pallas where Mosaic takes it (on v3 it refuses the kernel's bf16 x bf16 matmul into f32, jax-ml/jax#23989): GPT-J's
# configuration, reference against pallas, on a v5e-256 and a v4-256 (128 megacore chips), a GPT-J mesh of each.
TPU_KERNEL_TOPOLOGIES = {"v5e:16x16": "dp=32,mp=8", "v4:4x4x8": "dp=16,mp=8"}
TPU_KERNEL_VARIANTS = ["parallel-h256-shard_map-full", "parallel-h256-shard_map-full+pallas"]


@nox.session(python=False, default=False)
def tpu_kernels(session: nox.Session) -> None:
    """Pallas against the reference kernel where Mosaic compiles it, GPT-J's configuration on a v5e-256 and a v4-256
    (not in the main job: minutes per compile). -- --out DIR: a directory per topology under it (--resume keys a
    record by variant, JAX and preset, not topology); `nox -s report -- RUN_DIR --aot DIR/v5e-16x16 --aot
    DIR/v4-4x4x8` shows them. Other flags go to `python -m bench tpu-aot` (e.g. -- --set grad_accum=1)."""
    args = list(session.posargs)
    out = _option(args, "--out") or _new_run_dir("tpu-kernels-")
    args = [a for i, a in enumerate(args) if not a.startswith("--out") and (i == 0 or args[i - 1] != "--out")]
    if _option(args, "--compile-cache") is None:
        args += ["--compile-cache", TPU_CACHE]
    python = env_python(session, "tpu")  # pallas compiles for TPU with current JAX only (bench/tpu_aot/compile.py)
    variants = [f"--variant={name}" for name in TPU_KERNEL_VARIANTS]
    for topology, mesh in TPU_KERNEL_TOPOLOGIES.items():
        where = f"--out={out}/{topology.replace(':', '-')}"
        command = ["-m", "bench", "tpu-aot", f"--topology={topology}", f"--mesh={mesh}", *variants, where, "--resume"]
        command += args
        # 1: a compile failed and was recorded (the report lists it); a refusal by the compiler is not a failure
        session.run(python, *command, external=True, success_codes=[0, 1])


def _side_by_side(jobs: list[list[list[str]]]) -> list[int]:
    """Run each job's commands in turn, the jobs side by side (one thread each); every command's exit status."""
    codes: list[list[int]] = [[] for _ in jobs]

    def run_in_turn(index: int) -> None:
        codes[index] = [subprocess.run(command, cwd=ROOT).returncode for command in jobs[index]]

    threads = [threading.Thread(target=run_in_turn, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [code for returned in codes for code in returned]


# The design-space search's newer-TPU slices (`-- --topology T`): comparable chip counts to the v3-256's 128 chips.
# Meshes scale to the device count (bench/tpu_aot/search.py grid_meshes): v4 and v5p are megacore (128 devices).
TPU_SEARCH_TOPOLOGIES = ("v3:8x16", "v4:4x4x8", "v5e:16x16", "v5p:4x4x8")
TPU_SEARCH_FLAGS = ("--quick", "--no-prune", "--extrapolate", "--reduced")  # to each worker; --topology repeatable


@nox.session(python=False, default=False)
def tpu_search(session: nox.Session) -> None:
    """The design-space search at 6B on a v3-256 (bench/tpu_aot/search.py): meshes x remat x micro-batch x layout at
    GPT-J's 512 sequences per update, one whole-step compile a point, two at a time, with pruning, then the report
    (-- --quick: tiny on v3:2x2; --topology T, repeatable, e.g. v4:4x4x8 v5e:16x16 v5p:4x4x8; --out DIR; --no-prune;
    --extrapolate: the compiler's own estimate too, four more compiles a point; --reduced: GPT-J's mp=8 mesh
    alone, the newer TPUs' grid)."""
    args = list(session.posargs)
    out = _option(args, "--out") or _new_run_dir("tpu-search-")
    cache = _option(args, "--compile-cache") or TPU_CACHE
    topologies = _options(args, "--topology") or ([] if "--quick" in args else [TPU_SEARCH_TOPOLOGIES[0]])
    flags = [a for a in args if a in TPU_SEARCH_FLAGS]
    valued = ("--out", "--topology", "--compile-cache")
    unknown = [a for a in args if a.startswith("--") and a.split("=")[0] not in (*TPU_SEARCH_FLAGS, *valued)]
    if unknown:
        session.error(f"unknown flag(s) {', '.join(unknown)}; tpu_search takes {', '.join(TPU_SEARCH_FLAGS + valued)}")
    current, legacy = env_python(session, "tpu"), env_python(session, "tpu-xmap")
    start = time.monotonic()
    for topology in topologies or [None]:
        where = [f"--topology={topology}"] if topology else []
        common = ["-m", "bench", "tpu-search", *flags, *where, f"--out={out}", f"--compile-cache={cache}"]
        # two current-JAX workers (whole groups each); GPT-J's xmap point after the second, in jax 0.4.30 (another
        # libtpu: shown beside the ranking, whose GPT-J point is its shard_map twin), never extrapolated
        codes = _side_by_side(
            [
                [[current, *common, "--shard=0/2"]],
                [[current, *common, "--shard=1/2"], [legacy, *[a for a in common if a != "--extrapolate"]]],
            ]
        )
        if any(code not in (0, 1) for code in codes):  # 1: a point failed, and is recorded
            session.error(f"tpu-search stopped on {topology or 'the quick grid'} (see its output above)")
        session.log(f"search on {topology or 'the quick grid'}: {time.monotonic() - start:.0f} s so far")
    session.run(env_python(session, "current"), "-m", "bench", "report", out, external=True)
    session.log(f"tpu_search: {time.monotonic() - start:.0f} s; report: {out}/REPORT.md")


VALIDATION_OUT = "reports/validation"
# GPT-J-shaped models past 6B compiled for the v3-256 (compile-only, the whole-step compile: the compiler's memory
# verdict and the whole-step roofline) under Megatron's layout (GPT-J's dp=32 x mp=8, then mp=32) and FSDP's: the
# largest that fits each is the claims table's "scales to about 20B" (bench/report/sections/claims.py). 512 sequences
# per update, one per replica per micro-step as GPT-J ran; 256-wide heads, d_ff = 4 x d_model.
SCALE_OUT = "reports/example/tpu-aot-scale"
_WIDE = ["d_model=8192", "d_ff=32768"]
_MP32 = ["batch=8", "grad_accum=64"]
_FSDP = ["batch=256", "grad_accum=2"]
SCALE_POINTS = [
    ("parallel-h256-shard_map-full", "dp=32,mp=8", ["n_layers=32"]),  # 6.9B
    *(("parallel-h256-shard_map-full", "dp=8,mp=32", [*_MP32, f"n_layers={n}", *_WIDE]) for n in (24, 28, 32)),
    ("parallel-h256-shard_map-full+fsdp", "dp=256,mp=1", [*_FSDP, "n_layers=24", *_WIDE]),  # 20.2B
    ("parallel-h256-shard_map-full+fsdp", "dp=256,mp=1", [*_FSDP, "n_layers=48", *_WIDE]),  # 39.5B
    ("parallel-h256-shard_map-full+fsdp", "dp=256,mp=1", [*_FSDP, "n_layers=48", "d_model=10240", "d_ff=40960"]),
    ("parallel-h256-shard_map-full+fsdp", "dp=256,mp=1", [*_FSDP, "n_layers=64", "d_model=10240", "d_ff=40960"]),
]


@nox.session(python=False, default=False)
def tpu_scale(session: nox.Session) -> None:
    """GPT-J-shaped models of 6.9B to 81B compiled for the v3-256 under Megatron's and FSDP's layouts (SCALE_POINTS),
    through the committed compile cache, into reports/example/tpu-aot-scale (-- --out DIR for another)."""
    out = _option(list(session.posargs), "--out") or SCALE_OUT
    python = env_python(session, "tpu")
    for variant, mesh, overrides in SCALE_POINTS:
        flags = [f"--variant={variant}", f"--mesh={mesh}", *(f"--set={o}" for o in overrides)]
        flags += ["--topology=v3:8x16", "--preset=gptj-6b", f"--out={out}", "--resume", "--no-extrapolate"]
        session.run(python, "-m", "bench", "tpu-aot", *flags, f"--compile-cache={TPU_CACHE}", external=True)
    session.log(f"records: {out}/results.jsonl")


@nox.session(python=False, default=False)
def tpu_validate(session: nox.Session) -> None:
    """The projection against published TPU runs (reports/published-runs/, bench/tpu_aot/validate.py): each run
    compiled for its topology, compile-only, its PROJECTED tokens/s beside the published (-- --run FILE, repeatable;
    --out DIR, default reports/validation; --compile-cache DIR, default the committed cache)."""
    args = list(session.posargs)
    out = _option(args, "--out") or VALIDATION_OUT
    cache = _option(args, "--compile-cache") or TPU_CACHE
    runs = [f"--run={run}" for run in _options(args, "--run")]
    start = time.monotonic()
    session.run(
        env_python(session, "tpu"),
        *("-m", "bench", "validate", *runs, f"--out={out}", f"--compile-cache={cache}"),
        external=True,
        success_codes=[0, 1],  # 1: a run failed, and is recorded
    )
    session.run(env_python(session, "current"), "-m", "bench", "report", out, external=True)
    session.log(f"tpu_validate: {time.monotonic() - start:.0f} s; report: {out}/REPORT.md")


@nox.session(python=False)
def tests_tpu_aot(session: nox.Session) -> None:
    """The tests that compile for small TPU topologies with libtpu (both JAX versions; not in default CI)."""
    for env in ("tpu", "tpu-xmap"):
        extra = {"GPTJ_BENCH_REQUIRE_XMAP": "1"} if env == "tpu-xmap" else {}
        session.run(env_python(session, env), *PYTEST, "-m", "tpu_aot", *session.posargs, env=extra, external=True)


@nox.session(python=False)
def distributed(session: nox.Session) -> None:
    """A run as local processes over loopback (jax.distributed, gloo): -- --variant NAME [--processes 2]
    [--devices-per-process 4] [--time-limit S] [any `bench run` flag; defaults --preset tiny --steps 5]."""
    usage = "usage: nox -s distributed -- --variant NAME [--processes 2] [--devices-per-process 4] [run flags]"
    launcher = {"--processes": "2", "--devices-per-process": "4", "--time-limit": "1800"}
    args, run_args = list(session.posargs), []
    while args:
        name, has_value, value = args.pop(0).partition("=")
        if name not in launcher:
            run_args.append(f"{name}={value}" if has_value else name)
        elif has_value or args:
            launcher[name] = value if has_value else args.pop(0)
        else:
            session.error(f"{name} needs a value; {usage}")
    if not any(a.split("=")[0] == "--variant" for a in run_args):
        session.error(usage)
    flags = [item for pair in launcher.items() for item in pair]
    run = ["run", "--preset", "tiny", "--steps", "5", "--warmup", "1", *run_args]  # a later flag overrides these
    python = env_python(session, "current")
    session.run(python, "-m", "bench", "distributed", *flags, "--", *run, external=True)
