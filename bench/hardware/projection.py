"""Roofline PROJECTION of training throughput from a TPU ahead-of-time compile (records of kind ``tpu-aot``).

Nothing here is measured: a projection combines the compiler's figures for one step (FLOPs, bytes on the wire per
mesh axis, HBM bytes accessed) with peak hardware rates from bench/hardware/table.py, and every place that shows its
result must say "projection".

The model (Austin et al., "How to Scale Your Model", jax-ml/scaling-book, roofline.md and sharding.md):

- compute time = hardware FLOPs per step / (devices x peak FLOP/s per device);
- ICI time = wire bytes per device per step / ICI bandwidth per device on the mesh axis the collective uses, added
  over axes (collectives on different axes happen at different points of the step, so they are not overlapped
  with each other here);
- HBM time = HBM bytes accessed per device per step / HBM bandwidth per device;
- step time is bounded below by max(compute, ICI, HBM) (perfect overlap) and, with no overlap, is their sum.

ICI bandwidth per device on one mesh axis: the axis is laid out as a bidirectional ring over one torus dimension,
which gives each chip 2 x (one-way link bandwidth) on that axis (the scaling book's "bidi" bandwidth, tpus.md; its
AllGather takes V / W_bidi, sharding.md). A collective over both axes (dp+mp) uses both torus dimensions, twice
that (sharding.md: "increases the available bandwidth by a factor of n_axes"). The devices of one chip (2 cores on
TPU v3) share its links, so per device the bandwidth is divided by devices per chip: this assumes every device's
ring traffic leaves its chip, an upper bound on ICI time. A full ring (wraparound links) is assumed; without one the
scaling book finds about twice the time. Per-hop latency (about 1 us) is ignored: the step's collectives are large.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.hardware import table as hardware
from bench.hardware.table import Accelerator, PeakBasis
from bench.records.schema import RecordKind, comm_key

AOT_KIND = RecordKind.TPU_AOT.value  # the records projected here
LABEL = "projection"  # the word every table, plot and sentence showing these numbers carries

# Torus dimensions a collective on each mesh-axis label uses (bench.records.schema.COMM_AXES). "none" groups
# span no axis: they cross no link.
TORUS_DIMS_PER_AXIS: Mapping[str, int] = {"mp": 1, "dp": 1, "dpmp": 2}

SCALING_BOOK = "Austin et al., How to Scale Your Model (jax-ml/scaling-book)"


class ProjectionError(ValueError):
    """A tpu-aot record that cannot be projected; the message says which field is missing or unknown."""


def compute_time_s(flops_per_step: float, devices: int, peak_flops_per_device: float) -> float:
    """T_math = FLOPs / (devices x peak FLOP/s per device) (scaling book, roofline.md)."""
    _require_positive(devices=devices, peak_flops_per_device=peak_flops_per_device)
    return flops_per_step / (devices * peak_flops_per_device)


def ici_bandwidth_per_device(link_one_way_bytes_per_s: float, torus_dims: int, devices_per_chip: int) -> float:
    """Bytes/s one device can send on an axis: 2 one-way links per torus dimension (a bidirectional ring),
    shared by the chip's devices (scaling book, tpus.md "bidi" bandwidth and sharding.md multi-axis AllGather)."""
    _require_positive(link_one_way_bytes_per_s=link_one_way_bytes_per_s, devices_per_chip=devices_per_chip)
    return 2 * link_one_way_bytes_per_s * torus_dims / devices_per_chip


def ici_time_s(wire_bytes_per_device: float, bandwidth_bytes_per_s: float) -> float:
    """T_comms = bytes each device sends / its bandwidth (sharding.md: T = V / W_ICI for an AllGather, whose
    ring sends (n-1)/n V per device, bench/comm.py)."""
    _require_positive(bandwidth_bytes_per_s=bandwidth_bytes_per_s)
    return wire_bytes_per_device / bandwidth_bytes_per_s


def hbm_bandwidth_per_device(hbm_bandwidth_per_chip: float, devices_per_chip: int) -> float:
    """A chip's HBM bandwidth split evenly over its devices (TPU v3: 900 GB/s per chip, 2 cores)."""
    _require_positive(hbm_bandwidth_per_chip=hbm_bandwidth_per_chip, devices_per_chip=devices_per_chip)
    return hbm_bandwidth_per_chip / devices_per_chip


def hbm_time_s(bytes_accessed_per_step: float, devices: int, bandwidth_per_device: float) -> float:
    """T_hbm = bytes accessed per device / HBM bandwidth per device (roofline.md). ``bytes_accessed_per_step`` is
    summed over devices (XLA's cost analysis of the partitioned program, times the device count)."""
    _require_positive(devices=devices, bandwidth_per_device=bandwidth_per_device)
    return bytes_accessed_per_step / devices / bandwidth_per_device


def overlapped_step_s(*times_s: float) -> float:
    """Lower bound on the step time: everything overlaps perfectly, the slowest resource decides (roofline.md)."""
    return max(times_s)


def serial_step_s(*times_s: float) -> float:
    """Step time with no overlap at all: the resources take turns."""
    return sum(times_s)


