"""CPU peak FLOP/s, measured: a CPU has no spec-sheet peak for our purpose, so we time a GEMM and call that the peak.

One square matmul per device, all devices at once (a [devices, n, n] batch sharded over the devices), because
simulated CPU devices share the host's cores: the aggregate is the machine's capacity, and the per-device peak is
aggregate / devices, so MFU over ``devices`` x peak compares against the whole machine.

The simulated devices of one machine can also fail to fill it together: with jax 0.10.2 on 2 cores, 8 devices
each running a 1024 GEMM reached 241 GFLOP/s in all while one device running a 2048 GEMM on every core reached
429 (measured 2026-11-29). The machine's capacity is the larger of the two ways, so both are timed and the best
rate counts; otherwise a low peak would inflate MFU.

Best, not median: timing noise on a shared host (other processes, frequency changes) only ever adds time, so the
fastest repeat is the closest estimate of what the hardware can do; a median would fold contention into the "peak"
and inflate MFU. For the same reason the peak is the best over a small sweep of sizes (small n is dispatch-bound,
large n can spill the caches).

``measure_cpu_peak`` measures now, with the time and the 1-minute load average before and after (a loaded machine
gives a low peak and so a high MFU: the CPU block's runs found a peak calibrated under a parallel test run
inflating MFU from 57% to 77%). ``calibrate_cpu_peak`` also keeps a cross-run cache per machine, software and setting
(JSON, written atomically); a run uses it only when asked (``--peak-cache``). Either refuses a figure above the CPU's
theoretical peak (bench.hardware.cpu): such a figure is a wrong measurement, never a result.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hardware.cpu import PeakAboveTheoretical, read_cpu_facts, theoretical_peak
from bench.records.context import cpu_model
from bench.records.store import CACHE_ENV, cache_root  # noqa: F401  (CACHE_ENV: the tests set it through here)

CACHE_FILE = "calibration.json"
DEFAULT_SIZES = (256, 512, 1024)  # about 2-3 s for all three on 2 cores with 8 simulated devices
DEFAULT_REPEATS = 5
SINGLE_DEVICE_SIZE = 2048  # one device's GEMM on every core: large enough to keep both cores' vector units busy
METHOD = "max(all devices in parallel, one device on all cores)"  # in the cache key: a new method measures anew


@dataclass(frozen=True)
class CpuPeak:
    flops_per_device: float
    source: str  # what was measured, e.g. "GEMM calibration n=512 ..., float32, 8 CPU devices, 2025-01-01"
    cached: bool  # True when read from the cache rather than measured by this call
    measured_utc: str | None = None  # ISO 8601, seconds; None for a cache entry older than this field
    load_avg_before: float | None = None  # 1-minute load average (os.getloadavg) just before the GEMMs
    load_avg_after: float | None = None
    theoretical_flops_per_device: float | None = None  # bench.hardware.cpu, over the devices sharing the cores
    theoretical_source: str | None = None


def cache_path() -> Path:
    """``$GPTJ_BENCH_CACHE/calibration.json``, default ``~/.cache/gptj-bench/calibration.json``."""
    return cache_root() / CACHE_FILE


def _cache_key(dtype_name: str, device_count: int, sizes: Sequence[int], repeats: int) -> str:
    import jax
    import jaxlib

    fields = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "dtype": dtype_name,
        "devices": device_count,
        "sizes": list(sizes),
        "repeats": repeats,
        "method": METHOD,
    }
    return json.dumps(fields, sort_keys=True)


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable calibration cache {path}: {error}; measuring again", stacklevel=3)
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    # tmp file in the same directory + os.replace: readers see the old file or the new one, never half of one.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            json.dump(entries, tmp, indent=1, sort_keys=True)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise


def _cpu_devices(devices: Sequence[Any] | None) -> list[Any]:
    import jax

    devices = list(jax.local_devices(backend="cpu") if devices is None else devices)
    if not devices:
        raise ValueError("calibrate_cpu_peak needs at least one CPU device")
    others = sorted({d.platform for d in devices if d.platform != "cpu"})
    if others:
        raise ValueError(
            f"calibrate_cpu_peak measures CPU devices only, got platform(s) {others}; "
            f"accelerators take their peak from bench.hardware.table"
        )
    return devices


def best_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The best seconds of ``repeats`` calls of ``run`` (each waited for), after one untimed call that compiles and
    warms up; and the last call's output. Best, not median: see the module docstring."""
    run().block_until_ready()
    best, output = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        output = run()
        output.block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best, output


