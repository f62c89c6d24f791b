"""Compile variants for a real TPU topology with no TPU present, and record what the TPU compiler says.

Records are of kind ``tpu-aot`` (backend ``tpu``): per-device memory (does the step fit the core's HBM, with what
headroom?), XLA's FLOP and HBM-byte counts, the TPU compiler's own estimate of the step's time (``optimal_seconds``
of its cost analysis: each op priced at the larger of its FLOPs over the MXU peak and its bytes over HBM bandwidth,
summed), and the HLO communication volume through the same parser as measured runs, split by whether the schedule
puts compute under each transfer. Nothing is timed. Must run in a process whose JAX has not started: the
compile-only environment of libtpu is set first (bench.tpu_aot.env).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.analysis.comm import collective_wire_bytes
from bench.analysis.components import Basis, attribute, breakdown
from bench.analysis.extrapolate import affine_source, bilinear_source, whole_step, whole_step_by_label
from bench.analysis.hlo import Collective, CollectiveKind, parse_collectives
from bench.compile.failure import CompilerRefused, variant_failures
from bench.records.context import failed_record
from bench.records.schema import COMM_AXES, COST_POINT_KEYS, RecordKind, Status, comm_key, comm_overlap_key
from bench.records.store import append_record, finished_keys, record_key
from bench.tpu_aot.cache import (
    KEY_VERSION,
    POINT_KEY_VERSION,
    CachedCompile,
    CompileCache,
    analysis_digest,
    components_of,
    main_compile_entry,
    memo_key,
    point_compile_entry,
    program_key,
    unpack_text,
    unpack_text_xz,
    with_components,
)
from kernels.choice import AttentionKernel
from model.config import ConfigError, Mesh, Preset, Scope, Variant

# XLA counts a while-loop body once. Layer scans are kept (a 28-layer unrolled compile is slow), and the
# whole-step counts are extrapolated from small unrolled compiles (bench.analysis.extrapolate) of this many layers
# and one more. The first layer does not cost what the others do in the compiler's count: on tiny
# (v3:2x2, mesh 2x4, serial-h128-shard_map-none, libtpu 0.0.42.1; measured 2026-12) optimal_seconds grows by
# 2.255e-4 s from 1 to 2 layers but by 2.187e-4 and 2.177e-4 s from 2 to 3 and 3 to 4: the 1-to-2 slope is 3-4%
# steeper, and a 1- and 2-layer line misses a 3-layer compile by 1.0%, where a 2- and 3-layer line predicts 4 layers
# within 0.25% (FLOPs and HBM bytes too). On gptj-6b (v3:8x16, dp=32 x mp=8, parallel-h256-pjit-full) the slopes are
# 11.36 ms and 10.66 ms (6.6% apart), and the 28-layer step 0.327 s from 1 and 2 layers, 0.309 s from 2 and 3;
# FLOPs agree within 0.02%. The price is compile time: 2 + 3 layers instead of 1 + 2.
EXTRAPOLATION_FIRST_LAYERS = 2
# The same for micro-steps: a 1-micro-step program has no accumulation at all (model.program.accumulate returns the
# one gradient), so a line through 1 and 2 micro-steps charges the first sum of gradients to every later micro-step
# and takes it back from the intercept, where the update and the dp reduction are: their components came out
# negative (measured 2026-12). From 2 and 3, both programs accumulate. On tiny (v3:2x2, mesh 2x4,
# parallel-h256-shard_map-full, libtpu 0.0.42.1; measured 2026-12) the FLOPs of an unrolled 2-layer x 4-micro-step
# compile are predicted within 0.002% from 2 and 3 micro-steps and 0.2% over from 1 and 2; the compiler's
# optimal_seconds is not quite affine in either (its steps from 1 to 4 micro-steps: 1.59, 1.63, 1.58 x 1e-4 s), 0.5%
# over and 0.3% under.
EXTRAPOLATION_FIRST_MICROSTEPS = 2
# The preset field that unrolls the micro-batch loop of gradient accumulation, as unroll_layers does the layers'.
UNROLL_ACCUM_FIELD = "unroll_accum"
# cost-analysis key (model.compat.cost_analysis) -> the per-step record field it extrapolates to
COST_FIELDS = {
    "flops": "xla_flops_per_step_total",
    "bytes accessed": "xla_bytes_accessed_per_step_total",
    "optimal_seconds": "xla_optimal_s_per_step_per_device",
}
# Summed over devices, as the FLOP fields are; optimal_seconds stays per device: every device runs the same SPMD
# program, so it is the compiler's estimate of the step's time.
SUMMED_OVER_DEVICES = ("flops", "bytes accessed")


def check_mesh(mesh: Mesh, device_count: int, topology: str) -> None:
    if mesh.devices != device_count:
        raise ConfigError(
            f"mesh {mesh} has {mesh.devices} devices but topology {topology} has {device_count}; "
            f"valid meshes have dp x mp = {device_count} (e.g. dp={device_count // 8},mp=8)"
        )


def _lower(preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any]) -> tuple[Any, Any, Any]:
    from bench.compile.step import build_program_for_devices
    from model.strategies import make_driver

    program = build_program_for_devices(preset, variant, mesh, Scope.MODEL, len(devices))
    driver = make_driver(variant.strategy, program, mesh, devices, layout=variant.layout)
    return driver.train_step().lower(*driver.abstract_args()), driver, program


def _compile(preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any]) -> tuple[Any, Any, Any, Any]:
    from bench.tpu_aot.env import compile_with_optimized_hlo

    lowered, driver, program = _lower(preset, variant, mesh, devices)
    compiled, hlo_text = compile_with_optimized_hlo(lowered)
    return compiled, hlo_text, driver, program


def _costs(compiled: Any) -> dict[str, float | None]:
    from model.compat import cost_analysis

    costs = cost_analysis(compiled) or {}
    return {key: costs.get(key) for key in COST_FIELDS}


def microsteps_of(preset: Preset) -> int:
    """Micro-batches per optimizer step (1 where the preset has no gradient accumulation)."""
    return getattr(preset, "grad_accum", 1)


def unrolled(preset: Preset, layers: int, microsteps: int) -> Preset:
    """The preset with `layers` unrolled layers and, where it accumulates gradients, `microsteps` unrolled
    micro-batches, and the attention kernel's block loops unrolled (ModelConfig.unroll_attention_blocks): XLA's cost
    analysis then sees every op once per execution. The micro-batch stays the preset's
    (grad_accum counts micro-batches of that size), so the points differ only in L and A."""
    model = dataclasses.replace(preset.model, n_layers=layers, unroll_layers=True, unroll_attention_blocks=True)
    changes: dict[str, Any] = {"model": model}
    if microsteps_of(preset) > 1:
        changes.update({"grad_accum": microsteps, UNROLL_ACCUM_FIELD: True})
    return dataclasses.replace(preset, **changes)


def extrapolation_grid(
    preset: Preset, first: int = EXTRAPOLATION_FIRST_LAYERS, first_microsteps: int = EXTRAPOLATION_FIRST_MICROSTEPS
) -> list[tuple[int, int]]:
    """(layers, micro-steps) of the unrolled compiles the whole-step counts are extrapolated from."""
    microsteps = (first_microsteps, first_microsteps + 1) if microsteps_of(preset) > 1 else (1,)
    return [(layers, steps) for steps in microsteps for layers in (first, first + 1)]


def whole_step_costs(
    points: Mapping[tuple[int, int], Mapping[str, Any]],
    layers: int,
    microsteps: int,
    devices: int,
    first: int = EXTRAPOLATION_FIRST_LAYERS,
    first_microsteps: int = EXTRAPOLATION_FIRST_MICROSTEPS,
) -> dict[str, Any]:
    """Record fields for the whole step from per-device costs at (layers, micro-steps) points (pure).

    Affine in layers from (first, 1) and (first + 1, 1) when microsteps is 1; bilinear from the same layers at
    first_microsteps and one more otherwise (bench.analysis.extrapolate.whole_step). A cost the compiler did not
    report at some point is None, and its source says so. A point's ``components`` (seconds per component label,
    ``component_seconds``) are extrapolated label by label the same way, and their sum set against the whole-step
    estimate.
    """
    source = affine_source(first) if microsteps == 1 else bilinear_source(first, first_microsteps)
    fields: dict[str, Any] = {"xla_flops_source": source, "xla_optimal_source": source}
    for key, field in COST_FIELDS.items():
        values = {point: costs[key] for point, costs in points.items()}
        if any(value is None for value in values.values()):
            fields[field] = None
            continue
        per_device = whole_step(values, layers, microsteps, first, first_microsteps)
        fields[field] = per_device * devices if key in SUMMED_OVER_DEVICES else per_device
    if fields["xla_optimal_s_per_step_per_device"] is None:
        fields["xla_optimal_source"] = "the TPU compiler reported no optimal_seconds"
    elif any(costs["optimal_seconds"] < 0 for costs in points.values()):
        # libtpu 0.0.42.1 for v5e:16x16 (gptj-6b, accumulation 1, measured 2026-12): -38.0 s at 2 layers and
        # -48.0 s at 3, an estimate it does not have; the projection then prices the work by the roofline
        fields["xla_optimal_s_per_step_per_device"] = None
        fields["xla_optimal_source"] = "the TPU compiler reported a negative optimal_seconds (no estimate)"
    fields["xla_cost_points"] = [
        {"layers": layers_at, "microsteps": steps_at, **{COST_POINT_KEYS[k]: costs[k] for k in COST_FIELDS}}
        for (layers_at, steps_at), costs in sorted(points.items())
    ]
    if all("components" in costs for costs in points.values()):
        by_point = {p: costs["components"] for p, costs in points.items()}
        parts = whole_step_by_label(by_point, layers, microsteps, first, first_microsteps)
        optimal = fields["xla_optimal_s_per_step_per_device"]
        fields["component_s_per_step_per_device"] = parts
        fields["component_source"] = f"{Basis.ROOFLINE.value} (bench.analysis.components), each label {source}"
        fields["component_sum_to_optimal_ratio"] = sum(parts.values()) / optimal if optimal else None
    return fields


def component_seconds(hlo_text: str, driver: Any, accelerator: Any) -> dict[str, float]:
    """Seconds per component label of one compile: each op of the optimized HLO at max(FLOPs / peak, bytes / HBM
    bandwidth) with the accelerator row's bf16 peak and HBM bandwidth per device, the per-op roofline that the TPU
    compiler's optimal_seconds sums (bench.analysis.components)."""
    from bench.compile.step import mesh_ids
    from bench.projection.throughput import hbm_bandwidth_per_device

    hbm = hbm_bandwidth_per_device(accelerator.hbm_bandwidth_bytes_per_s, accelerator.devices_per_chip)
    return dict(breakdown(attribute(hlo_text, mesh_ids(driver)), accelerator.peak_bf16_flops_per_device, hbm).seconds)


