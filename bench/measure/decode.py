"""``python -m bench decode``: prefill and KV-cache decode of each variant, timed, one record per batch and context.

Per point (variant, batch B, cache length C): the decode step is lowered from abstract shapes and compiled once, its
optimized HLO read for its all-reduces (against bench.analysis.decode's model) and its memory analysis; then a
throw-away prefill and step warm both programs up, and the timed run prefills B prompts (time to first token) and
takes ``new_tokens`` decode steps, each synchronised, sampling every token (per-token latency: median and p90).
The bytes a step must read (weights + the KV cache) over this machine's bandwidth, measured once in the same process
before the first point (bench.measure.bandwidth), give the floor and the MBU. Records are kind ``decode``
(bench.records.schema.Decode); a point that fails is recorded failed and the next runs; ``--resume`` skips points
recorded ok.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bench.analysis import comm, hlo
from bench.analysis.decode import (
    bandwidth_floor_s,
    decode_mbu,
    decode_read_bytes,
    embedding_unread_bytes,
    expected_decode_comm,
    percentile,
)
from bench.compile.failure import variant_failures
from bench.compile.step import memory_fields
from bench.measure.bandwidth import Bandwidth, measure_bandwidth
from bench.records.context import base_record, environment
from bench.records.decodespec import DecodeSpec
from bench.records.schema import RecordKind, Status, comm_key
from bench.records.store import append_record, load_records
from model.config import ConfigError, Mesh, Scope, Variant
from model.decode import Sampler, check_generation, kv_cache_bytes, make_decoder

P90 = 90.0


def device_memory_bytes(devices: list[Any]) -> tuple[float, str]:
    """What the weights and cache must fit in, and what it is: an accelerator's memory per device times the
    devices, or on CPU (where simulated devices share the host) the host's physical memory."""
    stats = getattr(devices[0], "memory_stats", lambda: None)()
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"]) * len(devices), f"{len(devices)} x {devices[0].device_kind} bytes_limit"
    host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return float(host), "the host's physical memory (simulated CPU devices share it)"


def weight_bytes(param_shapes: Any) -> int:
    leaves = jax.tree_util.tree_leaves(param_shapes)
    return int(sum(np.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves))


def check_spec(spec: DecodeSpec) -> None:
    """The sampler's and the generation's checks (model.decode's), for every point, before anything compiles."""
    Sampler(spec.temperature, spec.top_p)
    for context in spec.contexts:
        for batch in spec.batches:
            check_generation(context, batch, spec.prompt_tokens, spec.new_tokens)


def check_fits(spec: DecodeSpec, decoders: dict[str, Any]) -> None:
    """Weights plus the largest cache against the device memory, before anything compiles (one ``error:`` line)."""
    batch, context = max(spec.batches), max(spec.contexts)
    for variant in spec.variants:
        decoder = decoders[variant.name]
        weights = weight_bytes(decoder.program.param_shapes())
        cache = kv_cache_bytes(decoder.cfg, batch, context, decoder.cfg.compute_dtype.value)
        limit, what = device_memory_bytes(decoder.devices)
        if weights + cache > limit:
            raise ConfigError(
                f"{variant.name}: a KV cache of batch {batch} x context {context} needs {cache / 2**30:.2f} GiB and "
                f"the weights {weights / 2**30:.2f} GiB, {(weights + cache) / 2**30:.2f} GiB in all, but "
                f"{what} is {limit / 2**30:.2f} GiB; give a smaller --batch or --context"
            )


def point_key(variant: Variant, batch: int, context: int) -> str:
    return f"{variant.name} B={batch} C={context}"


def points(spec: DecodeSpec) -> Iterator[tuple[Variant, int, int]]:
    for variant in spec.variants:
        for context in spec.contexts:
            for batch in spec.batches:
                yield variant, batch, context


