"""PROJECTION of training throughput from a TPU ahead-of-time compile (records of kind ``tpu-aot``).

Nothing here is measured: a projection combines the compiler's figures for one step with hardware rates from
bench/hardware/table.py, and every place that shows its result must say "projection".

Two models of the work a device does per step (``ProjectionModel``; each Projection says which it used):

- XLA_OPTIMAL: the TPU compiler's own estimate, ``xla_optimal_s_per_step_per_device`` (``compiled.cost_analysis()``'s
  ``optimal_seconds``, extrapolated to every layer and micro-batch by bench/tpu_aot). It prices each op at the
  larger of its FLOPs over the MXU peak and its bytes over HBM bandwidth, and a collective only as HBM traffic, so
  ICI time is added here.
- HLO_ROOFLINE: ``hlo_roofline_s_per_step_per_device``, the same per-op roofline (bench.analysis.components, which sums
  to the compiler's estimate within 2-5% on unrolled compiles) over the whole-step compile's own program, every loop
  body times its trip count. One compile instead of five, and it prices the scanned program that would run,
  including what a scan adds (slicing each layer's weights out of the stack, saving its activations into stacked
  buffers), which the unrolled compiles behind XLA_OPTIMAL do not have. It is HEADLINE: every ranking uses it, the
  compiler's estimate is the cross-check beside it.
- ROOFLINE, where the record has neither: compute = hardware FLOPs per step / (devices x peak FLOP/s per
  device) and HBM = bytes accessed per device / HBM bandwidth per device (Austin et al., "How to Scale Your Model",
  jax-ml/scaling-book, roofline.md).

ICI time per mesh axis = wire bytes per device per step / ICI bandwidth per device on that axis (sharding.md: T =
V / W_ICI for a ring collective, which sends (n-1)/n V per device; bench/analysis computes the wire bytes), plus a
latency term of ring steps x hops x ~1 us per hop (table.ICI_HOP_LATENCY_S) where the record counts the collectives.
Axes are added: collectives on different axes run at different points of the step.

How the mesh lies on the torus. The suite builds its mesh by reshaping the devices in the order libtpu lists them
(model/strategies.make_mesh) into (dp, mp). On ``v3:8x16`` libtpu lists them host by host: each run of 8 devices is
the 2 cores of a 2x2 block of chips (checked on the compile-only topology: devices 0-7 sit on chips (0,0), (1,0),
(0,1), (1,1)). So with dp=32 x mp=8:

- an mp group (8 devices) is one 2x2 block of 4 chips, a closed ring of 4 chips using one x link and one y link per
  chip: a bidirectional ring, 2 one-way links out of each chip;
- a dp group (32 devices, one core on each of 32 chips) is every other chip in x and y over the whole torus. Its ring
  steps cross 2 links, but the 8 dp groups share all 4 links of every chip, so by link load (256 devices x bytes x 2
  hops over 128 chips x 4 one-way links) a device again gets 2 one-way links' worth, halved by its chip's 2 cores;
- dp+mp spans both torus dimensions with wraparound (sharding.md: the bandwidth of a collective over several axes
  grows by the number of axes).

Hence ``TORUS_DIMS_PER_AXIS`` (1, 1, 2) and ``ici_bandwidth_per_device`` = 2 x one-way link bandwidth x torus
dimensions / devices per chip (the scaling book's bidirectional bandwidth, tpus.md). Dividing by devices per chip
assumes every device's ring traffic leaves its chip: an upper bound on ICI time (in an mp ring half the steps stay on
the chip). A full ring with wraparound is assumed; without one the scaling book finds about twice the time.

Step time comes in two bounds. No overlap: work + ICI. Full overlap: max(work, ICI). Where the record splits each
axis's wire bytes into those of async collectives with compute scheduled between start and done (overlappable) and
the rest (exposed: sync collectives, and async pairs with nothing between), the full-overlap bound narrows: exposed
ICI time has nothing to hide behind, so it always adds; overlappable ICI time can at best hide under the whole step's
work. Low = exposed + max(work, overlappable); high = work + exposed + overlappable. Latency counts as exposed.
Tokens/s = tokens per step (every micro-batch of a gradient-accumulation step) / step time.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.hardware import table as hardware
from bench.hardware.baseline import Published
from bench.hardware.table import Accelerator, PeakBasis
from bench.records.collectives import CollectiveKind
from bench.records.schema import RecordKind, comm_key

AOT_KIND = RecordKind.TPU_AOT.value  # the records projected here
LABEL = "projection"  # the word every table, plot and sentence showing these numbers carries

# Torus dimensions a collective on each mesh-axis label uses (bench.records.schema.COMM_AXES; the layout is argued
# in the module docstring). "none" groups span no axis: they cross no link.
TORUS_DIMS_PER_AXIS: Mapping[str, int] = {"mp": 1, "dp": 1, "dpmp": 2}

# The record fields that split an axis's wire bytes by whether compute is scheduled inside the async collective
# (written by bench/tpu_aot; the lead declares them in bench/records/schema.py).
OVERLAPPABLE, EXPOSED = "overlappable", "exposed"

SCALING_BOOK = "Austin et al., How to Scale Your Model (jax-ml/scaling-book)"


class ProjectionModel(enum.Enum):
    """What prices a device's work in a step: the TPU compiler's own estimate, the same per-op roofline over the
    whole-step program, or the FLOP/HBM roofline of the whole step."""

    XLA_OPTIMAL = "compiler estimate + ICI"
    HLO_ROOFLINE = "whole-step HLO roofline + ICI"
    ROOFLINE = "roofline + ICI"


class ProjectionError(ValueError):
    """A tpu-aot record that cannot be projected; the message says which field is missing or unknown."""


def compute_time_s(flops_per_step: float, devices: int, peak_flops_per_s_per_device: float) -> float:
    """T_math = FLOPs / (devices x peak FLOP/s per device) (scaling book, roofline.md)."""
    _require_positive(devices=devices, peak_flops_per_s_per_device=peak_flops_per_s_per_device)
    return flops_per_step / (devices * peak_flops_per_s_per_device)


def ici_bandwidth_per_device(link_one_way_bytes_per_s: float, torus_dims: int, devices_per_chip: int) -> float:
    """Bytes/s one device can send on an axis: 2 one-way links per torus dimension (a bidirectional ring),
    shared by the chip's devices (scaling book, tpus.md "bidi" bandwidth and sharding.md multi-axis AllGather)."""
    _require_positive(link_one_way_bytes_per_s=link_one_way_bytes_per_s, devices_per_chip=devices_per_chip)
    return 2 * link_one_way_bytes_per_s * torus_dims / devices_per_chip