def extrapolated_costs(
    preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any], compiler: Mapping[str, Any], cache: CompileCache
) -> dict[str, Any]:
    """Per-step FLOPs and HBM bytes summed over devices, the compiler's per-device optimal_seconds and the component
    breakdown, for the preset's layer count and micro-batches. Each unrolled compile's figures are taken from
    ``cache`` where its key (bench.tpu_aot.cache) is there, and stored in it otherwise. ``compiler``: ``_compiler``'s
    versions and topology."""
    from bench.hardware.table import accelerator_for_topology
    from bench.tpu_aot.env import compile_with_optimized_hlo

    accelerator = accelerator_for_topology(compiler["topology"])
    priced_at = [accelerator.peak_bf16_flops_per_device, accelerator.hbm_bandwidth_bytes_per_s]
    memo = memo_key(analysis_digest(), [*priced_at, accelerator.devices_per_chip])
    points, reused = {}, 0
    for layers, microsteps in extrapolation_grid(preset):
        lowered, driver, _ = _lower(unrolled(preset, layers, microsteps), variant, mesh, devices)
        key = _key(lowered, compiler, POINT_COMPILE, POINT_KEY_VERSION)
        about = {"variant": variant.name, "preset": preset.name, "layers": layers, "microsteps": microsteps}
        entry, hlo_text = cache.get(key), None
        if entry is None:
            compiled, hlo_text = compile_with_optimized_hlo(lowered)
            entry = point_compile_entry(_costs(compiled), hlo_text)
        else:
            reused += 1
        components = components_of(entry, memo)
        if components is None:  # a new compile, or the analysis code or the prices changed: derive, and keep
            hlo_text = hlo_text if hlo_text is not None else unpack_text_xz(entry["hlo_xz_b64"])
            components = component_seconds(hlo_text, driver, accelerator)
            entry = with_components(entry, components, memo)
            cache.put(key, entry, {**about, **compiler, "priced_at": priced_at})
        points[layers, microsteps] = {**{name: entry[name] for name in COST_FIELDS}, "components": components}
    fields = whole_step_costs(points, preset.model.n_layers, microsteps_of(preset), mesh.devices)
    fields["xla_cost_points_from_cache"] = reused
    fields["xla_cost_points_attention_blocks_unrolled"] = True  # unrolled() sets it for every point
    return fields


