"""This machine's memory bandwidth, measured in the process that decodes: the floor a decode step cannot beat.

A decode step reads every weight and the whole KV cache once to make one token per sequence, and does a few FLOPs per
byte read, so its time is bounded below by those bytes over the memory bandwidth (bench.analysis.decode). On CPU
there is no spec-sheet bandwidth for our purpose, so it is measured: a large array scaled by a constant (STREAM's
"Scale" kernel, McCalpin, https://www.cs.virginia.edu/stream/ref.html), which reads each element once and writes it
once, so it moves 2 x its bytes; the array is far larger than any cache, so the bytes come from DRAM.

As the GEMM calibration (bench.measure.calibrate) does, two ways are timed and the faster counts, because simulated
CPU devices share the host's cores and memory controllers: every device scaling its own shard at once, and one
device scaling the whole array with XLA's intra-op threads. Best of repeats, not median: a shared machine only ever
adds time. The load average before and after goes in the record beside the figure.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# 256 MiB of float32: 8x the largest last-level cache of the machines this runs on (32 MiB), small enough for the
# shared 24 GB host alongside a decode.
COPY_BYTES = 256 * 2**20
COPY_REPEATS = 5
_SCALE = -1.0  # a sign flip: XLA cannot fold it away, and the values stay exact however many repeats


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_s: float  # bytes moved (read + written) per second
    source: str  # how it was measured
    load_avg_before: float
    load_avg_after: float


def copy_bytes_moved(array_bytes: int) -> int:
    """Bytes a scale kernel moves: it reads the array and writes one of the same size (STREAM's count for Scale)."""
    return 2 * array_bytes


def _time_scale(devices: Sequence[Any], array_bytes: int, repeats: int) -> float:
    """Best seconds of one in-place scale of the array, sharded over ``devices``. In place (the input donated):
    a fresh 256 MiB output each call costs its page faults, which measured 5 GB/s where in place moved 30 (2 cores,
    jax 0.10.2, 2026-12-07); a decode step reads weights that are already resident."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sharding = NamedSharding(Mesh(np.array(devices), ("d",)), PartitionSpec("d"))
    array = jax.device_put(jnp.ones((array_bytes // 4,), jnp.float32), sharding)
    scale = jax.jit(lambda x: x * _SCALE, in_shardings=sharding, out_shardings=sharding, donate_argnums=0)
    array = scale(array).block_until_ready()  # compiles and warms up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        array = scale(array).block_until_ready()
        best = min(best, time.perf_counter() - start)
    if float(array[0]) != _SCALE ** (repeats + 1):  # the timing measured the kernel, not a shortcut
        raise RuntimeError("the bandwidth kernel produced a wrong result")
    return best


def measure_bandwidth(devices: Sequence[Any], array_bytes: int = COPY_BYTES, repeats: int = COPY_REPEATS) -> Bandwidth:
    """The best of (every device scaling its shard at once, one device scaling it all), in bytes moved per second."""
    if repeats < 1 or array_bytes < 1 or array_bytes % (4 * len(devices)):
        raise ValueError(
            f"need repeats >= 1 and a whole number of float32s per device, got {repeats}, {array_bytes} bytes over "
            f"{len(devices)} devices"
        )
    before = os.getloadavg()[0]
    parallel_s = _time_scale(devices, array_bytes, repeats)
    single_s = _time_scale(devices[:1], array_bytes, repeats)
    after = os.getloadavg()[0]
    moved = copy_bytes_moved(array_bytes)
    way = f"{len(devices)} devices in parallel" if parallel_s <= single_s else "one device on every core"
    source = (
        f"STREAM-style in-place scale of {array_bytes / 2**20:.0f} MiB float32 (2 x bytes moved), best of {repeats}, "
        f"faster of {len(devices)} devices in parallel and one device: {way}, {datetime.date.today().isoformat()}"
    )
    return Bandwidth(moved / min(parallel_s, single_s), source, before, after)