def ici_time_s(wire_bytes_per_device: float, bandwidth_bytes_per_s: float) -> float:
    """T_comms = bytes each device sends / its bandwidth (sharding.md: T = V / W_ICI for an AllGather, whose
    ring sends (n-1)/n V per device, bench/analysis/comm)."""
    _require_positive(bandwidth_bytes_per_s=bandwidth_bytes_per_s)
    return wire_bytes_per_device / bandwidth_bytes_per_s


def ring_steps(kind: CollectiveKind, group_devices: int) -> int:
    """Neighbour-to-neighbour steps of one ring collective over ``group_devices``: an all-reduce is a reduce-scatter
    then an all-gather, n-1 steps each (sharding.md, "AllReduce = ReduceScatter + AllGather"); an all-to-all is n-1
    steps on a unidirectional ring; a collective-permute is one send."""
    if group_devices <= 1:
        return 0
    if kind is CollectiveKind.COLLECTIVE_PERMUTE:
        return 1
    return (2 if kind is CollectiveKind.ALL_REDUCE else 1) * (group_devices - 1)


def ici_latency_s(collectives: int, steps_each: int, hop_latency_s: float = hardware.ICI_HOP_LATENCY_S) -> float:
    """Latency floor of ``collectives`` ring collectives of ``steps_each`` steps, one hop per step at ~1 us a hop
    (table.ICI_HOP_LATENCY_S). One hop per step is a lower bound: a dp ring step on GPT-J's mesh crosses 2 links."""
    return collectives * steps_each * hop_latency_s


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


