"""Accelerator peaks: ONE table, a source per row. Nothing here is measured (CPU peaks: bench/measure/calibrate.py).

Peaks are dense bf16 matrix FLOP/s (no 2:4 sparsity). A "device" is what JAX calls one: ``jax.devices()`` lists
one per TensorCore on TPU v2/v3 (two per chip), one per chip on megacore v4/v5p and on single-core v5e/v6e, and
one per GPU. Per-device peak = per-chip peak / devices per chip; a TPU row takes its devices per chip from its
generation's row in bench/hardware/topology.py, which also parses topology names.

Units: bytes and bytes/s in SI (GB = 1e9), GiB as 2**30, written as each vendor states them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bench.hardware.topology import GENERATIONS, TpuGeneration, parse_topology

GB = 1e9
GiB = 2**30
TFLOPS = 1e12


class PeakBasis(enum.Enum):
    """Which published peak a utilisation is measured against."""

    SPEC = "spec"  # the vendor's spec sheet, per chip / devices per chip
    GPTJ = "gptj"  # GPT-J's basis for TPU v3 (see GPTJ_V3_BOARD_FLOPS); defined for TPU v3 only


@dataclass(frozen=True)
class Accelerator:
    name: str
    # exact ``jax.Device.device_kind`` strings of this row, compared case-insensitively
    device_kind_patterns: tuple[str, ...]
    peak_bf16_flops_per_chip: float
    devices_per_chip: int
    hbm_bytes_per_chip: float | None
    hbm_bandwidth_bytes_per_s: float | None  # per chip
    ici_link_bandwidth_bytes_per_s: float | None  # one way, per link (NVLink on GPUs); None where unknown
    ici_links_per_chip: int | None
    source: str
    # the TPU generation that topology names ("v3:8x16") give; None for GPUs
    tpu_generation: TpuGeneration | None = None

    @property
    def peak_bf16_flops_per_device(self) -> float:
        return self.peak_bf16_flops_per_chip / self.devices_per_chip

    @property
    def hbm_bytes_per_device(self) -> float | None:
        return None if self.hbm_bytes_per_chip is None else self.hbm_bytes_per_chip / self.devices_per_chip


_CLOUD_TPU = "https://cloud.google.com/tpu/docs"
_SCALING_BOOK_ICI = (
    "ICI one-way per link: Austin et al., How to Scale Your Model (jax-ml/scaling-book, tpus.md, interconnect table "
    "'ICI BW/link (one-way, bytes/s)')"
)

# Latency of one ICI hop between neighbouring chips. Source: Austin et al., How to Scale Your Model (jax-ml/
# scaling-book, sharding.md, worked problem on a TPU v4p AllGather: "the latency bound of 4us (1us per hop)"). The book
# gives it for v4p only; the suite applies it to every TPU generation as an order of magnitude (it is a few hundred
# microseconds of a ~0.3 s GPT-J step: bench/projection/throughput.py).
ICI_HOP_LATENCY_S = 1e-6
ICI_HOP_LATENCY_SOURCE = (
    "Austin et al., How to Scale Your Model (jax-ml/scaling-book, sharding.md): '1us per hop' (stated for TPU v4p, "
    "applied to every TPU generation)"
)

ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator(
        name="TPU v2",
        device_kind_patterns=("TPU v2",),
        peak_bf16_flops_per_chip=45 * TFLOPS,
        devices_per_chip=GENERATIONS[TpuGeneration.V2].devices_per_chip,
        hbm_bytes_per_chip=16 * GiB,
        hbm_bandwidth_bytes_per_s=600 * GB,
        ici_link_bandwidth_bytes_per_s=None,
        ici_links_per_chip=4,
        source="Wang, Wei, Brooks 2019, arXiv:1907.10701, Table 1: a v2-8 board (4 chips, 8 cores) has 180 TFLOP/s, "
        "64 GiB HBM, 2400 GB/s (per chip: 45, 16 GiB, 600 GB/s); 2 TensorCores per chip; 2D torus (4 links/chip). "
        "ICI link bandwidth: no source checked, left None.",
        tpu_generation=TpuGeneration.V2,
    ),
    Accelerator(
        name="TPU v3",
        device_kind_patterns=("TPU v3",),
        peak_bf16_flops_per_chip=123 * TFLOPS,
        devices_per_chip=GENERATIONS[TpuGeneration.V3].devices_per_chip,
        hbm_bytes_per_chip=32 * GiB,
        hbm_bandwidth_bytes_per_s=900 * GB,
        ici_link_bandwidth_bytes_per_s=1e11,
        ici_links_per_chip=4,
        source=f"{_CLOUD_TPU}/v3: 123 TFLOP/s bf16 per chip, HBM2 32 GiB and 900 GBps per chip, 2 TensorCores per "
        f"chip, 2D torus (4 links/chip). {_SCALING_BOOK_ICI}: TPU v3 1e11 one-way, 2e11 bidirectional per link.",
        tpu_generation=TpuGeneration.V3,
    ),
    Accelerator(
        name="TPU v4",
        device_kind_patterns=("TPU v4",),
        peak_bf16_flops_per_chip=275 * TFLOPS,
        devices_per_chip=GENERATIONS[TpuGeneration.V4].devices_per_chip,
        hbm_bytes_per_chip=32 * GiB,
        hbm_bandwidth_bytes_per_s=1200 * GB,
        ici_link_bandwidth_bytes_per_s=4.5e10,
        ici_links_per_chip=6,
        source=f"{_CLOUD_TPU}/v4: 275 TFLOP/s bf16 per chip, HBM2 32 GiB and 1200 GBps, 2 TensorCores as one "
        f"megacore device, 3D torus (6 links/chip). {_SCALING_BOOK_ICI}.",
        tpu_generation=TpuGeneration.V4,
    ),
    Accelerator(
        name="TPU v5e",
        device_kind_patterns=("TPU v5 lite", "TPU v5e"),
        peak_bf16_flops_per_chip=197 * TFLOPS,
        devices_per_chip=GENERATIONS[TpuGeneration.V5E].devices_per_chip,
        hbm_bytes_per_chip=16 * GB,
        hbm_bandwidth_bytes_per_s=819 * GB,
        ici_link_bandwidth_bytes_per_s=4.5e10,
        ici_links_per_chip=4,
        source=f"{_CLOUD_TPU}/v5e: 197 TFLOP/s bf16 per chip, HBM2 16 GB and 819 GBps, 1 TensorCore per chip, "
        f"400 GBps bidirectional ICI per chip over 4 ports, 2D torus. {_SCALING_BOOK_ICI}.",
        tpu_generation=TpuGeneration.V5E,
    ),
    Accelerator(
        name="TPU v5p",
        device_kind_patterns=("TPU v5", "TPU v5p"),
        peak_bf16_flops_per_chip=459 * TFLOPS,
        devices_per_chip=GENERATIONS[TpuGeneration.V5P].devices_per_chip,
        hbm_bytes_per_chip=95 * GiB,
        hbm_bandwidth_bytes_per_s=2765 * GB,
        ici_link_bandwidth_bytes_per_s=9e10,
        ici_links_per_chip=6,
        source=f"{_CLOUD_TPU}/v5p: 459 TFLOP/s bf16 per chip, HBM 95 GiB and 2765 GBps, 2 TensorCores as one "
        f"megacore device, 1200 GBps bidirectional ICI per chip, 3D torus (6 links/chip). {_SCALING_BOOK_ICI}.",
        tpu_generation=TpuGeneration.V5P,
    ),
    Accelerator(
        name="TPU v6e (Trillium)",
        device_kind_patterns=("TPU v6 lite", "TPU v6e"),
        peak_bf16_flops_per_chip=918 * TFLOPS,
        devices_per_chip=GENERATIONS[TpuGeneration.V6E].devices_per_chip,
        hbm_bytes_per_chip=32 * GB,
        hbm_bandwidth_bytes_per_s=1638 * GB,
        ici_link_bandwidth_bytes_per_s=9e10,
        ici_links_per_chip=4,
        source=f"{_CLOUD_TPU}/v6e: 918 TFLOP/s bf16 per chip, HBM 32 GB and 1638 GBps, 1 TensorCore per chip, "
        f"800 GBps bidirectional ICI per chip over 4 ports, 2D torus. {_SCALING_BOOK_ICI}.",
        tpu_generation=TpuGeneration.V6E,
    ),
    Accelerator(
        name="NVIDIA A100 SXM4 80GB",
        device_kind_patterns=("NVIDIA A100-SXM4-80GB",),
        peak_bf16_flops_per_chip=312 * TFLOPS,
        devices_per_chip=1,
        hbm_bytes_per_chip=80 * GB,
        hbm_bandwidth_bytes_per_s=2039 * GB,
        ici_link_bandwidth_bytes_per_s=25 * GB,
        ici_links_per_chip=12,
        source="NVIDIA A100 datasheet: BF16 tensor 312 TFLOP/s dense (624 with sparsity), 80 GB HBM2e, 2,039 GB/s; "
        "NVLink 3: 600 GB/s total over 12 links (25 GB/s each way per link, NVIDIA A100 architecture whitepaper).",
    ),
    Accelerator(
        name="NVIDIA A100 SXM4 40GB",
        device_kind_patterns=("NVIDIA A100-SXM4-40GB",),
        peak_bf16_flops_per_chip=312 * TFLOPS,
        devices_per_chip=1,
        hbm_bytes_per_chip=40 * GB,
        hbm_bandwidth_bytes_per_s=1555 * GB,
        ici_link_bandwidth_bytes_per_s=25 * GB,
        ici_links_per_chip=12,
        source="NVIDIA A100 datasheet: BF16 tensor 312 TFLOP/s dense, 40 GB HBM2, 1,555 GB/s; NVLink 3: 600 GB/s "
        "total over 12 links (25 GB/s each way per link).",
    ),
    Accelerator(
        name="NVIDIA H100 SXM5",
        device_kind_patterns=("NVIDIA H100 80GB HBM3",),
        peak_bf16_flops_per_chip=989 * TFLOPS,
        devices_per_chip=1,
        hbm_bytes_per_chip=80 * GB,
        hbm_bandwidth_bytes_per_s=3350 * GB,
        ici_link_bandwidth_bytes_per_s=25 * GB,
        ici_links_per_chip=18,
        source="NVIDIA H100 datasheet (SXM): BF16 tensor 1,979 TFLOP/s with sparsity = 989 dense, 80 GB HBM3, "
        "3.35 TB/s; NVLink 4: 900 GB/s total over 18 links (25 GB/s each way per link). H100 PCIe/NVL differ: not "
        "this row.",
    ),
    Accelerator(
        name="NVIDIA H200 SXM",
        device_kind_patterns=("NVIDIA H200",),
        peak_bf16_flops_per_chip=989 * TFLOPS,
        devices_per_chip=1,
        hbm_bytes_per_chip=141 * GB,
        hbm_bandwidth_bytes_per_s=4800 * GB,
        ici_link_bandwidth_bytes_per_s=25 * GB,
        ici_links_per_chip=18,
        source="NVIDIA H200 datasheet (SXM): BF16 tensor 1,979 TFLOP/s with sparsity = 989 dense, 141 GB HBM3e, "
        "4.8 TB/s; NVLink 4: 900 GB/s total over 18 links. H200 NVL differs: not this row.",
    ),
)

# GPT-J's basis for TPU v3: the article's "13.4 PFLOPs" theoretical peak of a v3-256 is 256 cores x 52.5 TFLOP/s,
# i.e. Google's figure for a v3-8 board (420 TFLOP/s, also arXiv:1907.10701 Table 1) over its 8 cores. The Cloud TPU
# spec gives 123 TFLOP/s per chip = 61.5 per core (4 chips x 123 = 492, not 420).
GPTJ_V3_BOARD_FLOPS = 420 * TFLOPS
GPTJ_V3_BOARD_DEVICES = 8
_GPTJ_V3_SOURCE = (
    "GPT-J basis: 420 TFLOP/s per TPU v3-8 board / 8 cores = 52.5 TFLOP/s per core; 256 cores give the article's "
    "13.4 PFLOP/s (Komatsuzaki, 'GPT-J-6B: 6B JAX-Based Transformer', 2021)"
)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def accelerator_for_device_kind(device_kind: str) -> Accelerator | None:
    """The table row whose device kinds include ``device_kind`` (exact, case-insensitive), or None."""
    wanted = _normalise(device_kind)
    for accelerator in ACCELERATORS:
        if wanted in (_normalise(p) for p in accelerator.device_kind_patterns):
            return accelerator
    return None


def peak_bases(accelerator: Accelerator) -> tuple[PeakBasis, ...]:
    """The bases a peak exists on: the spec sheet always, GPT-J's own basis for TPU v3 only."""
    return (PeakBasis.SPEC, PeakBasis.GPTJ) if accelerator.name == "TPU v3" else (PeakBasis.SPEC,)