def _time_gemm(dtype_name: str, devices: list[Any], n: int, repeats: int) -> float:
    """Best seconds for one [devices, n, n] @ [devices, n, n] batch, one n x n matmul per device."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sharding = NamedSharding(Mesh(np.array(devices), ("d",)), PartitionSpec("d"))
    ones = jax.device_put(jnp.ones((len(devices), n, n), dtype_name), sharding)
    matmul = jax.jit(jnp.matmul, in_shardings=(sharding, sharding), out_shardings=sharding)
    best, product = best_time(lambda: matmul(ones, ones), repeats)
    # ones @ ones is n everywhere (rounded to dtype, e.g. bf16 holds 300 as 300 +- 4): a wrong product means the
    # timing measured something else.
    expected = np.asarray(jnp.asarray(n, dtype_name), dtype=np.float32)
    if not np.all(np.asarray(product, dtype=np.float32) == expected):
        raise RuntimeError(f"GEMM calibration produced a wrong product for n={n}, dtype {dtype_name}")
    return best


def _measure(dtype_name: str, devices: list[Any], sizes: Sequence[int], repeats: int) -> tuple[float, str]:
    best_rate, best_n = 0.0, sizes[0]
    for n in sizes:
        rate = 2.0 * n**3 / _time_gemm(dtype_name, devices, n, repeats)  # per device: each does one n^3 GEMM
        if rate > best_rate:
            best_rate, best_n = rate, n
    today = datetime.date.today().isoformat()
    source = (
        f"GEMM calibration n={best_n} (best of sizes {list(sizes)}, best of {repeats} repeats), {dtype_name}, "
        f"{len(devices)} CPU devices, {today}"
    )
    n = SINGLE_DEVICE_SIZE
    single_rate = 2.0 * n**3 / _time_gemm(dtype_name, devices[:1], n, repeats)  # the whole machine, one device
    if single_rate > best_rate * len(devices):
        source = (
            f"GEMM calibration: one device, n={n} on all cores (best of {repeats} repeats), {dtype_name}, "
            f"divided over {len(devices)} CPU devices ({best_rate * len(devices) / 1e9:.0f} GFLOP/s with every "
            f"device in parallel was lower), {today}"
        )
        best_rate = single_rate / len(devices)
    return best_rate, source


def _checked(
    dtype: Any, devices: Sequence[Any] | None, sizes: Sequence[int] | None, repeats: int | None
) -> tuple[str, list[Any], Sequence[int], int]:
    """The arguments with their defaults (read at call time) filled in, or ValueError."""
    import jax.numpy as jnp

    sizes = DEFAULT_SIZES if sizes is None else sizes
    repeats = DEFAULT_REPEATS if repeats is None else repeats
    dtype_name = jnp.dtype(dtype).name
    if not jnp.issubdtype(dtype_name, jnp.floating):
        raise ValueError(f"dtype must be a floating type (e.g. float32, bfloat16), got {dtype_name}")
    if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive integers (matrix sides), got {sizes!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return dtype_name, _cpu_devices(devices), sizes, repeats


def theoretical_per_device(device_count: int) -> tuple[float | None, str]:
    """The machine's theoretical f32 peak shared over ``device_count`` simulated devices, and its derivation."""
    flops, source = theoretical_peak(read_cpu_facts())
    if flops is None:
        return None, source
    return flops / device_count, f"{source}, over {device_count} CPU devices"


def refuse_above_theoretical(peak: CpuPeak) -> CpuPeak:
    """``peak`` itself, or PeakAboveTheoretical where it exceeds the theoretical figure it carries."""
    ceiling = peak.theoretical_flops_per_device
    if ceiling is not None and peak.flops_per_device > ceiling:
        raise PeakAboveTheoretical(
            f"CPU peak calibration refused: {peak.flops_per_device / 1e9:.1f} GFLOP/s per device exceeds the "
            f"theoretical {ceiling / 1e9:.1f} ({peak.theoretical_source}); measured: {peak.source}"
        )
    return peak


def _now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def measure_cpu_peak(
    dtype: Any = "float32",
    devices: Sequence[Any] | None = None,
    *,
    sizes: Sequence[int] | None = None,
    repeats: int | None = None,
) -> CpuPeak:
    """Peak FLOP/s per CPU device in ``dtype``, measured now (no cache), with its time and the load around it.

    Defaults: all local CPU devices, DEFAULT_SIZES, DEFAULT_REPEATS. Refused above the theoretical peak.
    """
    dtype_name, devices, sizes, repeats = _checked(dtype, devices, sizes, repeats)
    measured_utc, before = _now_utc(), os.getloadavg()[0]
    flops_per_device, source = _measure(dtype_name, devices, sizes, repeats)
    after = os.getloadavg()[0]
    ceiling, ceiling_source = theoretical_per_device(len(devices))
    peak = CpuPeak(flops_per_device, source, False, measured_utc, before, after, ceiling, ceiling_source)
    return refuse_above_theoretical(peak)


def calibrate_cpu_peak(
    dtype: Any = "float32",
    devices: Sequence[Any] | None = None,
    *,
    sizes: Sequence[int] | None = None,
    repeats: int | None = None,
) -> CpuPeak:
    """Peak FLOP/s per CPU device in ``dtype``, from the cross-run cache or measured (then cached).

    ``devices`` defaults to all local CPU devices. The cache key is the CPU model and core count, jax and jaxlib
    versions, dtype, device count, sizes and repeats. A cached figure is checked against the theoretical peak too.
    """
    dtype_name, devices, sizes, repeats = _checked(dtype, devices, sizes, repeats)
    path = cache_path()
    key = _cache_key(dtype_name, len(devices), sizes, repeats)
    entries = _read_cache(path)
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("flops_per_device", 0) > 0 and "source" in entry:
        ceiling, ceiling_source = theoretical_per_device(len(devices))
        cached = CpuPeak(
            float(entry["flops_per_device"]), str(entry["source"]), True, entry.get("measured_utc"),
            entry.get("load_avg_before"), entry.get("load_avg_after"), ceiling, ceiling_source,
        )  # fmt: skip
        return refuse_above_theoretical(cached)

    peak = measure_cpu_peak(dtype_name, devices, sizes=sizes, repeats=repeats)
    entries[key] = {
        "flops_per_device": peak.flops_per_device,
        "source": peak.source,
        "measured_utc": peak.measured_utc,
        "load_avg_before": peak.load_avg_before,
        "load_avg_after": peak.load_avg_after,
    }
    _write_cache(path, entries)
    return peak