def step_bounds_s(work_s: Sequence[float], exposed_ici_s: float, overlappable_ici_s: float) -> tuple[float, float]:
    """(full-overlap, no-overlap) step time. Exposed ICI time (collectives with no compute scheduled between start
    and done, and latency) always adds; overlappable ICI time can at best hide under all of the step's work, which
    itself overlaps perfectly (roofline.md) or not at all. With nothing exposed this is max(work, ICI) and
    work + ICI."""
    low = exposed_ici_s + overlapped_step_s(*work_s, overlappable_ici_s)
    high = serial_step_s(*work_s, exposed_ici_s, overlappable_ici_s)
    return low, high


def tokens_per_s(tokens_per_step: float, step_s: float) -> float:
    _require_positive(step_s=step_s)
    return tokens_per_step / step_s


def efficiency(measured_tokens_per_s: float, projected_tokens_per_s: float) -> float:
    """Measured over projected throughput of the same configuration: the share of the projection a real run got."""
    _require_positive(projected_tokens_per_s=projected_tokens_per_s)
    return measured_tokens_per_s / projected_tokens_per_s


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
    peak_flops_per_s_per_device: float
    compute_s: float  # roofline compute time on ``basis`` (shown under either model)
    ici_s_by_axis: tuple[tuple[str, float], ...]  # wire bytes over bandwidth, per axis
    hbm_s: float | None  # None when the record has no bytes accessed
    mem_peak_bytes_per_device: float | None
    hbm_capacity_bytes_per_device: float | None
    model: ProjectionModel = ProjectionModel.ROOFLINE
    xla_optimal_s: float | None = None  # the compiler's estimate of the step (XLA_OPTIMAL model)
    xla_optimal_source: str | None = None  # how the record obtained it (e.g. a shard_map stand-in for xmap)
    hlo_roofline_s: float | None = None  # the whole-step program's per-op roofline (HLO_ROOFLINE model)
    grad_accum: int = 1  # micro-batches per update; tokens_per_step counts all of them
    ici_latency_s_by_axis: tuple[tuple[str, float], ...] = ()
    # per axis where the record splits its wire bytes: bandwidth time of the overlappable collectives
    ici_overlappable_s_by_axis: tuple[tuple[str, float], ...] = ()
    # seconds per component label of the model's work (record COMPONENT_FIELDS[model], priced per op as the
    # compiler's estimate is; collectives there as HBM traffic, their wire time being ici_s_by_axis)
    components_s: tuple[tuple[str, float], ...] = ()
    # the compiles the estimate comes from wrote the attention kernel's block loops out (record
    # xla_cost_points_attention_blocks_unrolled); False for records written before, without an estimate, and under
    # HLO_ROOFLINE (the whole-step program keeps the loops)
    attention_blocks_unrolled: bool = False

    @property
    def ici_bandwidth_s(self) -> float:
        return sum(t for _, t in self.ici_s_by_axis)

    @property
    def ici_latency_s(self) -> float:
        return sum(t for _, t in self.ici_latency_s_by_axis)

    @property
    def ici_s(self) -> float:
        return self.ici_bandwidth_s + self.ici_latency_s

    @property
    def ici_overlappable_s(self) -> float:
        """ICI time that may hide under compute: all bandwidth time on axes without a split, the overlappable
        part on axes with one; never latency."""
        split = dict(self.ici_overlappable_s_by_axis)
        return sum(split.get(axis, t) for axis, t in self.ici_s_by_axis)

    @property
    def ici_exposed_s(self) -> float:
        return self.ici_s - self.ici_overlappable_s

    @property
    def work_s(self) -> tuple[float, ...]:
        """What the step's ops cost a device apart from ICI: the compiler's estimate, or compute and HBM time."""
        if self.model is ProjectionModel.XLA_OPTIMAL:
            assert self.xla_optimal_s is not None
            return (self.xla_optimal_s,)
        if self.model is ProjectionModel.HLO_ROOFLINE:
            assert self.hlo_roofline_s is not None
            return (self.hlo_roofline_s,)
        return tuple(t for t in (self.compute_s, self.hbm_s) if t is not None)

    @property
    def work_split_s(self) -> tuple[float, float]:
        """(MXU-bound, HBM-bound) seconds of the work. The per-op roofline prices op i at max(f_i / P, b_i / B), so
        its sum is sum(f_i) / P plus, over the memory-bound ops, what their bytes take beyond their FLOPs: the first
        part is ``compute_s`` (the analytic FLOPs stand in for the op's own; the part is capped at the work), the
        rest is HBM-bound time. The roofline model has the two terms already."""
        if self.model is ProjectionModel.ROOFLINE:
            return self.compute_s, self.hbm_s or 0.0
        (work,) = self.work_s
        mxu = min(self.compute_s, work)
        return mxu, work - mxu

    @property
    def overlap_step_s(self) -> float:
        return step_bounds_s(self.work_s, self.ici_exposed_s, self.ici_overlappable_s)[0]

    @property
    def serial_step_s(self) -> float:
        return step_bounds_s(self.work_s, self.ici_exposed_s, self.ici_overlappable_s)[1]

    @property
    def tokens_per_s_overlap(self) -> float:
        return tokens_per_s(self.tokens_per_step, self.overlap_step_s)

    @property
    def tokens_per_s_serial(self) -> float:
        return tokens_per_s(self.tokens_per_step, self.serial_step_s)

    @property
    def band(self) -> float:
        """Width of the band: full-overlap over no-overlap tokens/s, minus 1 (0.15 = 15% wider)."""
        return self.tokens_per_s_overlap / self.tokens_per_s_serial - 1

    @property
    def ici_share(self) -> float:
        """ICI time's share of the no-overlap step."""
        return self.ici_s / self.serial_step_s

    @property
    def bound_by(self) -> str:
        """What sets the full-overlap bound: the work ("compute") or overlappable ICI time ("ICI")."""
        return "ICI" if self.ici_overlappable_s > max(self.work_s) else "compute"

    @property
    def fits_hbm(self) -> bool | None:
        if self.mem_peak_bytes_per_device is None or self.hbm_capacity_bytes_per_device is None:
            return None
        return self.mem_peak_bytes_per_device <= self.hbm_capacity_bytes_per_device