def overlap_fields(collectives: Iterable[Collective]) -> dict[str, float]:
    """Wire bytes per device per step by mesh axis, split by whether the schedule puts compute under the transfer
    (``Collective.overlapped``, bench.analysis.hlo): ``comm_mp_overlappable_wire_bytes_per_device`` and
    ``comm_mp_exposed_wire_bytes_per_device``. Every axis is written, zeros included, as the other comm keys are."""
    fields = {comm_overlap_key(axis, side): 0.0 for axis in COMM_AXES for side in ("overlappable", "exposed")}
    for c in collectives:
        side = "overlappable" if c.overlapped else "exposed"
        fields[comm_overlap_key(c.mesh_axis.replace("+", ""), side)] += collective_wire_bytes(c) * c.multiplier
    return fields


NOT_EXTRAPOLATED = {
    "xla_optimal_s_per_step_per_device": None,
    "xla_optimal_source": "not extrapolated (no unrolled compiles): the whole-step compile only",
}


# A kept refusal: the compiler's message, cut to this many characters (Mosaic appends an MLIR dump).
REFUSAL, MAX_REFUSAL_CHARS = "refusal", 4000
# What the key of an entry says it holds (raw compiler output; a point's breakdown is memoised beside it).
MAIN_COMPILE = "whole-step compile: optimized HLO, memory analysis, compile time"
POINT_COMPILE = "unrolled compile: optimized HLO, cost analysis"


