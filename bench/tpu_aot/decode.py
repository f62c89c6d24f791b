"""Compile decode steps for a TPU topology with no TPU present, and PROJECT their time (bench.projection.decode).

``python -m bench decode --topology v3:2x2 ...``: per variant, batch and context, the decode step is lowered from
abstract shapes for the topology's compile-only devices and compiled by libtpu; its optimized HLO gives the
all-reduces (against bench.analysis.decode's model) and, priced op by op, the projected step. Nothing is timed. The
compile's outputs are kept in the TPU compile cache (bench.tpu_aot.cache, the whole-step kind), keyed by program and
compiler, so a rerun of the same code compiles nothing. A point whose weights and cache exceed the slice's HBM is
recorded failed with what it needs, before compiling. Must run in a process whose JAX has not started
(bench.tpu_aot.env.apply_tpu_compile_env comes first).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis.decode import decode_read_bytes, embedding_unread_bytes
from bench.compile.failure import variant_failures
from bench.compile.step import memory_fields
from bench.hardware.table import accelerator_for_topology
from bench.measure.decode import comm_fields, decode_key, finished_decode_keys, weight_bytes
from bench.projection.decode import project_decode
from bench.records.context import base_record, environment
from bench.records.decodespec import DecodeSpec
from bench.records.schema import RecordKind, Status
from bench.records.store import append_record
from bench.tpu_aot.cache import CachedCompile, CompileCache, main_compile_entry, program_key, unpack_text
from bench.tpu_aot.compile import MAX_REFUSAL_CHARS, REFUSAL, CompilerRefused, out_of_memory_fields
from model.config import Scope

DECODE_COMPILE = "decode-step compile: optimized HLO, memory analysis, compile time"


def _compile(
    lowered: Any, compiler: dict[str, Any], cache: CompileCache, about: dict[str, Any]
) -> tuple[Any, str, float, bool]:
    from bench.tpu_aot.env import compile_with_optimized_hlo
    from model.compat import lowered_text

    key = program_key(lowered_text(lowered), lowered_text(lowered, debug_info=True), compiler, DECODE_COMPILE)
    entry = cache.get(key)
    if entry is not None and REFUSAL in entry:  # an out-of-HBM refusal costs a compile to be told again
        raise CompilerRefused(f"{entry[REFUSAL]} (kept in the compile cache)")
    if entry is not None:
        return CachedCompile(entry["memory"]), unpack_text(entry["hlo_gz_b64"]), entry["compile_s"], True
    start = time.perf_counter()
    try:
        compiled, hlo_text = compile_with_optimized_hlo(lowered)
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        if out_of_memory_fields(message):
            cache.put(key, {REFUSAL: message[:MAX_REFUSAL_CHARS]}, about)
        raise
    seconds = time.perf_counter() - start
    cache.put(key, main_compile_entry(compiled, hlo_text, seconds), about)
    return compiled, hlo_text, seconds, False


def run_decode_tpu(spec: DecodeSpec, topology: str, devices: list[Any], out: Path, cache: CompileCache) -> list[dict]:
    from bench.measure.decode import build_decoders
    from model.decode import kv_cache_bytes

    accelerator = accelerator_for_topology(topology)
    hbm_total = accelerator.hbm_bytes_per_device * len(devices)
    versions = environment()
    compiler = {**{k: versions[k] for k in ("jax", "jaxlib", "libtpu", "xla_flags")}, "topology": topology}
    decoders = build_decoders(spec, devices)
    done = finished_decode_keys(out) if spec.resume else set()
    records = []
    for variant in spec.variants:
        decoder, mesh = decoders[variant.name], spec.mesh_of(variant)
        weights = weight_bytes(decoder.program.param_shapes())
        for context in spec.contexts:
            for batch in spec.batches:
                record = base_record(variant, spec.preset, mesh, Scope.MODEL, 0, RecordKind.DECODE)
                record.update(versions, backend="tpu", topology=topology, device_kind=devices[0].device_kind)
                record.update(batch=batch, seq=context, decode_prompt_tokens=0, decode_new_tokens=1)
                if decode_key(record) in done:
                    continue
                cache_bytes = kv_cache_bytes(decoder.cfg, batch, context, decoder.cfg.compute_dtype.value)
                unread = embedding_unread_bytes(decoder.cfg, batch, np.dtype(decoder.cfg.param_dtype.value).itemsize)
                read = decode_read_bytes(weights, cache_bytes, unread)
                record.update(
                    kv_cache_bytes_total=cache_bytes,
                    decode_weight_bytes_total=weights,
                    decode_read_bytes_per_step_total=read,
                )
                record["decode_fits_memory"] = read <= hbm_total
                try:
                    if not record["decode_fits_memory"]:
                        raise MemoryError(
                            f"weights {weights / 2**30:.2f} GiB + KV cache {cache_bytes / 2**30:.2f} GiB exceed the "
                            f"{hbm_total / 2**30:.1f} GiB of HBM of {topology}"
                        )
                    about = {
                        "variant": variant.name,
                        "preset": spec.preset.name,
                        "what": DECODE_COMPILE,
                        "batch": batch,
                        "context": context,
                        **compiler,
                    }
                    lowered = decoder.lower_step(batch, context)
                    compiled, hlo_text, seconds, cached = _compile(lowered, compiler, cache, about)
                    record.update(decode_compile_s=seconds, compile_from_cache=cached)
                    record.update(memory_fields(compiled))
                    record.update(comm_fields(hlo_text, mesh, decoder.cfg, batch))
                    ids = np.arange(mesh.devices).reshape(mesh.dp, mesh.mp)
                    record.update(project_decode(hlo_text, ids, ("dp", "mp"), accelerator, read / mesh.devices, batch))
                    record.update(status=Status.OK.value)
                except variant_failures() as error:  # recorded, and the next point compiles; a bug stops the run
                    message = f"{type(error).__name__}: {error}"
                    record.update(
                        error=message[:2000], traceback=traceback.format_exc(), **out_of_memory_fields(message)
                    )
                append_record(out, record)
                _print(record)
                records.append(record)
    return records


def _print(record: dict[str, Any]) -> None:
    name = f"{record['variant']} B={record['batch']} C={record['seq']} on {record['topology']}"
    if record["status"] != Status.OK.value:
        print(f"{name}: failed: {record['error']}", file=sys.stderr)
        return

    def ms(part: str) -> str:
        return f"{record[f'decode_projected_{part}_s_per_device'] * 1e3:.3f}"

    print(
        f"{name}: PROJECTION {ms('step')} ms/step (work {ms('work')}, ICI {ms('ici')} of which latency "
        f"{ms('ici_latency')}; HBM floor {ms('hbm_floor')}){' [cache]' if record['compile_from_cache'] else ''}",
        file=sys.stderr,
    )
