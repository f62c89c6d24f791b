"""The device before the runs: what it is, how fast a bf16 matmul runs on it, and the batch that fills it.

Run in a process of its own (``python -m bench.gpu.probe``), which prints one JSON object, so that the runs after
it start with an empty allocator and their peak memory is their own.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.gpu import plan

MATMUL_WARMUP, MATMUL_REPEATS = 3, 10


def device_facts() -> dict[str, Any]:
    """JAX's view of device 0 (kind, platform, allocator limit) and, where nvidia-smi exists, the driver's."""
    import jax

    device = jax.devices()[0]
    stats = _memory_stats(device)
    facts: dict[str, Any] = {
        "jax": jax.__version__,
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": len(jax.devices()),
        "bytes_limit": stats.get("bytes_limit"),
    }
    if shutil.which("nvidia-smi"):
        query = "name,memory.total,driver_version"
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
        facts["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    return facts


def _memory_stats(device: Any) -> dict[str, Any]:
    try:
        return device.memory_stats() or {}
    except Exception:  # CPU devices may not implement it
        return {}


def time_matmul(n: int) -> dict[str, Any]:
    """Median rate of an n x n x n bf16 matmul on random data (2 n^3 FLOPs), each product waited for."""
    import jax
    import jax.numpy as jnp

    from bench.measure.pipeline import time_steps

    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.bfloat16) for i in (0, 1))
    product = jax.jit(jnp.matmul)
    times = time_steps(lambda: jax.block_until_ready(product(a, b)), MATMUL_WARMUP, MATMUL_REPEATS)
    median = statistics.median(times)
    return {
        "matmul_flops_per_s_per_device": 2 * n**3 / median,
        "matmul_source": (
            f"bf16 {n}x{n}x{n} matmul on random normal data, jax.jit(jnp.matmul), median of {MATMUL_REPEATS} "
            f"after {MATMUL_WARMUP} warm-ups, measured by bench.gpu.probe at the start of this run"
        ),
    }


def compiled_peak_bytes(sizing: plan.Sizing, batch: int) -> int:
    """The compiled step's peak memory (bench.compile.step.memory_fields) at ``batch``: compiled, not run."""
    from bench.compile.step import build_program, memory_fields
    from model.config import Scope, Variant
    from model.strategies import make_driver

    preset = plan.preset_for(sizing, batch)
    variant = Variant.parse(plan.SIZING_VARIANT)
    program = build_program(preset, variant, preset.mesh, Scope.MODEL)
    driver = make_driver(variant.strategy, program, preset.mesh, layout=variant.layout)
    compiled = driver.train_step().lower(*driver.abstract_args()).compile()
    return memory_fields(compiled)["mem_peak_estimate_bytes_per_device"]


def fit_batch(sizing: plan.Sizing, limit_bytes: int) -> dict[str, Any]:
    """The batch that fills the device (plan.batch_to_fill from compiles at 1 and 2), checked by one compile at
    that batch and stepped down by the overshoot where that one is over the target (each compile of the full-size
    step costs budget, so no more)."""
    start = time.perf_counter()
    peaks = {b: compiled_peak_bytes(sizing, b) for b in (1, 2)}
    batch = plan.batch_to_fill(peaks[1], peaks[2], limit_bytes)
    target = plan.MEMORY_FRACTION * limit_bytes
    if batch not in peaks:
        peaks[batch] = compiled_peak_bytes(sizing, batch)
    if peaks[batch] > target:
        batch = max(1, batch - math.ceil((peaks[batch] - target) / (peaks[2] - peaks[1])))
    return {
        "batch": batch,
        "batch_source": (
            f"largest batch of {plan.SIZING_VARIANT} whose compiled peak (memory_analysis) fits "
            f"{plan.MEMORY_FRACTION:.0%} of bytes_limit {limit_bytes} B; compiled peaks by batch: {peaks}"
        ),
        "batch_search_s": time.perf_counter() - start,
    }


def probe(sizing: plan.Sizing, dry_run: bool) -> dict[str, Any]:
    facts = device_facts()
    if not dry_run and facts["platform"] != "gpu":
        facts["error"] = f"JAX's device is {facts['platform']!r}, not a GPU: on CPU run with --dry-run"
        return facts
    facts.update(time_matmul(sizing.matmul_n))
    if dry_run or not facts.get("bytes_limit"):
        why = "dry run" if dry_run else "the device reports no bytes_limit"
        facts.update(batch=plan.DRY_RUN_BATCH, batch_source=f"fixed ({why})")
    else:
        facts.update(fit_batch(sizing, facts["bytes_limit"]))
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.probe", description=__doc__)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(probe(plan.DRY_RUN if args.dry_run else plan.GPU, args.dry_run)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