def _compiler(versions: Mapping[str, Any], topology: str) -> dict[str, Any]:
    """What of this process's environment (bench.records.context.environment) a compile's cache key holds."""
    return {**{name: versions[name] for name in ("jax", "jaxlib", "libtpu", "xla_flags")}, "topology": topology}


def _key(lowered: Any, compiler: Mapping[str, Any], analysis: str, version: int = KEY_VERSION) -> str:
    from model.compat import lowered_text

    return program_key(lowered_text(lowered), lowered_text(lowered, debug_info=True), compiler, analysis, version)


def _main_compile(
    preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any], compiler: Mapping[str, Any], cache: CompileCache
) -> tuple[Any, str, Any, Any, dict[str, Any]]:
    """The whole-step compile, or its kept outputs from ``cache`` (bench.tpu_aot.cache). A refusal (out of HBM, or
    a kernel Mosaic will not compile for the target) raises, as the compiler does; it is kept too, as its message,
    and raised again from the cache (a Pallas refusal on v3 costs two minutes to be told again)."""
    from bench.tpu_aot.env import compile_with_optimized_hlo

    lowered, driver, program = _lower(preset, variant, mesh, devices)
    key = _key(lowered, compiler, MAIN_COMPILE)
    about = {"variant": variant.name, "preset": preset.name, "what": MAIN_COMPILE, **compiler}
    entry = cache.get(key)
    if entry is not None and REFUSAL in entry:
        raise CompilerRefused(f"{entry[REFUSAL]} (kept in the compile cache)")
    if entry is not None:
        hlo_text = unpack_text(entry["hlo_gz_b64"])
        return (
            CachedCompile(entry["memory"]),
            hlo_text,
            driver,
            program,
            {
                "compile_s": entry["compile_s"],
                "compile_from_cache": True,
            },
        )
    start = time.perf_counter()
    try:
        compiled, hlo_text = compile_with_optimized_hlo(lowered)
    except variant_failures() as error:
        message = f"{type(error).__name__}: {error}"
        if out_of_memory_fields(message) or compiler_refusal_fields(message):
            cache.put(key, {REFUSAL: message[:MAX_REFUSAL_CHARS]}, about)
        raise
    seconds = time.perf_counter() - start
    cache.put(key, main_compile_entry(compiled, hlo_text, seconds), about)
    return compiled, hlo_text, driver, program, {"compile_s": seconds, "compile_from_cache": False}