def with_less_work(p: Projection, seconds: float) -> Projection:
    """``p`` with ``seconds`` less work per step, ICI unchanged: what a kernel that skips work the compiled program
    does would be projected at. Only the models that price the program's ops have work to take away."""
    if p.model is ProjectionModel.XLA_OPTIMAL and p.xla_optimal_s is not None:
        return dataclasses.replace(p, xla_optimal_s=p.xla_optimal_s - seconds)
    if p.model is ProjectionModel.HLO_ROOFLINE and p.hlo_roofline_s is not None:
        return dataclasses.replace(p, hlo_roofline_s=p.hlo_roofline_s - seconds)
    raise ProjectionError(f"the {p.model.value} model prices no ops, so no work can be taken from {p.variant}")


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


def bases_for_record(record: Mapping[str, Any]) -> tuple[PeakBasis, ...]:
    """The compiler's estimate and the whole-step HLO roofline carry their own peak: one projection (spec basis)
    where a record has either, every basis of the accelerator where the roofline prices the work."""
    if any(_model_s(record, model) is not None for model in MODEL_FIELDS):
        return (PeakBasis.SPEC,)
    return bases_for(accelerator_of(record))


# The field each model of a device's work reads from a record (ROOFLINE needs none of its own).
MODEL_FIELDS: Mapping[ProjectionModel, str] = {
    ProjectionModel.XLA_OPTIMAL: "xla_optimal_s_per_step_per_device",
    ProjectionModel.HLO_ROOFLINE: "hlo_roofline_s_per_step_per_device",
}


# The breakdown of each model's work by component label, where the record has one.
COMPONENT_FIELDS: Mapping[ProjectionModel, str] = {
    ProjectionModel.XLA_OPTIMAL: "component_s_per_step_per_device",
    ProjectionModel.HLO_ROOFLINE: "hlo_roofline_component_s_per_step_per_device",
}


