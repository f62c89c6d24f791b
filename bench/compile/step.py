"""Build one variant's training step, lower and compile it, and read the compiler's own figures.

``analyse`` reads a compiled step: its HLO collectives against the analytic model (the verdict is
bench.analysis.verdict's), its memory analysis and the analytic FLOPs per step; ``xla_flops_of`` and
``xla_flops_fields`` give XLA's own FLOP count. bench.measure.prepare compiles and runs the step on this process's
devices; bench.tpu_aot.compile compiles it for a TPU topology.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import jax
import numpy as np

from bench.analysis import comm, flops, hlo
from bench.analysis.expected import FsdpParams, expected_comm
from bench.analysis.verdict import comm_verdict, wide_collectives
from model import compat
from model.config import Layout, Mesh, Preset, Remat, Variant, validate_run
from model.program import Program, Scope, count_params
from model.sharding import DP, param_axes
from model.strategies import Driver, make_driver


def build_program(preset: Preset, variant: Variant, mesh: Mesh, scope: Scope) -> Program:
    """Validates the run on this process's devices (before anything compiles) and returns its program."""
    return build_program_for_devices(preset, variant, mesh, scope, len(jax.devices()), jax.default_backend())


def build_program_for_devices(
    preset: Preset, variant: Variant, mesh: Mesh, scope: Scope, devices: int, platform: str | None = None
) -> Program:
    """``platform`` None: compiled for another platform than JAX's (tpu-aot), so the kernel is not checked here."""
    cfg = validate_run(preset, variant, mesh, devices, scope, platform)
    return Program.from_preset(preset, cfg, scope)


def lower(driver: Driver, program: Program) -> tuple[Any, tuple[Any, Any], Any]:
    params = driver.place_params(program.init_params())
    state = (params, driver.init_opt_state(params))
    batch = driver.place_batch(program.example_batch())
    return driver.train_step().lower(*state, batch), state, batch


def local_grad_bytes(driver: Driver, program: Program, dtype: Any = None) -> int:
    """Bytes of one device's gradient shards as the step's one dp reduction carries them, from the sharding table:
    in the parameters' dtype, or in the sum's (``grad_accum_dtype``) where micro-batches are accumulated
    (model.program.accumulate returns the mean in it); or in ``dtype`` where given."""
    summed = np.dtype(program.grad_accum_dtype.value) if program.grad_accum > 1 else None
    summed = np.dtype(dtype) if dtype is not None else summed
    total = 0
    for _, shape, spec in _param_leaves(driver, program):
        if DP in spec:  # FSDP: reduce-scattered where it is made, not in the dp all-reduce
            continue
        elements = int(np.prod(shape.shape))
        shards = int(np.prod([driver.mesh.shape[a] for a in spec if a is not None]))
        total += elements // shards * (summed or shape.dtype).itemsize
    return total


def _param_leaves(driver: Driver, program: Program) -> list[tuple[str, Any, Any]]:
    """(leaf name, global shape, PartitionSpec) of every parameter."""
    specs = driver.param_specs
    with_paths = jax.tree_util.tree_leaves_with_path(program.param_shapes())
    flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
    return [(path[-1].key, shape, spec) for (path, shape), spec in zip(with_paths, flat_specs)]


def fsdp_params(driver: Driver, program: Program) -> FsdpParams | None:
    """The FSDP layout's dp-split parameters as the analytic model counts them (None in Megatron's layout)."""
    if driver.layout is Layout.MEGATRON:
        return None
    itemsize = np.dtype(program.cfg.compute_dtype.value).itemsize
    counts = {True: [0, 0], False: [0, 0]}  # stacked block parameter? -> [gathers, bytes]
    for leaf, shape, spec in _param_leaves(driver, program):
        if DP not in spec:
            continue
        stacked = param_axes(leaf, len(shape.shape))[0] == "layers"
        mp_shards = int(np.prod([driver.mesh.shape[a] for a in spec if a not in (None, DP)]))
        counts[stacked][0] += shape.shape[0] if stacked else 1
        counts[stacked][1] += int(np.prod(shape.shape)) // mp_shards * itemsize
    return FsdpParams(*counts[True], *counts[False])


def mesh_ids(driver: Driver) -> np.ndarray:
    """Each mesh position's index into the program's device list, in the mesh's shape: what the HLO's replica
    groups name, for labelling collectives by mesh axis (bench.analysis.hlo.parse_collectives)."""
    return np.arange(driver.mesh.devices.size).reshape(driver.mesh.devices.shape)