def compile_record(
    preset: Preset,
    variant: Variant,
    mesh: Mesh,
    topology: str,
    devices: list[Any],
    cache: CompileCache | None = None,
    extrapolate: bool = True,
) -> dict[str, Any]:
    """One tpu-aot record. ``extrapolate`` False: the whole-step compile only (memory, collectives, fit), without
    the four unrolled compiles of the compiler's estimate and the breakdown (NOT_EXTRAPOLATED says so in the
    record; an xmap record in a ranking takes its shard_map twin's, bench.analysis.extrapolate)."""
    from bench.analysis.flops import xla_to_hardware_flops_ratio
    from bench.compile.step import analyse, mesh_ids
    from bench.hardware.table import accelerator_for_topology, peak_bases, peak_basis_fields
    from bench.records.context import base_record, environment

    record = base_record(variant, preset, mesh, Scope.MODEL, repeat=0, kind=RecordKind.TPU_AOT)
    # this process runs on the host (its default backend is cpu); the record describes the TPU compiled for
    versions = environment()
    record.update(versions, backend="tpu", topology=topology, device_kind=devices[0].device_kind)
    compiler, cache = _compiler(versions, topology), cache or CompileCache(None)
    try:
        compiled, hlo_text, driver, program, compile_fields = _main_compile(
            preset, variant, mesh, devices, compiler, cache
        )
        record.update(compile_fields)
        record.update(analyse(compiled, driver, program, hlo_text))
        record.update(overlap_fields(parse_collectives(hlo_text, mesh_ids(driver), ("dp", "mp"))))
        accelerator = accelerator_for_topology(topology)
        whole = component_seconds(hlo_text, driver, accelerator)
        record.update(
            hlo_roofline_s_per_step_per_device=sum(whole.values()), hlo_roofline_component_s_per_step_per_device=whole
        )
        if extrapolate:
            record.update(extrapolated_costs(preset, variant, mesh, devices, compiler, cache))
        else:
            record.update(NOT_EXTRAPOLATED)
        record["xla_to_hardware_flops_ratio"] = xla_to_hardware_flops_ratio(record)
        hbm = accelerator.hbm_bytes_per_device
        record["hbm_bytes_per_device"] = hbm
        peak = record.get("mem_peak_estimate_bytes_per_device")
        if hbm is not None and peak is not None:
            record["fits_hbm"] = peak <= hbm
            record["hbm_headroom_bytes_per_device"] = hbm - peak
        # the topology's row, as the projection reads it (bench.projection.throughput.project)
        record.update(peak_basis_fields(accelerator.device_kind_patterns[0], peak_bases(accelerator)))
        record["status"] = Status.OK.value
    except variant_failures() as error:  # recorded, and the next variant still compiles; a bug stops the run
        record["error"] = f"{type(error).__name__}: {error}"
        record.update(out_of_memory_fields(str(error)))
        record.update(compiler_refusal_fields(str(error)))
        record["traceback"] = traceback.format_exc(limit=8)
    return record


# The two ways libtpu words it (current releases; libtpu 0.0.1 for jax 0.4.30).
_OOM = (
    re.compile(r"required for HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)"),
    re.compile(r"Ran out of memory in memory space hbm\. Used ([\d.]+)G of ([\d.]+)G hbm"),
)


def out_of_memory_fields(message: str) -> dict[str, Any]:
    """The TPU compiler refuses a step that does not fit and says by how much: keep those figures."""
    found = next((m for m in (p.search(message) for p in _OOM) if m), None)
    if not found:
        return {}
    gib = 2**30  # XLA prints sizes in GiB with a "G" suffix
    return {
        "fits_hbm": False,
        "oom_required_bytes_per_device": float(found.group(1)) * gib,
        "oom_available_hbm_bytes_per_device": float(found.group(2)) * gib,
    }


# Mosaic, the TPU compiler of Pallas kernels, refuses a kernel the target cannot run (jax._src.pallas.mosaic
# .error_handling.MosaicError); libtpu 0.0.42.1 on TPU v3, a bf16 x bf16 matmul into f32 (jax-ml/jax#23989):
# "INTERNAL: Mosaic failed to compile TPU kernel: E2001: CompileTimeMosaicUnsupportedRhsType: Unsupported matmul RHS
# type on target: vector<128x128xbf16>", then the MLIR operation and a request to report a bug.
_MOSAIC_REFUSAL = re.compile(r"Mosaic failed to compile TPU kernel: (.+)")


def compiler_refusal_fields(message: str) -> dict[str, Any]:
    """A Pallas kernel the TPU compiler refuses for the target is a finding: keep its words (the line that says
    why), not the MLIR dump and bug-report request that follow them."""
    found = _MOSAIC_REFUSAL.search(message)
    if not found:
        return {}
    return {"refused_by_compiler": True, "compiler_refusal": f"Mosaic failed to compile TPU kernel: {found.group(1)}"}


