"""PROJECTION of a TPU decode step from its compile-only optimized HLO: nothing here is measured.

Work: each op of the compiled step at the per-op roofline, max(FLOPs / peak, bytes / HBM bandwidth)
(bench.analysis.components, the model the TPU compiler's ``optimal_seconds`` sums), collectives left out.

ICI: a decode all-reduce carries B x D elements (8 KiB per sequence for GPT-J-6B in bf16), so it is bound by
latency, not bandwidth. Each collective costs the larger of its latency, ring steps x hops x the per-hop latency
(bench.projection.throughput.ring_steps and ici_latency_s: Austin et al., How to Scale Your Model, sharding.md,
~1 us per hop), and its wire bytes over the ICI bandwidth of a device on a bidirectional ring
(throughput.ici_bandwidth_per_device). They are added to the work, not overlapped with it: each layer's all-reduce
produces the input of the next layer, so nothing of the step can run under it.

Beside it, the memory-bandwidth limit: the bytes a step must read per device (its weights and KV-cache shards,
bench.analysis.decode.decode_read_bytes) over the device's HBM bandwidth, the time no decode step can beat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.analysis.comm import wire_bytes
from bench.analysis.components import attribute, breakdown
from bench.analysis.hlo import Collective, CollectiveKind, parse_collectives
from bench.hardware.table import Accelerator
from bench.projection.throughput import (
    hbm_bandwidth_per_device,
    ici_bandwidth_per_device,
    ici_latency_s,
    ring_steps,
)

ICI_LABEL = "ici"
COLLECTIVE_PREFIX = "collective"  # bench.analysis.components labels collectives "collective <axis>"
TORUS_DIMS_PER_RING = 1  # a tensor-parallel group of a few chips is one ring on one torus dimension


@dataclass(frozen=True)
class CollectiveCost:
    latency_s: float
    bandwidth_s: float

    @property
    def seconds(self) -> float:
        return max(self.latency_s, self.bandwidth_s)


def collective_cost(
    kind: CollectiveKind, payload_bytes: int, group_size: int, ici_bytes_per_s: float
) -> CollectiveCost:
    """One execution: latency (ring steps x one hop each) and wire bytes over the device's ICI bandwidth."""
    latency = ici_latency_s(1, ring_steps(kind, group_size))
    return CollectiveCost(latency, wire_bytes(kind, payload_bytes, group_size) / ici_bytes_per_s)


def ici_seconds(collectives: Iterable[Collective], accelerator: Accelerator) -> tuple[float, float]:
    """(ICI seconds per step, the part of it that is latency), every execution (trip counts applied)."""
    bandwidth = ici_bandwidth_per_device(
        accelerator.ici_link_bandwidth_bytes_per_s, TORUS_DIMS_PER_RING, accelerator.devices_per_chip
    )
    total = latency = 0.0
    for collective in collectives:
        cost = collective_cost(collective.kind, collective.payload_bytes, collective.group_size, bandwidth)
        total += cost.seconds * collective.multiplier
        latency += cost.latency_s * collective.multiplier
    return total, latency


def work_components(hlo_text: str, mesh_ids: np.ndarray, accelerator: Accelerator) -> dict[str, float]:
    """Roofline seconds per component label of the step, collectives excluded (they are priced as ICI)."""
    hbm = hbm_bandwidth_per_device(accelerator.hbm_bandwidth_bytes_per_s, accelerator.devices_per_chip)
    parts = breakdown(attribute(hlo_text, mesh_ids), accelerator.peak_bf16_flops_per_device, hbm).seconds
    return {label: s for label, s in parts.items() if not label.startswith(COLLECTIVE_PREFIX) and s > 0}


def project_decode(
    hlo_text: str,
    mesh_ids: np.ndarray,
    axis_names: Sequence[str],
    accelerator: Accelerator,
    read_bytes_per_device: float,
    batch: int,
) -> dict[str, float | dict]:
    """The record fields of a projected decode step (bench.records.schema.Decode's decode_projected_*)."""
    work = work_components(hlo_text, mesh_ids, accelerator)
    ici, latency = ici_seconds(parse_collectives(hlo_text, mesh_ids, axis_names), accelerator)
    hbm = hbm_bandwidth_per_device(accelerator.hbm_bandwidth_bytes_per_s, accelerator.devices_per_chip)
    step = sum(work.values()) + ici
    return {
        "decode_projected_step_s_per_device": step,
        "decode_projected_work_s_per_device": sum(work.values()),
        "decode_projected_ici_s_per_device": ici,
        "decode_projected_ici_latency_s_per_device": latency,
        "decode_projected_hbm_floor_s_per_device": read_bytes_per_device / hbm,
        "decode_projected_component_s_per_device": {**work, ICI_LABEL: ici},
        "decode_projected_tokens_per_s": batch / step,
    }
