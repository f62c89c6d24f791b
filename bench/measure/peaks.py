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
        "peak_flops_per_device": peak.flops_per_device,
        "peak_source": f"{peak.source} (cross-run cache {'entry' if peak.cached else 'written now'}, --peak-cache)",
        "peak_measured_utc": peak.measured_utc,
        "peak_load_avg_before": peak.load_avg_before,
        "peak_load_avg_after": peak.load_avg_after,
        "peak_theoretical_flops_per_device": peak.theoretical_flops_per_device,
        "peak_theoretical_source": peak.theoretical_source,
        "peak_file": None,
        "peak_from_cache": peak.cached,
    }


def peak_fields(dtype: str, devices: int) -> dict[str, Any]:
    """Peak FLOP/s per device on an accelerator: the hardware table, else none."""
    import jax

    from bench.hardware.table import accelerator_for_device_kind, peak_basis_fields, peak_bases

    device = jax.devices()[0]
    accelerator = accelerator_for_device_kind(device.device_kind)
    if accelerator is None:
        warnings.warn(
            f"no peak FLOP/s known for {device.device_kind!r}: MFU and HFU are recorded as null", stacklevel=2
        )
        return {"peak_flops_per_device": None, "peak_source": None}
    return peak_basis_fields(device.device_kind, peak_bases(accelerator))