def is_finding(record: Mapping[str, Any]) -> bool:
    """A failed record that is a result: the step does not fit the core's HBM, or the compiler refuses a kernel on
    this TPU generation (both recorded with the compiler's figures or words)."""
    return record.get("fits_hbm") is False or record.get("refused_by_compiler") is True


# libtpu 0.0.1 (the jax 0.4.30 environment) does not refuse a Pallas kernel, it aborts the process in Mosaic's layout
# pass: tiny, parallel-h256-shard_map-full+pallas, v3:2x2, bf16, measured 2026-12: "layout.h:320] Check failed:
# arr.size() >= layout_rank(implicit_dim) (1 vs. 2)", SIGABRT. A crash cannot be recorded, so it is refused first.
LEGACY_PALLAS_REFUSAL = (
    "attention kernel 'pallas' compiles for TPU with current JAX only: jax 0.4.30's libtpu (0.0.1) aborts the "
    "process in Mosaic (bench/tpu_aot/compile.py); use the requirements/tpu.txt environment"
)


def check_kernels(variants: Iterable[Variant]) -> None:
    """Each variant's attention kernel compiles for TPU with this JAX (kernels.attention), or a one-line
    ConfigError, before any compile: cudnn runs on GPU only, xla needs a JAX with dot_product_attention's
    implementation, pallas current JAX (LEGACY_PALLAS_REFUSAL). Whether Mosaic then takes a Pallas kernel is the
    TPU generation's to say (compiler_refusal_fields)."""
    from bench.tpu_aot.env import installed_jax_is_legacy
    from model.config import check_kernel_runs

    for variant in variants:
        try:
            check_kernel_runs(variant.attention_kernel, "tpu")
            if variant.attention_kernel is AttentionKernel.pallas and installed_jax_is_legacy():
                raise ConfigError(LEGACY_PALLAS_REFUSAL)
        except ConfigError as refusal:
            raise ConfigError(f"{variant.name}: {refusal}") from None


def run_aot(
    preset: Preset,
    variants: list[Variant],
    mesh: Mesh,
    topology: str,
    out: Path,
    resume: bool,
    cache: CompileCache | None = None,
    extrapolate: bool = True,
) -> int:
    """Compile each variant; returns the number that failed for a reason other than a finding (``is_finding``:
    out of HBM, or a kernel the compiler refuses on this generation; both recorded)."""
    import jax

    from bench.tpu_aot.env import topology_devices

    check_kernels(variants)
    devices = topology_devices(topology)
    check_mesh(mesh, len(devices), topology)
    done = finished_keys(out) if resume else set()
    failures = 0
    for variant in variants:
        if record_key(failed_record(variant, preset, mesh, Scope.MODEL, 0, jax.__version__, None)) in done:
            print(f"skip {variant.name}: already recorded ok in {out}", file=sys.stderr)
            continue
        start = time.perf_counter()
        record = compile_record(preset, variant, mesh, topology, devices, cache, extrapolate)
        append_record(out, record)
        failures += record["status"] != Status.OK.value and not is_finding(record)
        _print(record, time.perf_counter() - start)
    return failures


MP_ALLREDUCE_BYTES = comm_key("mp", CollectiveKind.ALL_REDUCE, "bytes")


def _print(record: dict[str, Any], seconds: float) -> None:
    if record.get("refused_by_compiler"):
        print(
            f"{record['variant']}: refused by the compiler: {record['compiler_refusal']} ({seconds:.0f} s)",
            file=sys.stderr,
        )
        return
    if record["status"] != Status.OK.value:
        print(f"{record['variant']}: FAILED {record['error']} ({seconds:.0f} s)", file=sys.stderr)
        return
    gib = 2**30
    print(
        f"{record['variant']}: peak {record.get('mem_peak_estimate_bytes_per_device', 0) / gib:.2f} GiB per device "
        f"(fits: {record.get('fits_hbm')}), mp all-reduce {record.get(MP_ALLREDUCE_BYTES, 0) / gib:.2f} GiB, "
        f"XLA {record.get('xla_flops_per_step_total') or 0:.3e} FLOP/step, {seconds:.0f} s",
        file=sys.stderr,
    )
