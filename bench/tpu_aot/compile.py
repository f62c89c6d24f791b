"""Compile variants for a real TPU topology with no TPU present, and record what the TPU compiler says.

Records are of kind ``tpu-aot`` (backend ``tpu``): per-device memory (does the step fit the core's HBM, with what
headroom?), XLA's FLOP and HBM-byte counts, and the HLO communication volume through the same parser as measured
runs. Nothing is timed. Must run in a process whose JAX has not started: the compile-only environment of
libtpu is set first (bench.tpu_aot.env).
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.analysis.hlo import CollectiveKind
from bench.records.schema import RecordKind, Status, comm_key
from bench.records.store import append_record, finished_keys
from model.config import ConfigError, Mesh, Preset, Scope, Variant

# XLA counts a while-loop body once. Layer scans are kept (a 28-layer unrolled compile is slow), and the
# whole-step counts are extrapolated from unrolled 1- and 2-layer compiles: every layer is the same, so a
# count is affine in the layer count.
EXTRAPOLATION = "affine in layers, from unrolled 1- and 2-layer compiles"


def check_mesh(mesh: Mesh, device_count: int, topology: str) -> None:
    if mesh.devices != device_count:
        raise ConfigError(
            f"mesh {mesh} has {mesh.devices} devices but topology {topology} has {device_count}; "
            f"valid meshes have dp x mp = {device_count} (e.g. dp={device_count // 8},mp=8)"
        )


def _compile(preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any]) -> tuple[Any, Any, Any, Any]:
    from bench.measure.prepare import build_program_for_devices
    from bench.tpu_aot.env import compile_with_optimized_hlo
    from model.strategies import make_driver

    program = build_program_for_devices(preset, variant, mesh, Scope.MODEL, len(devices))
    driver = make_driver(variant.strategy, program, mesh, devices)
    lowered = driver.train_step().lower(*driver.abstract_args())
    compiled, hlo_text = compile_with_optimized_hlo(lowered)
    return compiled, hlo_text, driver, program


def _costs(compiled: Any) -> tuple[float | None, float | None]:
    from model.compat import cost_analysis

    costs = cost_analysis(compiled) or {}
    return costs.get("flops"), costs.get("bytes accessed")


def extrapolated_costs(preset: Preset, variant: Variant, mesh: Mesh, devices: list[Any]) -> dict[str, Any]:
    """Per-step FLOPs and HBM bytes summed over devices, for the preset's layer count."""
    per_layers = {}
    for layers in (1, 2):
        model = dataclasses.replace(preset.model, n_layers=layers, unroll_layers=True)
        compiled, *_ = _compile(dataclasses.replace(preset, model=model), variant, mesh, devices)
        per_layers[layers] = _costs(compiled)
    total_layers = preset.model.n_layers
    fields: dict[str, Any] = {"xla_flops_source": EXTRAPOLATION}
    for index, key in enumerate(("xla_flops_per_step", "xla_bytes_accessed_per_step")):
        one, two = per_layers[1][index], per_layers[2][index]
        per_device = None if one is None or two is None else one + (total_layers - 1) * (two - one)
        fields[key] = None if per_device is None else per_device * mesh.devices
    return fields


def compile_record(preset: Preset, variant: Variant, mesh: Mesh, topology: str, devices: list[Any]) -> dict[str, Any]:
    from bench.hardware.table import accelerator_for_topology, peak_bases
    from bench.measure.peaks import peak_basis_fields
    from bench.measure.prepare import analyse, xla_to_hardware_flops_ratio
    from bench.records.context import base_record, environment

    record = base_record(variant, preset, mesh, Scope.MODEL, repeat=0, kind=RecordKind.TPU_AOT)
    # this process runs on the host (its default backend is cpu); the record describes the TPU compiled for
    record.update(environment(), backend="tpu", topology=topology, device_kind=devices[0].device_kind)
    try:
        start = time.perf_counter()
        compiled, hlo_text, driver, program = _compile(preset, variant, mesh, devices)
        record["compile_s"] = time.perf_counter() - start
        record.update(analyse(compiled, driver, program, hlo_text))
        record.update(extrapolated_costs(preset, variant, mesh, devices))
        record["xla_to_hardware_flops_ratio"] = xla_to_hardware_flops_ratio(record)
        accelerator = accelerator_for_topology(topology)
        hbm = accelerator.hbm_bytes_per_device
        record["hbm_bytes_per_device"] = hbm
        peak = record.get("mem_peak_estimate_bytes")
        if hbm is not None and peak is not None:
            record["fits_hbm"] = peak <= hbm
            record["hbm_headroom_bytes"] = hbm - peak
        # the topology's row, as the projection reads it (bench.hardware.projection.project)
        record.update(peak_basis_fields(accelerator.device_kind_patterns[0], peak_bases(accelerator)))
        record["status"] = Status.OK.value
    except Exception as error:  # recorded, and the next variant still compiles
        record["error"] = f"{type(error).__name__}: {error}"
        record.update(out_of_memory_fields(str(error)))
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
        "oom_required_bytes": float(found.group(1)) * gib,
        "oom_available_hbm_bytes": float(found.group(2)) * gib,
    }


def run_aot(preset: Preset, variants: list[Variant], mesh: Mesh, topology: str, out: Path, resume: bool) -> int:
    """Compile each variant; returns the number that failed for a reason other than not fitting in HBM (that
    verdict is a result, recorded with the compiler's figures)."""
    import jax

    from bench.tpu_aot.env import topology_devices

    devices = topology_devices(topology)
    check_mesh(mesh, len(devices), topology)
    done = finished_keys(out) if resume else set()
    failures = 0
    for variant in variants:
        if (variant.name, 0, jax.__version__) in done:
            print(f"skip {variant.name}: already recorded ok in {out}", file=sys.stderr)
            continue
        start = time.perf_counter()
        record = compile_record(preset, variant, mesh, topology, devices)
        append_record(out, record)
        failures += record["status"] != Status.OK.value and record.get("fits_hbm") is not False
        _print(record, time.perf_counter() - start)
    return failures


MP_ALLREDUCE_BYTES = comm_key("mp", CollectiveKind.ALL_REDUCE, "bytes")


def _print(record: dict[str, Any], seconds: float) -> None:
    if record["status"] != Status.OK.value:
        print(f"{record['variant']}: FAILED {record['error']} ({seconds:.0f} s)", file=sys.stderr)
        return
    gib = 2**30
    print(
        f"{record['variant']}: peak {record.get('mem_peak_estimate_bytes', 0) / gib:.2f} GiB per device "
        f"(fits: {record.get('fits_hbm')}), mp all-reduce {record.get(MP_ALLREDUCE_BYTES, 0) / gib:.2f} GiB, "
        f"XLA {record.get('xla_flops_per_step') or 0:.3e} FLOP/step, {seconds:.0f} s",
        file=sys.stderr,
    )
