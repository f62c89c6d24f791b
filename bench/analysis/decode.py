"""The analytic model of one decode step: its all-reduces on mp, and the bytes it must read.

Communication (Megatron tensor parallelism, Shoeybi et al. 2019, as bench.analysis.expected counts the training
step, forward only). A decode step runs each block on [B, 1, D]: one all-reduce of the block's output per
tensor-parallel region it leaves, so one per layer for the parallel block (attention and feed-forward summed first,
the reason mesh-transformer-jax gives for it) and two for the serial block; plus the vocab-parallel embedding's one.
B is the per-replica batch (global batch / dp); each all-reduce carries B x D elements of the compute dtype, so its
bytes per token are D x itemsize whatever the batch. Nothing is reduced over dp: replicas decode their own sequences.

Bytes read. Every weight is read once per step (the step is one matrix-vector product per weight at batch 1) but the
embedding table, of which the lookup reads the B rows of the new tokens (counting the whole table would overstate
MBU by 3.4% on GPT-J-6B, 7% on the cpu preset); and the attention of the new position reads the whole KV cache it
attends over (the cache has a static length; positions not yet written are masked, not skipped). Their sum over
a bandwidth is the time no decode step can beat; measured bytes per second over that bandwidth is the decode step's
memory-bandwidth utilisation (MBU), the utilisation serving reports instead of MFU (it counts what must be read, not
what was).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.analysis.expected import tp_regions_per_layer
from bench.records.schema import Decode, section_fields
from model.config import Mesh, ModelConfig

EMBED_ALLREDUCES = 1  # the vocab-parallel lookup leaves its region once (model.gptj.Embed)


@dataclass(frozen=True)
class ExpectedDecodeComm:
    """Per decode step (one new token per sequence), payload bytes per device."""

    layer_allreduce_count: int
    layer_allreduce_bytes: int
    other_allreduce_count: int  # the embedding's
    other_allreduce_bytes: int

    @property
    def allreduce_count(self) -> int:
        return self.layer_allreduce_count + self.other_allreduce_count

    @property
    def allreduce_bytes(self) -> int:
        return self.layer_allreduce_bytes + self.other_allreduce_bytes

    def as_record_fields(self) -> dict[str, int]:
        return section_fields(
            Decode,
            expected_decode_mp_layer_allreduce_count=self.layer_allreduce_count,
            expected_decode_mp_layer_allreduce_bytes_per_device=self.layer_allreduce_bytes,
            expected_decode_mp_other_allreduce_count=self.other_allreduce_count,
            expected_decode_mp_other_allreduce_bytes_per_device=self.other_allreduce_bytes,
        )


def expected_decode_comm(cfg: ModelConfig, mesh: Mesh, batch: int) -> ExpectedDecodeComm:
    """All-reduces on mp of one decode step of ``batch`` sequences (global), module docstring."""
    if batch < 1 or batch % mesh.dp:
        raise ValueError(f"batch {batch} must be positive and divisible by dp={mesh.dp}")
    if mesh.mp == 1:
        return ExpectedDecodeComm(0, 0, 0, 0)
    each = batch // mesh.dp * cfg.d_model * np.dtype(cfg.compute_dtype.value).itemsize  # [B, 1, D]
    layers = cfg.n_layers * tp_regions_per_layer(cfg.residual)
    return ExpectedDecodeComm(layers, layers * each, EMBED_ALLREDUCES, EMBED_ALLREDUCES * each)


def embedding_unread_bytes(cfg: ModelConfig, batch: int, itemsize: int) -> int:
    """Bytes of the embedding table a decode step does not read: all but the ``batch`` rows it looks up."""
    return (cfg.vocab - min(batch, cfg.vocab)) * cfg.d_model * itemsize


def decode_read_bytes(weight_bytes: int, kv_cache_bytes: int, unread_bytes: int = 0) -> int:
    """Bytes one decode step must read: every weight once, less ``unread_bytes`` (embedding_unread_bytes), and the
    KV cache it attends over (module docstring)."""
    if min(weight_bytes, kv_cache_bytes, unread_bytes) < 0 or unread_bytes > weight_bytes:
        raise ValueError(f"bad byte counts: weights {weight_bytes}, cache {kv_cache_bytes}, unread {unread_bytes}")
    return weight_bytes - unread_bytes + kv_cache_bytes


def bandwidth_floor_s(read_bytes: int, bandwidth_bytes_per_s: float) -> float:
    """The least time a step reading ``read_bytes`` can take at ``bandwidth_bytes_per_s``."""
    if bandwidth_bytes_per_s <= 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth_bytes_per_s}")
    return read_bytes / bandwidth_bytes_per_s


def decode_mbu(read_bytes: int, step_s: float, bandwidth_bytes_per_s: float) -> float:
    """Memory-bandwidth utilisation: bytes the step must read per second of its measured time, over the bandwidth
    (1.0: the step runs at the floor)."""
    if step_s <= 0:
        raise ValueError(f"step time must be positive, got {step_s}")
    return bandwidth_floor_s(read_bytes, bandwidth_bytes_per_s) / step_s


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics (numpy's default)."""
    if not values or not 0 <= q <= 100:
        raise ValueError(f"need values and 0 <= q <= 100, got {len(values)} values, q={q}")
    return float(np.percentile(np.asarray(values, dtype=float), q))
