"""Build one variant's training step, compile it, and read the compiler's own figures; nothing here is timed.

``prepare`` validates the run, compiles the step once and ``analyse``s it: HLO collectives against the analytic
model, memory analysis, analytic and XLA FLOPs per step. ``Prepared.step`` runs one step and waits for every
output; bench.measure.pipeline times it and builds the record. ``bench run``, the pytest-benchmark suite
(tests/test_benchmarks.py) and the TPU compile-only runs (bench.tpu_aot.compile) share this code.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from bench.analysis import comm, flops, hlo
from bench.analysis.expected import ExpectedComm, FsdpParams, expected_comm
from bench.records.schema import comm_key
from model import compat
from model.config import Layout, Mesh, Preset, Remat, Variant, validate_run
from model.program import Program, Scope, count_params
from model.sharding import DP, param_axes
from model.strategies import Driver, make_driver


@dataclass
class Prepared:
    variant: Variant
    preset: Preset
    mesh: Mesh
    scope: Scope
    program: Program
    driver: Driver
    compiled: Any
    state: tuple[Any, Any]
    batch: Any
    compile_s: float
    analysis: dict[str, Any]
    last_loss: Any = None

    def step(self) -> None:
        params, opt_state, loss = self.compiled(*self.state, self.batch)
        jax.block_until_ready((params, opt_state, loss))
        self.state, self.last_loss = (params, opt_state), loss

    @property
    def loss(self) -> float:
        return float(np.asarray(self.last_loss).reshape(-1)[0])


def build_program(preset: Preset, variant: Variant, mesh: Mesh, scope: Scope) -> Program:
    """Validates the run on this process's devices (before anything compiles) and returns its program."""
    return build_program_for_devices(preset, variant, mesh, scope, len(jax.devices()), jax.default_backend())


def build_program_for_devices(
    preset: Preset, variant: Variant, mesh: Mesh, scope: Scope, devices: int, platform: str | None = None
) -> Program:
    """``platform`` None: compiled for another platform than JAX's (tpu-aot), so the kernel is not checked here."""
    cfg = validate_run(preset, variant, mesh, devices, scope, platform)
    return Program.from_preset(preset, cfg, scope)


def _lower(driver: Driver, program: Program) -> tuple[Any, tuple[Any, Any], Any]:
    params = driver.place_params(program.init_params())
    state = (params, driver.init_opt_state(params))
    batch = driver.place_batch(program.example_batch())
    return driver.train_step().lower(*state, batch), state, batch


def prepare(preset: Preset, variant: Variant, mesh: Mesh, scope: Scope = Scope.MODEL) -> Prepared:
    program = build_program(preset, variant, mesh, scope)
    driver = make_driver(variant.strategy, program, mesh, layout=variant.layout)
    lowered, state, batch = _lower(driver, program)
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    analysis = analyse(compiled, driver, program)
    no_accum_loop = program.grad_accum == 1 or program.unroll_accum
    if (program.cfg.unroll_layers or scope is Scope.BLOCK) and no_accum_loop:  # no loop: the compiled count is complete
        analysis.update(xla_flops_of(compiled, lowered, mesh))
    else:
        analysis.update(xla_flops_fields(preset, variant, mesh, scope))
    analysis["xla_to_hardware_flops_ratio"] = xla_to_hardware_flops_ratio(analysis)
    return Prepared(variant, preset, mesh, scope, program, driver, compiled, state, batch, compile_s, analysis)


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
    fields.update(_wide_collectives(collectives, program))
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


def _wide_collectives(collectives: list[hlo.Collective], program: Program) -> dict[str, Any]:
    """Collectives carried in a wider float than the compute dtype (an f32 all-reduce in a bf16 step)."""
    compute_bits = np.dtype(program.cfg.compute_dtype.value).itemsize * 8
    wide = sorted(
        {
            f"{c.kind.value} {dtype} on {c.mesh_axis}"
            for c in collectives
            for dtype in c.dtypes
            if dtype.startswith("f") and hlo.DTYPE_BITS.get(dtype, 0) > compute_bits and c.mesh_axis == "mp"
        }
    )
    return {"comm_wider_than_compute": wide}


def comm_verdict(
    fields: dict[str, Any], expected: ExpectedComm, compute_dtype: str = "the compute dtype"
) -> dict[str, Any]:
    """Whether the HLO's all-reduces agree with the analytic model, each disagreement as one sentence; and, apart
    from those, notes on how XLA combined, widened or exactly narrowed ops (bench.analysis.expected says which
    narrowings change no result)."""
    all_reduce = hlo.CollectiveKind.ALL_REDUCE
    found_count = int(fields.get(comm_key("mp", all_reduce, "tensors"), 0))
    combined = found_count - int(fields.get(comm_key("mp", all_reduce, "count"), 0))
    found_bytes = int(fields.get(comm_key("mp", all_reduce, "bytes"), 0))
    found_dp = int(fields.get(comm_key("dp", all_reduce, "bytes"), 0))
    want_count = expected.mp_layer_allreduce_count + expected.mp_other_allreduce_count
    want_bytes = expected.mp_layer_allreduce_bytes + expected.mp_other_allreduce_bytes
    differences, notes = [], []
    compute = compute_dtype
    if found_count != want_count:
        differences.append(f"mp all-reduce count {found_count} in the HLO, {want_count} expected")
    if found_bytes == want_bytes - expected.mp_narrowed_max_bytes != want_bytes:
        notes.append(
            f"XLA carries the loss's max all-reduce in {compute} (exact for a max of {compute} logits): "
            f"{expected.mp_narrowed_max_bytes} bytes fewer than f32"
        )
    elif found_bytes != want_bytes:
        differences.append(f"mp all-reduce payload {found_bytes} bytes in the HLO, {want_bytes} expected")
    if expected.dp_grad_allreduce_bytes_in_compute_dtype <= found_dp < expected.dp_grad_allreduce_bytes:
        notes.append(
            f"XLA reduces the gradients over dp in {compute}, before widening them to the parameters' dtype "
            f"({found_dp} bytes, not {expected.dp_grad_allreduce_bytes}): one micro-step, so no accumulation buffer"
        )
    elif found_dp < expected.dp_grad_allreduce_bytes:
        differences.append(
            f"dp all-reduce payload {found_dp} bytes, below the {expected.dp_grad_allreduce_bytes} gradient bytes"
        )
    if expected.dp_scatter_count:
        _fsdp_verdict(fields, expected, differences, notes)
    if combined:
        notes.append(f"XLA combined mp all-reduces into tuple all-reduces: {combined} fewer ops than arrays reduced")
    notes += [
        f"XLA carries {wide} in a wider float than the compute dtype" for wide in fields["comm_wider_than_compute"]
    ]
    return {"comm_matches_model": not differences, "comm_differences": differences, "comm_notes": notes}