# The one model behind every headline (the main report's TPU ranking, the search, kernels on TPU, validation) and the
# cross-check shown beside it. Chosen by validation against published runs (bench.projection.calibrate.model_spread,
# the report's "Does the projection hold?"): on the runs both price, the two models' efficiencies spread alike, and
# only the whole-step roofline prices v4, v5e and v5p, where libtpu gives no estimate, so only it can be calibrated
# on every generation.
HEADLINE = ProjectionModel.HLO_ROOFLINE
CROSS_CHECK = ProjectionModel.XLA_OPTIMAL


def model_of(record: Mapping[str, Any], model: ProjectionModel | None = None) -> ProjectionModel:
    """``model`` where the record has its field (else ProjectionError); by default HEADLINE where the record has it,
    else CROSS_CHECK, else the roofline."""
    has = lambda m: m is ProjectionModel.ROOFLINE or _model_s(record, m) is not None  # noqa: E731
    if model is None:
        return next((m for m in (HEADLINE, CROSS_CHECK) if has(m)), ProjectionModel.ROOFLINE)
    if not has(model):
        raise ProjectionError(f"{_name(record)}: the {model.value} model needs {MODEL_FIELDS[model]}, which it lacks")
    return model


def project(
    record: Mapping[str, Any], basis: PeakBasis = PeakBasis.SPEC, model: ProjectionModel | None = None
) -> Projection:
    """Project one tpu-aot record (``model``: see model_of); raises ProjectionError naming what is missing."""
    model = model_of(record, model)
    accelerator = accelerator_of(record)
    devices = _devices(record, accelerator)
    flops, counted = _flops_per_step(record)
    tokens = record.get("tokens_per_step") or _product(record, "batch", "seq") * int(record.get("grad_accum") or 1)
    peak = hardware.peak_flops_per_s_per_device(accelerator.device_kind_patterns[0], basis)
    assert peak is not None  # a row's own device kind always resolves to that row
    optimal = _model_s(record, ProjectionModel.XLA_OPTIMAL)
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
        peak_flops_per_s_per_device=peak[0],
        compute_s=compute_time_s(flops, devices, peak[0]),
        ici_s_by_axis=_ici_times(record, accelerator),
        hbm_s=_hbm_time(record, accelerator, devices),
        mem_peak_bytes_per_device=record.get("mem_peak_estimate_bytes_per_device"),
        hbm_capacity_bytes_per_device=accelerator.hbm_bytes_per_device,
        model=model,
        xla_optimal_s=optimal,
        xla_optimal_source=record.get("xla_optimal_source") if optimal is not None else None,
        hlo_roofline_s=_model_s(record, ProjectionModel.HLO_ROOFLINE),
        grad_accum=int(record.get("grad_accum") or 1),
        ici_latency_s_by_axis=_latencies(record),
        ici_overlappable_s_by_axis=_overlappable_times(record, accelerator),
        components_s=tuple(sorted((record.get(COMPONENT_FIELDS.get(model, "")) or {}).items())),
        # the whole-step program keeps the block loops, whose trip counts depend on the block index: priced once
        attention_blocks_unrolled=model is ProjectionModel.XLA_OPTIMAL
        and record.get("xla_cost_points_attention_blocks_unrolled") is True,
    )


def _name(record: Mapping[str, Any]) -> str:
    return f"tpu-aot record {record.get('variant')!r}"


def _model_s(record: Mapping[str, Any], model: ProjectionModel) -> float | None:
    """The record's seconds per step under ``model`` (MODEL_FIELDS), None where absent or zero."""
    value = record.get(MODEL_FIELDS[model])
    return float(value) if value else None


def _devices(record: Mapping[str, Any], accelerator: Accelerator) -> int:
    if record.get("devices"):
        return int(record["devices"])
    if record.get("topology"):
        return hardware.topology_chips(record["topology"]) * accelerator.devices_per_chip
    raise ProjectionError(f"{_name(record)}: neither devices nor topology given")


def _flops_per_step(record: Mapping[str, Any]) -> tuple[float, str]:
    """Analytic hardware FLOPs (what the MXU peak is for) where the record has them, else XLA's count."""
    for key in ("hardware_flops_per_step_total", "xla_flops_per_step_total"):
        if record.get(key):
            return float(record[key]), key
    raise ProjectionError(f"{_name(record)}: needs hardware_flops_per_step_total or xla_flops_per_step_total")