def comm_fields(hlo_text: str, mesh: Mesh, cfg: Any, batch: int) -> dict[str, Any]:
    """The compiled step's collectives per step, and the mp all-reduces against the analytic model."""
    ids = np.arange(mesh.devices).reshape(mesh.dp, mesh.mp)
    collectives = hlo.parse_collectives(hlo_text, ids, ("dp", "mp"))
    fields: dict[str, Any] = dict(comm.summarize(collectives, ("dp", "mp")))
    expected = expected_decode_comm(cfg, mesh, batch)
    fields.update(expected.as_record_fields())
    count = fields[comm_key("mp", hlo.CollectiveKind.ALL_REDUCE, "tensors")]
    payload = fields[comm_key("mp", hlo.CollectiveKind.ALL_REDUCE, "bytes")]
    differences = []
    if count != expected.allreduce_count:
        differences.append(f"{count} mp all-reduced arrays per step, the model expects {expected.allreduce_count}")
    if payload != expected.allreduce_bytes:
        differences.append(f"{payload} mp all-reduce bytes per step, the model expects {expected.allreduce_bytes}")
    fields.update(
        decode_comm_matches_model=not differences,
        comm_differences=differences,
        decode_mp_allreduce_bytes_per_token_per_device=payload / batch,
    )
    return fields


def _block(tree: Any) -> Any:
    return jax.block_until_ready(tree)


def time_point(decoder: Any, params: Any, spec: DecodeSpec, batch: int, context: int) -> dict[str, Any]:
    """Prefill then ``new_tokens`` steps, after a throw-away run of the same that compiles and warms both."""
    sampler = Sampler(temperature=spec.temperature, top_p=spec.top_p)
    rng = np.random.default_rng(0)
    prompt = jnp.asarray(rng.integers(0, decoder.cfg.vocab, (batch, spec.prompt_tokens)), jnp.int32)  # [B, P]
    key = jax.random.PRNGKey(0)

    def generate(steps: int) -> tuple[float, list[float]]:
        nonlocal key
        start = time.perf_counter()
        logits, cache = _block(decoder.prefill(params, prompt, context))
        prefill_s = time.perf_counter() - start
        step_times = []
        for _ in range(steps):
            start = time.perf_counter()
            key, sub = jax.random.split(key)
            tokens = sampler.sample(sub, logits)  # [B]
            logits, cache = _block(decoder.step(params, cache, tokens))
            step_times.append(time.perf_counter() - start)
        return prefill_s, step_times

    generate(1)
    load_before = os.getloadavg()[0]
    prefill_s, step_times = generate(spec.new_tokens)
    load_after = os.getloadavg()[0]
    median = statistics.median(step_times)
    return {
        "prefill_s": prefill_s,
        "prefill_tokens_per_s": batch * spec.prompt_tokens / prefill_s,
        "decode_step_median_s": median,
        "decode_step_p90_s": percentile(step_times, P90),
        "decode_tokens_per_s": batch / median,
        "decode_load_avg_before": load_before,
        "decode_load_avg_after": load_after,
    }


def measure_point(
    spec: DecodeSpec, decoder: Any, params: Any, variant: Variant, batch: int, context: int, bandwidth: Bandwidth
) -> dict[str, Any]:
    mesh = spec.mesh_of(variant)
    cfg = decoder.cfg
    record: dict[str, Any] = {}
    start = time.perf_counter()
    compiled = decoder.lower_step(batch, context).compile()
    record["decode_compile_s"] = time.perf_counter() - start
    record.update(memory_fields(compiled))
    record.update(comm_fields(compiled.as_text(), mesh, cfg, batch))
    weights = weight_bytes(params)
    cache = kv_cache_bytes(cfg, batch, context, cfg.compute_dtype.value)
    unread = embedding_unread_bytes(cfg, batch, np.dtype(cfg.param_dtype.value).itemsize)
    read = decode_read_bytes(weights, cache, unread)
    record.update(time_point(decoder, params, spec, batch, context))
    record.update(
        kv_cache_bytes_total=cache,
        decode_weight_bytes_total=weights,
        decode_read_bytes_per_step_total=read,
        decode_fits_memory=True,
        decode_floor_s=bandwidth_floor_s(read, bandwidth.bytes_per_s),
        decode_mbu=decode_mbu(read, record["decode_step_median_s"], bandwidth.bytes_per_s),
    )
    return record


