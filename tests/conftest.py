"""Tests run on a simulated 8-device CPU mesh: XLA reads the device count when JAX starts, so set it first.

What each CI session runs is chosen by markers (declared in pyproject.toml), never by test names: ``TEST_FILES``
gives every test file its role, the role gives every test of the file its markers, and collection stops with an
error where a test carries a marker its file's role does not allow, or a file has no role.

Tests never read or write the user's CPU peak calibration: the cross-run cache (bench.measure.calibrate.CACHE_ENV)
points at a directory of this session's own, before anything runs; the subprocesses tests launch inherit it.
"""

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

from bench.measure.calibrate import CACHE_ENV  # noqa: E402  (imports no JAX at module level)

SESSION_CACHE = tempfile.mkdtemp(prefix="gptj-bench-test-cache-")
os.environ[CACHE_ENV] = SESSION_CACHE
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)

import jax  # noqa: E402
import pytest  # noqa: E402

from model import compat  # noqa: E402


def require_devices(n: int) -> None:
    if len(jax.devices()) < n:
        pytest.skip(f"needs {n} devices, {len(jax.devices())} present (XLA_FLAGS was set before this test's JAX?)")


def xmap_required() -> bool:
    """The jax 0.4.30 session sets GPTJ_BENCH_REQUIRE_XMAP=1, so a missing xmap fails there instead of skipping."""
    return os.environ.get("GPTJ_BENCH_REQUIRE_XMAP") == "1"


def skip_without_xmap() -> None:
    if compat.has_xmap():
        return
    if xmap_required():
        pytest.fail(f"xmap is required in this session but JAX {jax.__version__} has none")
    pytest.skip(f"xmap exists only up to jax 0.4.30 (this is {jax.__version__}); `nox -s tests_xmap` runs it")