def _fsdp_verdict(fields: dict[str, Any], expected: ExpectedComm, differences: list[str], notes: list[str]) -> None:
    """FSDP's dp collectives against the model: every gradient reduce-scattered once per micro-step; the gathers
    between the fewest and the most a compiler may make (bench.analysis.expected)."""
    scatter, gather = hlo.CollectiveKind.REDUCE_SCATTER, hlo.CollectiveKind.ALL_GATHER
    found = {m: int(fields.get(comm_key("dp", scatter, m), 0)) for m in ("tensors", "bytes")}
    missing = expected.dp_scatter_bytes - found["bytes"]
    extra_allreduce = int(fields.get(comm_key("dp", hlo.CollectiveKind.ALL_REDUCE, "bytes"), 0))
    extra_allreduce -= expected.dp_grad_allreduce_bytes
    if found["tensors"] < expected.dp_scatter_count and 0 < missing <= extra_allreduce:
        # libtpu does this for the small ones (LayerNorm, biases; v3, shard_map) and XLA's partitioner for all
        # under pjit: the same sum, at 2(n-1)/n x S on the wire instead of (n-1)/n x S (bench.analysis.comm)
        notes.append(
            f"XLA reduces {expected.dp_scatter_count - found['tensors']} of the {expected.dp_scatter_count} FSDP "
            f"gradients over dp by all-reduce, not reduce-scatter ({missing} bytes; the dp all-reduce carries them, "
            f"at twice a reduce-scatter's wire bytes)"
        )
    elif (found["tensors"], found["bytes"]) != (expected.dp_scatter_count, expected.dp_scatter_bytes):
        differences.append(
            f"dp reduce-scatter {found['tensors']} arrays, {found['bytes']} bytes in the HLO; "
            f"{expected.dp_scatter_count} arrays, {expected.dp_scatter_bytes} bytes expected"
        )
    gathers = int(fields.get(comm_key("dp", gather, "tensors"), 0))
    low, high = expected.dp_gather_count_min, expected.dp_gather_count_max
    if not low <= gathers <= high:
        differences.append(f"dp all-gather {gathers} arrays in the HLO, {low} to {high} expected")
    elif gathers == expected.dp_gather_count:
        found_bytes = int(fields.get(comm_key("dp", gather, "bytes"), 0))
        if found_bytes != expected.dp_gather_bytes:
            differences.append(
                f"dp all-gather payload {found_bytes} bytes in the HLO, {expected.dp_gather_bytes} expected"
            )
    else:
        notes.append(
            f"XLA gathers over dp {gathers} times, the model once per micro-step and parameter "
            f"({expected.dp_gather_count}): between the fewest (gathers hoisted out of the micro-batch loop, {low}) "
            f"and the most (the recomputed forward gathering again, {high})"
        )


def memory_fields(compiled: Any) -> dict[str, Any]:
    try:
        stats = compiled.memory_analysis()
    except Exception as error:  # some backends do not implement it
        warnings.warn(f"no memory analysis: {error}", stacklevel=2)
        return {}
    if stats is None:
        return {}
    fields = {
        "mem_argument_bytes": stats.argument_size_in_bytes,
        "mem_output_bytes": stats.output_size_in_bytes,
        "mem_temp_bytes": stats.temp_size_in_bytes,
        "mem_alias_bytes": stats.alias_size_in_bytes,
        "mem_generated_code_bytes": stats.generated_code_size_in_bytes,
    }
    # Arguments and outputs are live together except where donated outputs alias their arguments.
    fields["mem_peak_estimate_bytes"] = (
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
        return {"xla_flops_per_step": per_device * mesh.devices, "xla_flops_source": "compiled, summed over devices"}
    whole = flops.xla_flops_total(compat.cost_analysis(lowered))
    return {"xla_flops_per_step": whole, "xla_flops_source": "lowered (before partitioning)"}


def xla_to_hardware_flops_ratio(fields: dict[str, Any]) -> float | None:
    """XLA's FLOP count over the analytic hardware FLOPs, both per step; None where XLA gave no count."""
    xla = fields.get("xla_flops_per_step")
    return xla / fields["hardware_flops_per_step"] if xla else None


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
        "flops_6n_per_step": flops.flops_6n(n_params, tokens),
        "model_flops_per_step": flops.model_flops(*args, **local),
        "hardware_flops_per_step": flops.hardware_flops(*args, remat=cfg.remat is Remat.FULL, **local),
    }