def _product(record: Mapping[str, Any], *keys: str) -> int:
    if not all(record.get(k) for k in keys):
        raise ProjectionError(f"{_name(record)}: needs tokens_per_step or {' and '.join(keys)}")
    result = 1
    for key in keys:
        result *= int(record[key])
    return result


def _axis_bandwidth(record: Mapping[str, Any], accelerator: Accelerator, axis: str) -> float:
    link = accelerator.ici_link_bandwidth_bytes_per_s
    if link is None:
        raise ProjectionError(f"{_name(record)}: {accelerator.name} has no ICI link bandwidth in the table")
    return ici_bandwidth_per_device(link, TORUS_DIMS_PER_AXIS[axis], accelerator.devices_per_chip)


def _ici_times(record: Mapping[str, Any], accelerator: Accelerator) -> tuple[tuple[str, float], ...]:
    times = []
    for axis in TORUS_DIMS_PER_AXIS:
        key = comm_key(axis, None, "wire_bytes")
        wire = record.get(key)
        if wire is None:
            raise ProjectionError(f"{_name(record)}: no {key}")
        times.append((axis, ici_time_s(wire, _axis_bandwidth(record, accelerator, axis)) if wire else 0.0))
    return tuple(times)


def split_wire_key(axis: str, split: str) -> str:
    """``comm_mp_overlappable_wire_bytes_per_device`` / ``comm_mp_exposed_wire_bytes_per_device``: the record fields
    of the split."""
    return comm_key(axis, None, "wire_bytes").replace("_wire_bytes", f"_{split}_wire_bytes")


def _overlappable_times(record: Mapping[str, Any], accelerator: Accelerator) -> tuple[tuple[str, float], ...]:
    """Per axis with a split: the overlappable wire bytes' time. Where only the exposed part is recorded, the rest of
    the axis's wire bytes is the overlappable part; where neither is, the axis has no split."""
    times = []
    for axis in TORUS_DIMS_PER_AXIS:
        wire = record.get(comm_key(axis, None, "wire_bytes")) or 0.0
        overlappable = record.get(split_wire_key(axis, OVERLAPPABLE))
        exposed = record.get(split_wire_key(axis, EXPOSED))
        if overlappable is None and exposed is None:
            continue
        if overlappable is None:
            overlappable = max(wire - exposed, 0.0)
        times.append((axis, ici_time_s(overlappable, _axis_bandwidth(record, accelerator, axis)) if wire else 0.0))
    return tuple(times)


def _group_devices(record: Mapping[str, Any], axis: str) -> int | None:
    dp, mp = record.get("mesh_dp"), record.get("mesh_mp")
    if not dp or not mp:
        return None
    return {"mp": int(mp), "dp": int(dp), "dpmp": int(dp) * int(mp)}[axis]


