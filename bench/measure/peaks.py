"""Peak FLOP/s per device for a record: the hardware table on accelerators, a GEMM calibration on CPU."""

from __future__ import annotations

import warnings
from typing import Any


def peak_fields(dtype: str, devices: int) -> dict[str, Any]:
    """Peak FLOP/s per device: the hardware table on accelerators, a GEMM calibration on CPU, else none."""
    import jax

    from bench.hardware.table import accelerator_for_device_kind, peak_bases
    from bench.measure.calibrate import calibrate_cpu_peak

    device = jax.devices()[0]
    if device.platform == "cpu":
        # this process's devices: across processes each host measures its own (other hosts' are not addressable)
        peak = calibrate_cpu_peak(dtype, jax.local_devices()[:devices])
        return {"peak_flops_per_device": peak.flops_per_device, "peak_source": peak.source}
    accelerator = accelerator_for_device_kind(device.device_kind)
    if accelerator is None:
        warnings.warn(
            f"no peak FLOP/s known for {device.device_kind!r}: MFU and HFU are recorded as null", stacklevel=2
        )
        return {"peak_flops_per_device": None, "peak_source": None}
    return peak_basis_fields(device.device_kind, peak_bases(accelerator))


def peak_basis_fields(device_kind: str, bases: tuple[Any, ...]) -> dict[str, Any]:
    """``peak_flops_per_device`` and ``peak_source`` on the spec basis, with a ``_gptj_basis`` twin where defined."""
    from bench.hardware.table import PeakBasis, peak_flops_per_device

    names = {
        PeakBasis.SPEC: ("peak_flops_per_device", "peak_source"),
        PeakBasis.GPTJ: ("peak_flops_per_device_gptj_basis", "peak_source_gptj_basis"),
    }
    fields: dict[str, Any] = {}
    for basis in bases:
        peak_name, source_name = names[basis]
        fields[peak_name], fields[source_name] = peak_flops_per_device(device_kind, basis)
    return fields