def tokens_per_s(tokens_per_step: float, step_s: float) -> float:
    _require_positive(step_s=step_s)
    return tokens_per_step / step_s


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Projection:
    """One tpu-aot record projected on one peak basis. All times are per training step, in seconds."""

    variant: str
    jax: str
    preset: str
    topology: str
    accelerator: str
    basis: PeakBasis
    devices: int
    tokens_per_step: int
    flops_per_step: float
    flops_counted: str  # which record field gave the FLOPs
    peak_flops_per_device: float
    compute_s: float
    ici_s_by_axis: tuple[tuple[str, float], ...]
    hbm_s: float | None  # None when the record has no bytes accessed
    mem_peak_bytes_per_device: float | None
    hbm_capacity_bytes_per_device: float | None

    @property
    def ici_s(self) -> float:
        return sum(t for _, t in self.ici_s_by_axis)

    @property
    def _times(self) -> tuple[float, ...]:
        return tuple(t for t in (self.compute_s, self.ici_s, self.hbm_s) if t is not None)

    @property
    def overlap_step_s(self) -> float:
        return overlapped_step_s(*self._times)

    @property
    def serial_step_s(self) -> float:
        return serial_step_s(*self._times)

    @property
    def tokens_per_s_overlap(self) -> float:
        return tokens_per_s(self.tokens_per_step, self.overlap_step_s)

    @property
    def tokens_per_s_serial(self) -> float:
        return tokens_per_s(self.tokens_per_step, self.serial_step_s)

    @property
    def fits_hbm(self) -> bool | None:
        if self.mem_peak_bytes_per_device is None or self.hbm_capacity_bytes_per_device is None:
            return None
        return self.mem_peak_bytes_per_device <= self.hbm_capacity_bytes_per_device


def accelerator_of(record: Mapping[str, Any]) -> Accelerator:
    """The hardware-table row of a tpu-aot record: from its topology ("v3:8x16"), else its device kind."""
    topology = record.get("topology")
    if topology:
        return hardware.accelerator_for_topology(topology)
    kind = record.get("device_kind") or ""
    accelerator = hardware.accelerator_for_device_kind(kind)
    if accelerator is None:
        raise ProjectionError(f"{_name(record)}: no topology and unknown device_kind {kind!r}: no hardware row")
    return accelerator


def bases_for(accelerator: Accelerator) -> tuple[PeakBasis, ...]:
    """Peak bases a projection is shown on: every basis the hardware table defines for the accelerator."""
    return hardware.peak_bases(accelerator)


def project(record: Mapping[str, Any], basis: PeakBasis = PeakBasis.SPEC) -> Projection:
    """Project one tpu-aot record; raises ProjectionError naming what is missing."""
    accelerator = accelerator_of(record)
    devices = _devices(record, accelerator)
    flops, counted = _flops_per_step(record)
    tokens = record.get("tokens_per_step") or _product(record, "batch", "seq")
    peak = hardware.peak_flops_per_device(accelerator.device_kind_patterns[0], basis)
    assert peak is not None  # a row's own device kind always resolves to that row
    return Projection(
        variant=str(record.get("variant")),
        jax=str(record.get("jax") or "unknown"),
        preset=str(record.get("preset")),
        topology=str(record.get("topology") or ""),
        accelerator=accelerator.name,
        basis=basis,
        devices=devices,
        tokens_per_step=int(tokens),
        flops_per_step=flops,
        flops_counted=counted,
        peak_flops_per_device=peak[0],
        compute_s=compute_time_s(flops, devices, peak[0]),
        ici_s_by_axis=_ici_times(record, accelerator),
        hbm_s=_hbm_time(record, accelerator, devices),
        mem_peak_bytes_per_device=record.get("mem_peak_estimate_bytes"),
        hbm_capacity_bytes_per_device=accelerator.hbm_bytes_per_device,
    )


def _name(record: Mapping[str, Any]) -> str:
    return f"tpu-aot record {record.get('variant')!r}"


def _devices(record: Mapping[str, Any], accelerator: Accelerator) -> int:
    if record.get("devices"):
        return int(record["devices"])
    if record.get("topology"):
        return hardware.topology_chips(record["topology"]) * accelerator.devices_per_chip
    raise ProjectionError(f"{_name(record)}: neither devices nor topology given")


def _flops_per_step(record: Mapping[str, Any]) -> tuple[float, str]:
    """Analytic hardware FLOPs (what the MXU peak is for) where the record has them, else XLA's count."""
    for key in ("hardware_flops_per_step", "xla_flops_per_step"):
        if record.get(key):
            return float(record[key]), key
    raise ProjectionError(f"{_name(record)}: needs hardware_flops_per_step or xla_flops_per_step")


def _product(record: Mapping[str, Any], *keys: str) -> int:
    if not all(record.get(k) for k in keys):
        raise ProjectionError(f"{_name(record)}: needs tokens_per_step or {' and '.join(keys)}")
    result = 1
    for key in keys:
        result *= int(record[key])
    return result


def _ici_times(record: Mapping[str, Any], accelerator: Accelerator) -> tuple[tuple[str, float], ...]:
    link = accelerator.ici_link_bandwidth_bytes_per_s
    times = []
    for axis, dims in TORUS_DIMS_PER_AXIS.items():
        key = comm_key(axis, None, "wire_bytes")
        wire = record.get(key)
        if wire is None:
            raise ProjectionError(f"{_name(record)}: no {key}")
        if not wire:
            times.append((axis, 0.0))
            continue
        if link is None:
            raise ProjectionError(f"{_name(record)}: {accelerator.name} has no ICI link bandwidth in the table")
        times.append((axis, ici_time_s(wire, ici_bandwidth_per_device(link, dims, accelerator.devices_per_chip))))
    return tuple(times)


def _hbm_time(record: Mapping[str, Any], accelerator: Accelerator, devices: int) -> float | None:
    accessed = record.get("xla_bytes_accessed_per_step")
    if accessed is None or accelerator.hbm_bandwidth_bytes_per_s is None:
        return None
    per_device = hbm_bandwidth_per_device(accelerator.hbm_bandwidth_bytes_per_s, accelerator.devices_per_chip)
    return hbm_time_s(accessed, devices, per_device)