def _head(spec: DecodeSpec, variant: Variant, batch: int, context: int, bandwidth: Bandwidth) -> dict[str, Any]:
    record = base_record(variant, spec.preset, spec.mesh_of(variant), Scope.MODEL, 0, RecordKind.DECODE)
    record.update(environment(), topology=None, backend=jax.default_backend(), device_kind=jax.devices()[0].device_kind)
    record.update(
        batch=batch,
        seq=context,
        decode_prompt_tokens=spec.prompt_tokens,
        decode_new_tokens=spec.new_tokens,
        decode_temperature=spec.temperature,
        decode_top_p=spec.top_p,
        copy_bandwidth_bytes_per_s=bandwidth.bytes_per_s,
        copy_bandwidth_source=bandwidth.source,
        copy_bandwidth_load_avg_before=bandwidth.load_avg_before,
        copy_bandwidth_load_avg_after=bandwidth.load_avg_after,
    )
    return record


def build_decoders(spec: DecodeSpec, devices: list[Any] | None = None) -> dict[str, Any]:
    """``devices``: a TPU topology's compile-only devices (bench.tpu_aot.decode); None: this process's."""
    return {v.name: make_decoder(spec.preset, v, spec.mesh_of(v), devices) for v in spec.variants}


def run_decode(spec: DecodeSpec, out: Path, decoders: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point of ``spec`` (decoders: build_decoders', after check_fits), one record each in ``out``."""
    done = finished_decode_keys(out) if spec.resume else set()
    bandwidth = measure_bandwidth(jax.devices()[: max(spec.mesh.devices, 1)])
    print(f"decode: bandwidth {bandwidth.bytes_per_s / 1e9:.2f} GB/s ({bandwidth.source})", file=sys.stderr)
    records = []
    for variant in spec.variants:
        decoder = decoders[variant.name]
        params = None
        for batch, context in ((b, c) for v, b, c in points(spec) if v == variant):
            record = _head(spec, variant, batch, context, bandwidth)
            if decode_key(record) in done:
                continue
            try:
                params = decoder.init_params() if params is None else params
                record.update(measure_point(spec, decoder, params, variant, batch, context, bandwidth))
                record.update(status=Status.OK.value)
            except variant_failures() as error:  # recorded, and the next point runs; a bug stops the run
                record.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
            append_record(out, record)
            _print(record)
            records.append(record)
    return records


def decode_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A decode point is measured once per variant, batch, context, preset, JAX version and platform."""
    keys = ("variant", "batch", "seq", "preset", "jax", "backend", "topology")
    return tuple(record.get(k) for k in keys)


def finished_decode_keys(out: Path) -> set[tuple[Any, ...]]:
    return {
        decode_key(r)
        for r in load_records(out).records
        if r.get("kind") == RecordKind.DECODE.value and r.get("status") == Status.OK.value
    }


def _print(record: dict[str, Any]) -> None:
    name = f"{record['variant']} B={record['batch']} C={record['seq']}"
    if record["status"] != Status.OK.value:
        print(f"{name}: failed: {record['error']}", file=sys.stderr)
        return
    print(
        f"{name}: prefill {record['prefill_s'] * 1e3:.1f} ms, step {record['decode_step_median_s'] * 1e3:.2f} ms "
        f"(p90 {record['decode_step_p90_s'] * 1e3:.2f}), {record['decode_tokens_per_s']:.0f} tokens/s, "
        f"MBU {record['decode_mbu']:.0%}, mp all-reduced arrays "
        f"{record[comm_key('mp', hlo.CollectiveKind.ALL_REDUCE, 'tensors')]}"
        f"{'' if record['decode_comm_matches_model'] else ' (model differs)'}",
        file=sys.stderr,
    )