def peak_flops_per_s_per_device(device_kind: str, basis: PeakBasis = PeakBasis.SPEC) -> tuple[float, str] | None:
    """(peak bf16 FLOP/s per JAX device, source) for ``jax.Device.device_kind``; None for an unknown kind.

    None means "no peak known": the caller warns and reports no MFU; a peak is never guessed.
    """
    accelerator = accelerator_for_device_kind(device_kind)
    if accelerator is None:
        return None
    if basis is PeakBasis.SPEC:
        return accelerator.peak_bf16_flops_per_device, accelerator.source
    if basis is PeakBasis.GPTJ:
        if basis not in peak_bases(accelerator):
            raise ValueError(
                f"PeakBasis.GPTJ is defined for TPU v3 only (GPT-J's 13.4 PFLOP/s); {device_kind!r} is "
                f"{accelerator.name}: use PeakBasis.SPEC"
            )
        return GPTJ_V3_BOARD_FLOPS / GPTJ_V3_BOARD_DEVICES, _GPTJ_V3_SOURCE
    raise TypeError(f"basis must be a PeakBasis ({', '.join(b.name for b in PeakBasis)}), got {basis!r}")


def accelerator_for_topology(topology: str) -> Accelerator:
    """The table row of a TPU topology name such as ``v3:8x16`` (used for TPU ahead-of-time compiles)."""
    generation = parse_topology(topology).generation
    return next(a for a in ACCELERATORS if a.tpu_generation is generation)


def topology_chips(topology: str) -> int:
    """Chips in a TPU topology name: ``v3:8x16`` has 128 chips (256 JAX devices, 2 per v3 chip)."""
    return parse_topology(topology).chips


def peak_basis_fields(device_kind: str, bases: tuple[PeakBasis, ...]) -> dict[str, float | str | None]:
    """``peak_flops_per_s_per_device`` and ``peak_source`` on the spec basis, with a GPT-J-basis twin
    (``peak_gptj_basis_flops_per_s_per_device``, ``peak_source_gptj_basis``) where defined."""
    names = {
        PeakBasis.SPEC: ("peak_flops_per_s_per_device", "peak_source"),
        PeakBasis.GPTJ: ("peak_gptj_basis_flops_per_s_per_device", "peak_source_gptj_basis"),
    }
    fields: dict[str, float | str | None] = {}
    for basis in bases:
        peak_name, source_name = names[basis]
        fields[peak_name], fields[source_name] = peak_flops_per_s_per_device(device_kind, basis)
    return fields
