"""One planned run in a process of its own (``python -m bench.gpu.one``): ``bench run``'s measurement
(bench.measure.pipeline.measure) of one variant, plus the GPU's own figures, appended to ``OUT/results.jsonl``.

A process per run gives each its own allocator, so ``memory_stats()["peak_bytes_in_use"]`` is that run's peak, and
a run that crashes the process (a kernel the compiler takes but the driver does not) loses only its own record.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.gpu import plan


def device_memory_fields() -> dict[str, Any]:
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # CPU devices may not implement it
        stats = {}
    return {
        "mem_peak_in_use_bytes_per_device": stats.get("peak_bytes_in_use"),
        "mem_limit_bytes_per_device": stats.get("bytes_limit"),
    }


def run_one(
    name: str, sizing: plan.Sizing, batch: int, matmul: dict[str, Any], trace_dir: Path | None
) -> dict[str, Any]:
    from bench.measure.peaks import peak_fields
    from bench.measure.pipeline import measure
    from model.config import Variant
    from model.program import Scope

    preset = plan.preset_for(sizing, batch)
    # with a trace, the record carries its op self times by block component (profile_component_s_per_step_per_device)
    record = measure(
        Variant.parse(name),
        preset,
        preset.mesh,
        Scope.MODEL,
        sizing.steps,
        sizing.warmup,
        trace_dir=trace_dir,
        peak=peak_fields(preset.model.compute_dtype.value, preset.mesh.devices),
    )
    record.update(device_memory_fields())
    record.update(matmul)
    rate, ceiling = record.get("model_flops_per_s_total"), matmul.get("matmul_flops_per_s_per_device")
    record["mfu_matmul"] = rate / preset.mesh.devices / ceiling if rate and ceiling else None
    return record


def main(argv: list[str] | None = None) -> int:
    from bench.records.store import append_record

    parser = argparse.ArgumentParser(prog="python -m bench.gpu.one", description=__doc__)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--matmul", required=True, help="the probe's matmul fields, as JSON")
    parser.add_argument("--trace-dir", type=Path, help="capture an XProf trace here")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    sizing = plan.DRY_RUN if args.dry_run else plan.GPU
    record = run_one(args.variant, sizing, args.batch, json.loads(args.matmul), args.trace_dir)
    append_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