def analyse(compiled: Any, driver: Driver, program: Program, hlo_text: str | None = None) -> dict[str, Any]:
    """The compiled step's collectives (and their agreement with the analytic model), memory, and analytic FLOPs
    per step. ``hlo_text`` replaces ``compiled.as_text()`` where that loses information (see
    bench.tpu_aot.env.compile_with_optimized_hlo)."""
    fields: dict[str, Any] = {}
    text = compiled.as_text() if hlo_text is None else hlo_text
    collectives = hlo.parse_collectives(text, mesh_ids(driver), ("dp", "mp"))
    fields.update(comm.summarize(collectives, ("dp", "mp")))
    fields["comm_empty_groups"] = any(c.empty_groups for c in collectives)
    fields.update(wide_collectives(collectives, program.cfg.compute_dtype.value))
    fields.update(memory_fields(compiled))
    expected = expected_comm(
        program.cfg,
        driver.mesh_shape,
        program.scope,
        program.batch,
        program.seq,
        local_grad_bytes(driver, program),
        program.grad_accum,
        local_grad_bytes(driver, program, program.cfg.compute_dtype.value),
        fsdp_params(driver, program),
    )
    fields.update(expected.as_record_fields())
    fields.update(comm_verdict(fields, expected, program.cfg.compute_dtype.value))
    fields.update(static_flop_fields(program))
    return fields


def memory_fields(compiled: Any) -> dict[str, Any]:
    try:
        stats = compiled.memory_analysis()
    except Exception as error:  # some backends do not implement it
        warnings.warn(f"no memory analysis: {error}", stacklevel=2)
        return {}
    if stats is None:
        return {}
    fields = {
        "mem_argument_bytes_per_device": stats.argument_size_in_bytes,
        "mem_output_bytes_per_device": stats.output_size_in_bytes,
        "mem_temp_bytes_per_device": stats.temp_size_in_bytes,
        "mem_alias_bytes_per_device": stats.alias_size_in_bytes,
        "mem_generated_code_bytes_per_device": stats.generated_code_size_in_bytes,
    }
    # Arguments and outputs are live together except where donated outputs alias their arguments.
    fields["mem_peak_estimate_bytes_per_device"] = (
        stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes + stats.temp_size_in_bytes
    )
    return fields


def xla_flops_fields(preset: Preset, variant: Variant, mesh: Mesh, scope: Scope) -> dict[str, Any]:
    """XLA's FLOP count from a second compile with the layer scan and the micro-batch loop unrolled (XLA counts a
    loop body once).

    The compiled per-device count is summed over devices. Where the compiled count is unusable (jax 0.4.30 on
    CPU turns matmuls into oneDNN custom calls it counts as -1), the pre-partitioning count of the lowered
    program is used, and ``xla_flops_source`` says so.
    """
    unrolled = dataclasses.replace(
        preset, model=dataclasses.replace(preset.model, unroll_layers=True), unroll_accum=True
    )
    program = build_program(unrolled, variant, mesh, scope)
    driver = make_driver(variant.strategy, program, mesh, layout=variant.layout)
    lowered = driver.train_step().lower(*driver.abstract_args())
    return xla_flops_of(lowered.compile(), lowered, mesh)


def xla_flops_of(compiled: Any, lowered: Any, mesh: Mesh) -> dict[str, Any]:
    per_device = flops.compiled_flops(compiled.as_text(), compat.cost_analysis(compiled))
    if per_device is not None:
        return {
            "xla_flops_per_step_total": per_device * mesh.devices,
            "xla_flops_source": "compiled, summed over devices",
        }
    whole = flops.xla_flops_total(compat.cost_analysis(lowered))
    return {"xla_flops_per_step_total": whole, "xla_flops_source": "lowered (before partitioning)"}


def static_flop_fields(program: Program) -> dict[str, Any]:
    """Analytic FLOPs per step (formulas in bench.flops), over the tokens of every micro-batch. (The AdamW
    update, once per step, is elementwise and left out of these formulas, as in GPT-J's own count.)"""
    cfg = program.cfg
    n_params = count_params(program.param_shapes())
    layers = cfg.n_layers if program.scope is Scope.MODEL else 1
    tokens = program.tokens_per_step
    args = (n_params, layers, cfg.attention_width, program.seq, tokens)
    # the block scope runs layer 0's block, which attends globally
    local = dict(local_layers=cfg.n_local_layers, local_window=cfg.local_attention_window)
    local = local if program.scope is Scope.MODEL else {}
    return {
        "n_params": n_params,
        "tokens_per_step": tokens,
        "flops_6n_per_step_total": flops.flops_6n(n_params, tokens),
        "model_flops_per_step_total": flops.model_flops(*args, **local),
        "hardware_flops_per_step_total": flops.hardware_flops(*args, remat=cfg.remat is Remat.FULL, **local),
    }
