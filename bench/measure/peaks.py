"""Peak FLOP/s per device for a record: the hardware table on accelerators, a GEMM calibration on CPU.

On CPU the calibration is the run directory's (bench.records.peakfile): measured at the start of the run, or of
the sweep in this JAX environment, before any timed step, so all variants of one environment share one peak. The
cross-run cache is read only when asked for (``--peak-cache``), and the record then says ``peak_from_cache``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from bench.records.peakfile import PeakEntry, append_peak, entry_fields, read_peaks


def measure_entry(dtype: str, devices: int, when: str) -> PeakEntry:
    """Calibrate this process's first ``devices`` CPU devices now (no cache), as a peak-file entry."""
    import jax
    import jaxlib

    from bench.measure.calibrate import METHOD, measure_cpu_peak

    # this process's devices: across processes each host measures its own (other hosts' are not addressable)
    peak = measure_cpu_peak(dtype, jax.local_devices(backend="cpu")[:devices])
    return PeakEntry(
        when, jax.__version__, jaxlib.__version__, sys.executable, dtype, devices, peak.flops_per_device, METHOD,
        peak.source, peak.measured_utc, peak.load_avg_before, peak.load_avg_after,
        peak.theoretical_flops_per_device, peak.theoretical_source,
    )  # fmt: skip


def start_entry(run_dir: Path | None, dtype: str, devices: int, write: bool = True) -> PeakEntry:
    """This environment's start entry in ``run_dir``, measured now and appended (``write``) where there is none."""
    import jax

    if run_dir is not None:
        for entry in read_peaks(run_dir):
            if entry.when == "start" and entry.same_setting(jax.__version__, sys.executable, dtype, devices):
                return entry
    entry = measure_entry(dtype, devices, "start")
    if run_dir is not None and write:
        append_peak(run_dir, entry)
    return entry


def run_peak_fields(run_dir: Path | None, dtype: str, devices: int, use_cache: bool, write: bool = True) -> dict:
    """The Peaks fields every record of this run carries, found before its first timed step.

    Accelerators: the hardware table. CPU: the run directory's start entry (measured now where missing), or with
    ``use_cache`` the cross-run cache, announced by ``peak_from_cache``. Raises PeakAboveTheoretical.
    """
    import jax

    if jax.devices()[0].platform != "cpu":
        return peak_fields(dtype, devices)
    if not use_cache:
        return entry_fields(start_entry(run_dir, dtype, devices, write))
    from bench.measure.calibrate import calibrate_cpu_peak

    peak = calibrate_cpu_peak(dtype, jax.local_devices(backend="cpu")[:devices])
    return {
        "peak_flops_per_s_per_device": peak.flops_per_device,
        "peak_source": f"{peak.source} (cross-run cache {'entry' if peak.cached else 'written now'}, --peak-cache)",
        "peak_measured_utc": peak.measured_utc,
        "peak_load_avg_before": peak.load_avg_before,
        "peak_load_avg_after": peak.load_avg_after,
        "peak_theoretical_flops_per_s_per_device": peak.theoretical_flops_per_device,
        "peak_theoretical_source": peak.theoretical_source,
        "peak_file": None,
        "peak_from_cache": peak.cached,
    }


# The per-run peak's repeats (the start and end entries take DEFAULT_REPEATS, 5), kept to about 1 s of GEMMs and
# their compiles in a process that has compiled before: on 2 cores with 8 simulated devices (jax 0.10.2,
# 2026-12-07) 2 repeats took 1.0-1.3 s at load 5.6, where 3 took 1.6 s, and 2.0-3.6 s in a sweep at load 8; each
# record keeps the seconds its calibration took (peak_run_s)
RUN_PEAK_REPEATS = 2


def per_run_peak_fields(dtype: str, devices: int) -> dict[str, Any]:
    """CPU: the peak measured in this process now, just before a variant's timed steps, the one its MFU, HFU and
    GEMM floor share are against, so that they do not move with the machine's drift between the run directory's
    start entry and this step (those entries stay, as the sweep's drift check). Accelerators: none (the table's)."""
    import time

    import jax

    if jax.devices()[0].platform != "cpu":
        return {}
    from bench.measure.calibrate import measure_cpu_peak

    start = time.perf_counter()
    peak = measure_cpu_peak(dtype, jax.local_devices(backend="cpu")[:devices], repeats=RUN_PEAK_REPEATS)
    return {
        "peak_run_flops_per_s_per_device": peak.flops_per_device,
        "peak_run_source": peak.source,
        "peak_run_s": time.perf_counter() - start,
    }


def peak_flops_for_rates(record: dict[str, Any]) -> tuple[float | None, str | None]:
    """The peak per device (and its source) a record's MFU, HFU and GEMM floor share are against: the per-run peak
    where there is one (CPU), else the run's (the table's on accelerators)."""
    if record.get("peak_run_flops_per_s_per_device") is not None:
        return record["peak_run_flops_per_s_per_device"], record["peak_run_source"]
    return record.get("peak_flops_per_s_per_device"), record.get("peak_source")


def peak_fields(dtype: str, devices: int) -> dict[str, Any]:
    """Peak FLOP/s per device on an accelerator: the hardware table, else none."""
    import jax

    from bench.hardware.table import accelerator_for_device_kind, peak_bases, peak_basis_fields

    device = jax.devices()[0]
    accelerator = accelerator_for_device_kind(device.device_kind)
    if accelerator is None:
        warnings.warn(
            f"no peak FLOP/s known for {device.device_kind!r}: MFU and HFU are recorded as null", stacklevel=2
        )
        return {"peak_flops_per_s_per_device": None, "peak_source": None}
    return peak_basis_fields(device.device_kind, peak_bases(accelerator))