def current_jax_only_unless(kept_on_legacy_jax: bool) -> tuple[pytest.MarkDecorator, ...]:
    """The marks of one parametrised case: none where jax 0.4.30 runs it too, else ``current_jax_only``."""
    return () if kept_on_legacy_jax else (pytest.mark.current_jax_only,)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gptj-bench")
    group.addoption("--bench-preset", default="tiny", help="preset for tests/test_benchmarks.py (default tiny)")
    group.addoption("--bench-rounds", type=int, default=5, help="timed rounds per benchmark (default 5)")
    group.addoption("--bench-warmup", type=int, default=2, help="warm-up rounds per benchmark (default 2)")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Library versions and the device set, so that --benchmark-compare compares like with like."""
    import haiku
    import jaxlib

    machine_info["jax"] = jax.__version__
    machine_info["jaxlib"] = jaxlib.__version__
    machine_info["haiku"] = haiku.__version__
    machine_info["backend"] = jax.default_backend()
    machine_info["device_kind"] = jax.devices()[0].device_kind
    machine_info["device_count"] = len(jax.devices())
    machine_info["xla_flags"] = os.environ.get("XLA_FLAGS", "")


# --- CI selection by markers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """What a test file is to CI: ``marks`` every one of its tests has (given here), ``case_marks`` those some of
    its tests or cases may carry (given in the file, beside the case)."""

    marks: frozenset[str] = frozenset()
    case_marks: frozenset[str] = frozenset()


# Markers CI selects by (pyproject.toml declares them; noxfile.py's test sessions select with -m)
SELECTING_MARKS = frozenset({"current_jax_only", "tpu_aot", "benchmark_extra", "distributed"})
# Runs in both JAX environments; a case that jax 0.4.30 cannot change the outcome of is marked current_jax_only.
BOTH = Role(case_marks=frozenset({"current_jax_only"}))
# Runs on current JAX alone: pure code that imports no JAX, or JAX-level code 0.4.30 cannot change the outcome of
# (CI time); some of its tests compile for a TPU with libtpu.
CURRENT = Role(frozenset({"current_jax_only"}), frozenset({"tpu_aot"}))
MIXED_TPU = Role(case_marks=frozenset({"current_jax_only", "tpu_aot"}))  # both environments; some need libtpu
TPU_AOT = Role(frozenset({"tpu_aot"}))  # every test compiles for a TPU topology (nox -s tests_tpu_aot)
DISTRIBUTED = Role(frozenset({"distributed"}), frozenset({"current_jax_only"}))  # several local JAX processes
# pytest-benchmark cases: GPT-J's configuration under each strategy runs as a test; the rest are benchmark_extra
BENCHMARKS = Role(case_marks=frozenset({"benchmark_extra", "current_jax_only"}))

# Every test file and its role: a new file gets one line here.
TEST_FILES = {
    "test_benchmarks.py": BENCHMARKS,
    "test_calibrate.py": CURRENT,
    "test_cli.py": BOTH,
    "test_components.py": CURRENT,
    "test_config.py": BOTH,
    "test_convert.py": BOTH,
    "test_decode.py": BOTH,
    "test_decode_bench.py": CURRENT,
    "test_decode_hf.py": CURRENT,  # transformers (its Flax GPT-J) is in the current environment alone
    "test_docs.py": CURRENT,  # text and the schema: no JAX version changes them
    "test_distributed.py": DISTRIBUTED,
    "test_equivalence.py": BOTH,
    "test_expected_comm.py": BOTH,
    "test_extrapolate.py": CURRENT,
    "test_failures.py": BOTH,
    "test_flops.py": BOTH,
    "test_fsdp.py": BOTH,
    "test_gemm_floor.py": BOTH,
    "test_gpu_script.py": CURRENT,  # the GPU's JAX is current (0.11.2 on the lent H200), never 0.4.30
    "test_hardware.py": BOTH,
    "test_hlo.py": BOTH,
    "test_imports.py": BOTH,
    "test_kernel_variants.py": BOTH,
    "test_kernels.py": BOTH,
    "test_kernels_attention.py": CURRENT,
    "test_markers.py": BOTH,
    "test_model_options.py": BOTH,
    "test_params.py": BOTH,
    "test_peak.py": BOTH,
    "test_profile.py": BOTH,
    "test_profile_model.py": BOTH,
    "test_projection.py": CURRENT,
    "test_record.py": BOTH,
    "test_remat_policies.py": BOTH,
    "test_report.py": CURRENT,
    "test_report_components.py": CURRENT,
    "test_report_claims.py": CURRENT,
    "test_report_examples.py": CURRENT,
    "test_report_validation.py": CURRENT,
    "test_report_kernels.py": CURRENT,
    "test_report_kernels_tpu.py": BOTH,
    "test_schema.py": BOTH,
    "test_search.py": MIXED_TPU,
    "test_sweep.py": BOTH,
    "test_topology.py": CURRENT,
    "test_tpu_aot.py": TPU_AOT,
    "test_tpu_aot_cache.py": CURRENT,
    "test_tpu_aot_env.py": MIXED_TPU,
    "test_validate.py": CURRENT,
}


def marker_problem(file_name: str, marks: set[str], roles: dict[str, Role] = TEST_FILES) -> str | None:
    """Why a test of ``file_name`` carrying ``marks`` (its file's role's included) is wrongly marked; None if not."""
    role = roles.get(file_name)
    if role is None:
        return f"tests/{file_name} has no role: add a line for it to TEST_FILES in tests/conftest.py"
    stray = (marks & SELECTING_MARKS) - role.marks - role.case_marks
    if stray:
        allowed = sorted(role.case_marks) or "none"
        return f"marked {', '.join(sorted(stray))}, which its file's role allows on no test (case marks: {allowed})"
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest's -m deselects by the marks given here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        name = Path(str(item.fspath)).name
        role = TEST_FILES.get(name)
        for mark in sorted(role.marks) if role else ():
            item.add_marker(mark)
        problem = marker_problem(name, {m.name for m in item.iter_markers()})
        if problem:
            problems.append(f"{item.nodeid}: {problem}")
    if problems:
        raise pytest.UsageError("tests marked against their file's role:\n" + "\n".join(sorted(set(problems))))