def _latencies(record: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """Per axis: the hop-latency floor of the step's collectives, where the record has the mesh and the counts."""
    latencies = []
    for axis in TORUS_DIMS_PER_AXIS:
        group = _group_devices(record, axis)
        counts = {kind: record.get(comm_key(axis, kind, "count")) for kind in CollectiveKind}
        if group is None or all(c is None for c in counts.values()):
            continue
        total = sum(ici_latency_s(int(c or 0), ring_steps(kind, group)) for kind, c in counts.items())
        latencies.append((axis, total))
    return tuple(latencies)


def _hbm_time(record: Mapping[str, Any], accelerator: Accelerator, devices: int) -> float | None:
    accessed = record.get("xla_bytes_accessed_per_step_total")
    if accessed is None or accelerator.hbm_bandwidth_bytes_per_s is None:
        return None
    per_device = hbm_bandwidth_per_device(accelerator.hbm_bandwidth_bytes_per_s, accelerator.devices_per_chip)
    return hbm_time_s(accessed, devices, per_device)


# ---------------------------------------------------------------- published throughputs against their projections
GPTJ_PRESET = "gptj-6b"
GPTJ_VARIANT = "parallel-h256-xmap-full"  # GPT-J's own code path: parallel block, 256-wide heads, full remat, xmap
# Where the xmap compile has no compiler estimate (libtpu 0.0.1), the shard_map program of the same residual, heads
# and remat stands in: it has the same collectives (bench/tpu_aot).
GPTJ_STAND_IN = "parallel-h256-shard_map-full"
GPT_NEO_PRESET = "gpt-neo-2.7b"
GPT_NEO_VARIANT_PREFIX = "serial-h128-"  # GPT-Neo 2.7B: serial blocks, 128-wide heads (model/config.py)


@dataclass(frozen=True)
class Calibration:
    """A published throughput set against the PROJECTION of its own configuration."""

    name: str
    measured: Published
    projection: Projection
    notes: tuple[str, ...]  # where the projected configuration differs from the published one, and why

    @property
    def efficiency_overlap(self) -> float:
        """Measured over the full-overlap bound: the lower efficiency."""
        return efficiency(self.measured.value, self.projection.tokens_per_s_overlap)

    @property
    def efficiency_serial(self) -> float:
        """Measured over the no-overlap bound: the higher efficiency."""
        return efficiency(self.measured.value, self.projection.tokens_per_s_serial)

    def at_efficiency(self, p: Projection) -> tuple[float, float]:
        """(no-overlap, full-overlap) tokens/s of ``p`` at this calibration's efficiency on each bound: a PROJECTION
        of what a run like the published one would measure."""
        return p.tokens_per_s_serial * self.efficiency_serial, p.tokens_per_s_overlap * self.efficiency_overlap


def calibrate_gptj(projections: Sequence[Projection], measured: Published, grad_accum: int) -> Calibration | None:
    """GPT-J's measured throughput against the projection of parallel-h256-xmap-full at GPT-J's accumulation; the
    record closest to that configuration where none matches exactly, with notes saying how it differs."""
    candidates = [p for p in projections if p.preset == GPTJ_PRESET and p.variant in (GPTJ_VARIANT, GPTJ_STAND_IN)]
    if not candidates:
        return None
    best = max(
        candidates,
        key=lambda p: (
            p.grad_accum == grad_accum,
            p.model is HEADLINE,
            p.model is not ProjectionModel.ROOFLINE,
            p.variant == GPTJ_VARIANT,
            p.basis is PeakBasis.SPEC,
        ),
    )
    notes = []
    if best.variant == GPTJ_STAND_IN:
        notes.append(
            f"{GPTJ_VARIANT} has no {best.model.value} here: {GPTJ_STAND_IN} (same residual, heads, remat and "
            "collectives) stands in"
        )
    notes += _differences(best, grad_accum)
    return Calibration("GPT-J-6B", measured, best, tuple(notes))


def calibrate_gpt_neo(projections: Sequence[Projection], measured: Published) -> Calibration | None:
    """GPT-Neo 2.7B's measured throughput against the fastest serial-h128 projection of the gpt-neo-2.7b preset.
    GPT-Neo ran Mesh TensorFlow, not this code: an independent check of the method, not a like-for-like one."""
    candidates = [p for p in projections if p.preset == GPT_NEO_PRESET and p.variant.startswith(GPT_NEO_VARIANT_PREFIX)]
    if not candidates:
        return None
    best = max(
        candidates,
        key=lambda p: (
            p.model is HEADLINE,
            p.fits_hbm is not False,
            p.basis is PeakBasis.SPEC,
            p.tokens_per_s_overlap,
        ),
    )
    notes = ["GPT-Neo ran Mesh TensorFlow, not this code: the projection is of this suite's program of its shape"]
    return Calibration("GPT-Neo 2.7B", measured, best, (*notes, *_differences(best, None)))


def _differences(p: Projection, grad_accum: int | None) -> list[str]:
    notes = [f"compiler estimate: {p.xla_optimal_source}"] if p.xla_optimal_source and p.model is CROSS_CHECK else []
    if grad_accum is not None and p.grad_accum != grad_accum:
        notes.append(f"gradient accumulation {p.grad_accum}, not the published run's {grad_accum}: not like for like")
    if p.model is ProjectionModel.ROOFLINE:
        notes.append("no compiler estimate in the record: the roofline prices the work")
    if p.fits_hbm is False:
        notes.append("its compile's peak memory exceeds HBM")
    return notes
