"""Tests run on a simulated 8-device CPU mesh: XLA reads the device count when JAX starts, so set it first.

Tests never read or write the user's CPU peak calibration: the cross-run cache (bench.measure.calibrate.CACHE_ENV)
points at a directory of this session's own, before anything runs; the subprocesses tests launch inherit it.
"""

import atexit
import os
import shutil
import tempfile

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
