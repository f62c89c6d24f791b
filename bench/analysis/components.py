"""Why a step takes its time: each op of optimized HLO attributed to a GPT-J block component, and priced.

``attribute(hlo_text)`` gives one ``OpCost`` per instruction that runs (fusions, dots, copies, collectives, ...)
in every computation that executes: ENTRY, loop bodies and conditions, branches, called and async-wrapped
computations, each counted as many times as one run of ENTRY executes it (trip counts as ``bench.analysis.hlo``
finds them). Fused and reducer computations are not ops of their own: their work belongs to the fusion or
reduction that calls them. Free ops (parameters, tuples, bitcasts, constants, loop control, async done halves,
buffer allocations) get no entry.

The component comes from the name scopes that ``model/gptj.py`` and ``model/program.py`` open (``SCOPES``) and
that JAX writes into each instruction's ``metadata={op_name=...}`` (e.g.
``jit(step)/transpose(jvp(layer_stack))/closed_call/checkpoint/block/residual/attn/qkv_proj/dot_general``): the
innermost scope of the table wins. A fusion takes the component of its largest dot or convolution when it holds
one (on TPU a matmul fusion carries its prologue and epilogue), else its own op_name's, else the most common
component among the instructions inside it (XLA names a fusion after its root, which may be an unscoped
``apply_updates`` add fused with AdamW's ops). An op with no usable op_name at all takes its neighbours'
component and is marked ``inferred`` (see ``_with_neighbours``). Collectives are "collective <mesh axis>", the axis from
``bench.analysis.hlo.parse_collectives``. Anything no rule matches is "unattributed", by name.

Each op is priced at max(FLOPs / peak, bytes / HBM bandwidth): the per-op roofline that the TPU compiler's
``optimal_seconds`` sums (checked against libtpu's cost analysis: tests/test_components.py). FLOPs are
those of dots and convolutions (2 x output elements x contracted size, from the HLO shapes and dimension
numbers); elementwise arithmetic runs on the vector units and is priced by its bytes. Bytes are operand plus
result bytes of the op as printed, but counted as XLA's cost analysis counts them where an op touches part of an
array: a (dynamic-)slice, or a fusion's operand read only through slices, counts the slices' bytes, and an in-place
dynamic-update-slice (alone or as a fusion's output) its update's, not its whole buffer's. A
collective is priced here as HBM traffic only, as the compiler's model does; its wire time is a separate
estimate. Every figure this module gives is an estimate from the HLO, not a measurement, except
``breakdown_from_profile``'s, which sums measured op self times.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from bench.analysis.hlo import (
    Collective,
    HloComputation,
    HloInstruction,
    HloModule,
    array_dims,
    called_computations,
    computation_multipliers,
    op_name,
    operand_name,
    operand_shapes,
    parse_collectives,
    parse_module,
    shape_bytes,
)
from bench.analysis.profile import OpRow, is_collective
from bench.records.collectives import collective_opcode


class Component(enum.Enum):
    """The parts of a training step the report explains a difference by."""

    QKV_PROJ = "qkv_proj"  # the q, k and v projections
    OUT_PROJ = "out_proj"  # attention's output projection
    ATTN_SCORES = "attn_scores"  # the [B, H, T, T] scores, their scale, causal mask and softmax
    ATTN_VALUES = "attn_values"  # attention weights times values
    FF_IN = "ff_in"
    FF_OUT = "ff_out"
    ELEMENTWISE = "elementwise"  # LayerNorm, rotary, GELU and biases, residual adds, layer-stack slicing
    EMBED_LM_HEAD_LOSS = "embed_lm_head_loss"
    OPTIMIZER = "optimizer"  # gradient accumulation and the AdamW update
    COLLECTIVE = "collective"  # labelled by mesh axis: "collective mp"
    UNATTRIBUTED = "unattributed"


class Basis(enum.Enum):
    """Where a breakdown's seconds come from; the report prints it beside the numbers."""

    ROOFLINE = "projection: per-op roofline from the HLO"
    MEASURED = "measured: profiler op self time"


# The named scopes of model/gptj.py and model/program.py, and the haiku module names, that decide a component.
SCOPES: Mapping[str, Component] = {
    "qkv_proj": Component.QKV_PROJ,
    "out_proj": Component.OUT_PROJ,
    "attn_core": Component.ATTN_SCORES,  # all of causal_attention except its second einsum (below)
    # kernels/flash.py's own scopes inside attn_core (blockwise, and pallas's backward): the innermost one decides
    "attn_scores": Component.ATTN_SCORES,
    "attn_values": Component.ATTN_VALUES,
    "ff_in": Component.FF_IN,
    "ff_out": Component.FF_OUT,
    "layer_norm": Component.ELEMENTWISE,
    "rotary": Component.ELEMENTWISE,
    "gelu": Component.ELEMENTWISE,
    "residual": Component.ELEMENTWISE,
    "layer_stack": Component.ELEMENTWISE,
    "embed": Component.EMBED_LM_HEAD_LOSS,
    "lm_head": Component.EMBED_LM_HEAD_LOSS,
    "loss": Component.EMBED_LM_HEAD_LOSS,
    "optimizer": Component.OPTIMIZER,
}
# The attention-times-values einsums of kernels whose code has no scope of ours: JAX names the scope of an einsum's
# ops by its subscripts, and their autodiff transposes keep the name. kernels/attention.py's reference, and
# jax.nn.dot_product_attention(implementation="xla") (jax/_src/nn/functions.py, _dot_product_attention_core).
ATTN_VALUES_EINSUMS = frozenset({"bhts,bshk->bthk", "BNTS,BSNH->BTNH"})

UNATTRIBUTED = Component.UNATTRIBUTED.value
# Ops that move no data and do no arithmetic of their own (their callees, if any, are attributed themselves).
_FREE_OPCODES = frozenset(
    {
        "parameter", "constant", "tuple", "get-tuple-element", "bitcast", "while", "conditional", "call",
        "partition-id", "replica-id", "after-all", "opt-barrier", "add-dependency", "async-start", "async-update",
        "async-done", "domain",
    }
)  # fmt: skip
# Attributes naming computations that run as computations of their own (not fused, not a reducer).
_EXECUTED_CALLS = {"while": ("body", "condition"), "conditional": ("branch_computations", "true_computation",
                   "false_computation"), "call": ("to_apply",), "async-start": ("calls",)}  # fmt: skip
# Custom calls that only reserve memory: libtpu's scanned layer stacks allocate their stacked buffers this way, and no
# byte moves until an op writes into them.
_ALLOCATIONS = ("AllocateBuffer",)
_MATMUL_OPCODES = ("dot", "convolution")
_ONEDNN_MATMUL = "__onednn$matmul"
_VIEW_OPCODES = ("bitcast", "get-tuple-element")  # look through these to the ops an op really reads or feeds
_WRAPPER = re.compile(r"^[\w\-]+\((.*)\)$")


@dataclasses.dataclass(frozen=True)
class OpCost:
    """One op of optimized HLO with its component and its work per execution."""

    name: str  # instruction name, without "%"
    computation: str
    opcode: str
    op_name: str | None  # the metadata op_name the component was read from
    component: Component
    mesh_axis: str | None  # collectives only: "mp", "dp", "dp+mp", "none"; None elsewhere or without a mesh
    flops: int  # per execution: dots and convolutions
    bytes: int  # per execution: operand + result bytes
    multiplier: int  # executions per run of ENTRY
    inferred: bool = False  # the component came from the op's neighbours, not its own op_name

    @property
    def label(self) -> str:
        """The breakdown key: the component's value, or "collective <axis>" for a collective."""
        if self.component is Component.COLLECTIVE and self.mesh_axis is not None:
            return f"{Component.COLLECTIVE.value} {self.mesh_axis}"
        return self.component.value

    def seconds(self, peak_flops_per_s: float, hbm_bytes_per_s: float) -> float:
        """Per-op roofline time for every execution in one step."""
        return self.multiplier * max(self.flops / peak_flops_per_s, self.bytes / hbm_bytes_per_s)


@dataclasses.dataclass(frozen=True)
class Breakdown:
    """Seconds per component label; "unattributed" is always present."""

    basis: Basis
    seconds: Mapping[str, float]

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


@dataclasses.dataclass(frozen=True)
class Reconciliation:
    """A breakdown set against a whole-step estimate: within tolerance, or the rest shown as unattributed."""

    breakdown: Breakdown  # when outside tolerance, "unattributed" carries whole - sum (negative: over-count)
    whole_step_s: float
    components_s: float  # the sum before any rest was added
    within_tolerance: bool


# --- op names -----------------------------------------------------------------------------------


def scope_names(name: str) -> list[str]:
    """The scopes of an op_name, outermost first, with JAX's transform wrappers unwrapped:
    "jit(step)/transpose(jvp(ln_f))/layer_norm/mul" -> ["step", "ln_f", "layer_norm", "mul"]."""
    names = []
    for segment in name.split("/"):
        while (wrapped := _WRAPPER.match(segment)) and wrapped.group(1):
            segment = wrapped.group(1)
        if not _WRAPPER.match(segment):
            names.append(segment)
    return names


def component_of(name: str | None) -> Component | None:
    """The component an op_name's innermost known scope names, or None."""
    for scope in reversed(scope_names(name or "")):
        if scope in ATTN_VALUES_EINSUMS:
            return Component.ATTN_VALUES
        if scope in SCOPES:
            return SCOPES[scope]
    return None


# --- FLOPs and bytes ----------------------------------------------------------------------------


def _dims_attribute(instruction: HloInstruction, key: str) -> tuple[int, ...]:
    return tuple(int(d) for d in re.findall(r"\d+", instruction.attributes.get(key, "")))


def _is_matmul(instruction: HloInstruction) -> bool:
    return instruction.opcode in _MATMUL_OPCODES or (
        instruction.opcode == "custom-call" and _ONEDNN_MATMUL in instruction.attributes.get("custom_call_target", "")
    )


def matmul_flops(instruction: HloInstruction, computation: HloComputation) -> int:
    """2 x output elements x contracted size of a dot, a convolution or a oneDNN matmul (jaxlib 0.4.30's CPU
    pipeline rewrites dots to those custom calls: [.., M, K] x [.., K, N], with ``transpose_a`` in their config)."""
    out = math.prod(array_dims(instruction.shape))  # the first array of a tuple shape: a oneDNN call's result
    if instruction.opcode == "custom-call":
        lhs = array_dims(operand_shapes(instruction, computation)[0])
        transposed = '"transpose_a":true' in instruction.attributes.get("backend_config", "")
        return 2 * out * lhs[-2 if transposed else -1]
    if instruction.opcode == "dot":
        lhs = array_dims(operand_shapes(instruction, computation)[0])
        return 2 * out * math.prod(lhs[d] for d in _dims_attribute(instruction, "lhs_contracting_dims"))
    # Convolution: each output element sums input features per group (the kernel's "i") times the window taps that
    # land on the input, not on its padding (XLA's HloCostAnalysis counts valid positions the same way). The TPU
    # compiler writes a per-head projection as one: a head axis of spatial size 1, window = heads, padded by
    # heads - 1 each side, so every output position has one real tap of its window (about heads x too many if the
    # padding were counted). dim_labels "b01f_01io->b01f" name each operand's dims; "0", "1", ... are spatial.
    operands = operand_shapes(instruction, computation)
    lhs, kernel = array_dims(operands[0]), array_dims(operands[1])
    labels = instruction.attributes.get("dim_labels", "")
    parts = re.fullmatch(r"(\w+)_(\w+)->(\w+)", labels)
    if parts is None or len(parts.group(2)) != len(kernel) or not {"i", "o"} <= set(parts.group(2)):
        raise ValueError(f"convolution %{instruction.name}: cannot read the kernel layout from {labels!r}")
    lhs_labels, kernel_labels, out_labels = parts.groups()
    spatial = sorted(c for c in kernel_labels if c.isdigit())
    windows = _conv_windows(instruction, len(spatial))
    taps = 1
    for dim, window in zip(spatial, windows, strict=True):
        out_size = array_dims(instruction.shape)[out_labels.index(dim)]
        taps *= _valid_taps(lhs[lhs_labels.index(dim)], kernel[kernel_labels.index(dim)], out_size, window)
    out_spatial = math.prod(array_dims(instruction.shape)[out_labels.index(dim)] for dim in spatial)
    return 2 * (out // out_spatial) * kernel[kernel_labels.index("i")] * taps


def _conv_windows(instruction: HloInstruction, dims: int) -> list[dict[str, tuple[int, ...]]]:
    """Per spatial dim: stride, padding (low, high), lhs and rhs dilation from ``window={size=4 pad=3_3 ...}``."""
    text = instruction.attributes.get("window", "").strip("{}")
    fields = dict(item.split("=", 1) for item in text.split() if "=" in item)

    def each(key: str, default: str) -> list[str]:
        values = fields.get(key, "x".join([default] * dims)).split("x")
        return values if dims else []

    pads = [tuple(int(v) for v in pad.split("_")) for pad in each("pad", "0_0")]
    return [
        {"stride": (int(stride),), "pad": pad, "lhs_dilate": (int(ld),), "rhs_dilate": (int(rd),)}
        for stride, pad, ld, rd in zip(
            each("stride", "1"), pads, each("lhs_dilate", "1"), each("rhs_dilate", "1"), strict=True
        )
    ]


def _valid_taps(size: int, window: int, out_size: int, how: Mapping[str, tuple[int, ...]]) -> int:
    """Window taps, summed over the output positions of one spatial dim, that read an element of the input rather
    than padding or a hole of lhs dilation."""
    (stride,), (low, _high) = how["stride"], how["pad"]
    (lhs_dilate,), (rhs_dilate,) = how["lhs_dilate"], how["rhs_dilate"]
    dilated = (size - 1) * lhs_dilate + 1
    count = 0
    for position in range(out_size):
        for tap in range(window):
            at = position * stride + tap * rhs_dilate - low
            count += 0 <= at < dilated and at % lhs_dilate == 0
    return count


def _fused_matmuls(module: HloModule, computation: HloComputation) -> list[tuple[int, HloInstruction]]:
    """(FLOPs, instruction) of every dot and convolution in a fused computation and the fusions nested in it."""
    found = []
    for instruction in computation.instructions.values():
        if _is_matmul(instruction):
            found.append((matmul_flops(instruction, computation), instruction))
        for callee in called_computations(instruction, "calls"):
            found.extend(_fused_matmuls(module, module.computations[callee]))
    return found


def _fused_names(module: HloModule, computation: HloComputation) -> Iterable[str | None]:
    for instruction in computation.instructions.values():
        yield op_name(instruction)
        for callee in called_computations(instruction, "calls"):
            yield from _fused_names(module, module.computations[callee])


def _op_bytes(module: HloModule, instruction: HloInstruction, computation: HloComputation, in_place: bool) -> int:
    """Result bytes plus operand bytes, as XLA's HloCostAnalysis counts them: a (dynamic-)slice moves its slice, and an
    in-place dynamic-update-slice its update (the buffer it updates is its result, never copied); a fusion's operand
    read only through slices counts the slices' bytes (``_read_fraction``), and a fusion output that updates a buffer
    in place counts the update's (``_output_bytes``). A scanned layer stack reads its weights by dynamic-slice and
    writes each layer's activations and weight gradients into stacked buffers by dynamic-update-slice: counting
    whole buffers there would price every layer as reading and writing all of them. ``in_place`` False counts an
    in-place update's whole buffer (``attribute``)."""
    shapes = operand_shapes(instruction, computation)
    if instruction.opcode == _IN_PLACE and in_place:  # operand 0 aliases the result
        return 2 * shape_bytes(shapes[1]) + sum(shape_bytes(s) for s in shapes[2:])
    if instruction.opcode in _SLICES:  # HloCostAnalysis::HandleSlice, HandleDynamicSlice
        return 2 * shape_bytes(instruction.shape) + sum(shape_bytes(s) for s in shapes[1:])
    if instruction.opcode != "fusion":
        return shape_bytes(instruction.shape) + sum(shape_bytes(s) for s in shapes)
    fused = module.computations[called_computations(instruction, "calls")[0]]
    reads = (
        shape_bytes(s) * min(1.0, _parameter_read_fraction(module, fused, i, in_place)) for i, s in enumerate(shapes)
    )
    return _output_bytes(fused, in_place) + round(sum(reads))


_SLICES = frozenset({"slice", "dynamic-slice"})
_IN_PLACE = "dynamic-update-slice"


def _producer(computation: HloComputation, name: str) -> HloInstruction:
    """The instruction ``name`` is, looking through bitcasts (free: the same bytes, another shape)."""
    instruction = computation.instructions[name]
    while instruction.opcode == "bitcast" and operand_name(instruction.operands[0]) in computation.instructions:
        instruction = computation.instructions[operand_name(instruction.operands[0])]
    return instruction


def _output_bytes(fused: HloComputation, in_place: bool) -> int:
    """Bytes a fusion writes: each output's, but an output that is an in-place dynamic-update-slice (through
    bitcasts) writes only its update (HloCostAnalysis::FusionProcessOutputBytesAccessed)."""
    root = fused.instructions[fused.root]
    outputs = [operand_name(o) for o in root.operands] if root.opcode == "tuple" else [root.name]
    total = 0
    for name in outputs:
        output = _producer(fused, name)
        if output.opcode == _IN_PLACE and in_place:
            total += shape_bytes(operand_shapes(output, fused)[1])
        else:
            total += shape_bytes(fused.instructions[name].shape)
    return total


def _parameter_read_fraction(module: HloModule, fused: HloComputation, index: int, in_place: bool) -> float:
    """The fraction of its parameter ``index`` a fused computation reads (``_read_fraction``); a tuple parameter,
    or none: infinity (the caller takes the whole operand)."""
    param = next(
        (i for i in fused.instructions.values() if i.opcode == "parameter" and i.operands == (str(index),)), None
    )
    if param is None or param.shape.lstrip().startswith("("):  # a tuple parameter: taken whole
        return math.inf
    return _read_fraction(module, fused, param.name, math.prod(array_dims(param.shape)), in_place)


def _read_fraction(module: HloModule, fused: HloComputation, name: str, elements: int, in_place: bool) -> float:
    """The fraction of value ``name`` (``elements`` elements) that its users in a fused computation read, as XLA's
    cost analysis counts it (HloCostAnalysis::FusionParameterReadBytes): the elements of the slices that read it,
    directly, through bitcasts or in a fusion nested in it (XLA fuses a block's slice of a whole array into the op
    using it, as in the block loops of kernels/flash.py written out); nothing for the buffer a dynamic-update-slice
    updates in place (its operand 0, aliased to the output). Read by anything else, or an output of the computation
    itself (its root, or an element of a root tuple): infinity (the whole value)."""
    root = fused.instructions[fused.root]
    if name == root.name or (root.opcode == "tuple" and name in {operand_name(o) for o in root.operands}):
        return math.inf
    total = 0.0
    for user in fused.instructions.values():
        positions = [k for k, operand in enumerate(user.operands) if operand_name(operand) == name]
        if not positions:
            continue
        if user.opcode in _SLICES and positions == [0] and elements:  # (a zero-size parameter reads nothing)
            total += math.prod(array_dims(user.shape)) / elements  # a slice may convert too: count elements
        elif user.opcode == _IN_PLACE and positions == [0] and in_place:
            continue
        elif user.opcode == "bitcast":
            total += _read_fraction(module, fused, user.name, elements, in_place)
        elif user.opcode == "fusion":
            inner = module.computations[called_computations(user, "calls")[0]]
            total += sum(_parameter_read_fraction(module, inner, k, in_place) for k in positions)
        else:
            return math.inf
    return total


# --- attribution --------------------------------------------------------------------------------


def _executed(module: HloModule) -> set[str]:
    """ENTRY and the computations that run as computations (not fused, not reducers)."""
    executed, frontier = {module.entry}, [module.entry]
    while frontier:
        for instruction in module.computations[frontier.pop()].instructions.values():
            for attribute in _EXECUTED_CALLS.get(instruction.opcode, ()):
                for callee in called_computations(instruction, attribute):
                    if callee not in executed:
                        executed.add(callee)
                        frontier.append(callee)
    return executed


def _fusion_cost(module: HloModule, instruction: HloInstruction) -> tuple[Component | None, int, str | None]:
    """(component, FLOPs, the op_name the component came from) of a fusion."""
    fused = module.computations[called_computations(instruction, "calls")[0]]
    matmuls = _fused_matmuls(module, fused)
    flops = sum(f for f, _ in matmuls)
    if matmuls:
        largest = max(matmuls, key=lambda m: m[0])[1]
        if component_of(op_name(largest)):
            return component_of(op_name(largest)), flops, op_name(largest)
    if component_of(op_name(instruction)):
        return component_of(op_name(instruction)), flops, op_name(instruction)
    votes = Counter(c for c in map(component_of, _fused_names(module, fused)) if c is not None)
    if votes:
        order = list(Component)
        component = max(votes, key=lambda c: (votes[c], -order.index(c)))
        return component, flops, op_name(instruction)
    return None, flops, op_name(instruction)


def attribute(
    hlo_text: str,
    mesh_ids: np.ndarray | None = None,
    axis_names: Sequence[str] = ("dp", "mp"),
    in_place_updates: bool = True,
) -> list[OpCost]:
    """One OpCost per op that runs in optimized HLO text (see the module docstring), in file order.

    mesh_ids and axis_names label collectives by mesh axis as in ``parse_collectives``. ``in_place_updates`` False
    prices an in-place dynamic-update-slice as reading and writing its whole buffer, as libtpu 0.0.1's cost analysis
    (jax 0.4.30) does: only to set the map against that compiler's own estimate.
    """
    module = parse_module(hlo_text)
    multipliers = computation_multipliers(module)
    collectives = {(c.computation, c.name): c for c in parse_collectives(hlo_text, mesh_ids, axis_names)}
    costs = []
    executed = _executed(module)
    for name in (n for n in module.computations if n in executed):
        computation = module.computations[name]
        ops = {
            instruction.name: _cost(
                module, computation, instruction, multipliers[name][0], collectives, in_place_updates
            )
            for instruction in computation.instructions.values()
            if not _is_free(instruction)
        }
        costs.extend(_with_neighbours(computation, ops))
    return costs


def _is_free(instruction: HloInstruction) -> bool:
    """An op that moves no data and does no arithmetic of its own: no entry in the breakdown."""
    if instruction.opcode == "custom-call":
        return instruction.attributes.get("custom_call_target", "").strip('"') in _ALLOCATIONS
    return instruction.opcode in _FREE_OPCODES or instruction.opcode.endswith("-done")


def _with_neighbours(computation: HloComputation, ops: Mapping[str, OpCost]) -> list[OpCost]:
    """Ops no op_name placed, given the component of the ops they read from and feed (one hop).

    XLA's CPU pipeline drops the metadata of the batched attention dots when it rewrites them. For a dot the
    attention structure decides: next to the values einsum or the output projection (whose cotangent it reads)
    it is attention-times-values, else next to the rest of attention it is the scores. Other ops take their
    neighbours' most common component (collectives excluded: they carry what both ends compute).
    """
    neighbours: dict[str, list[str]] = {name: [] for name in computation.instructions}
    for instruction in computation.instructions.values():
        for operand in instruction.operands:
            producer = operand.split()[-1].lstrip("%")
            if producer in neighbours:
                neighbours[instruction.name].append(producer)
                neighbours[producer].append(instruction.name)

    def components(name: str, seen: set[str]) -> list[Component]:
        """The component of a neighbour; through views (bitcast, tuple element) to the ops beyond them."""
        if name in ops:
            return [ops[name].component]
        instruction = computation.instructions[name]
        own = component_of(op_name(instruction))
        if own or instruction.opcode not in _VIEW_OPCODES:
            return [own] if own else []
        seen.add(name)
        return [c for n in neighbours[name] if n not in seen for c in components(n, seen)]

    placed = []
    for op in ops.values():
        near = [
            c
            for name in neighbours[op.name]
            for c in components(name, {op.name})
            if c not in (Component.UNATTRIBUTED, Component.COLLECTIVE)  # a collective says nothing of its ends
        ]
        if op.component is Component.UNATTRIBUTED and near:
            op = dataclasses.replace(op, component=_from_neighbours(op, near), inferred=True)
        placed.append(op)
    return placed


def _from_neighbours(op: OpCost, near: list[Component]) -> Component:
    if op.flops:
        if Component.ATTN_VALUES in near or Component.OUT_PROJ in near:
            return Component.ATTN_VALUES
        if Component.ATTN_SCORES in near:
            return Component.ATTN_SCORES
    votes, order = Counter(near), list(Component)
    return max(votes, key=lambda c: (votes[c], -order.index(c)))


def _cost(
    module: HloModule,
    computation: HloComputation,
    instruction: HloInstruction,
    multiplier: int,
    collectives: Mapping[tuple[str, str], Collective],
    in_place: bool,
) -> OpCost:
    flops, source, axis = 0, op_name(instruction), None
    collective = collectives.get((computation.name, instruction.name))
    if collective is not None or collective_opcode(instruction.opcode):
        component, axis = Component.COLLECTIVE, collective.mesh_axis if collective else None
    elif instruction.opcode == "fusion":
        component, flops, source = _fusion_cost(module, instruction)
    else:
        component = component_of(source)
        if _is_matmul(instruction):
            flops = matmul_flops(instruction, computation)
    return OpCost(
        name=instruction.name,
        computation=computation.name,
        opcode=instruction.opcode,
        op_name=source,
        component=component or Component.UNATTRIBUTED,
        mesh_axis=axis,
        flops=flops,
        bytes=_op_bytes(module, instruction, computation, in_place),
        multiplier=multiplier,
    )


def unattributed(ops: Iterable[OpCost]) -> list[OpCost]:
    """The ops no rule matched, to name in a report or a test failure."""
    return [op for op in ops if op.component is Component.UNATTRIBUTED]


# --- pricing ------------------------------------------------------------------------------------


def _summed(pairs: Iterable[tuple[str, float]], basis: Basis) -> Breakdown:
    seconds: dict[str, float] = {UNATTRIBUTED: 0.0}
    for label, s in pairs:
        seconds[label] = seconds.get(label, 0.0) + s
    return Breakdown(basis, seconds)


def breakdown(ops: Iterable[OpCost], peak_flops_per_s: float, hbm_bytes_per_s: float) -> Breakdown:
    """Seconds per component label, each op at max(FLOPs / peak, bytes / HBM bandwidth) for every execution."""
    if peak_flops_per_s <= 0 or hbm_bytes_per_s <= 0:
        raise ValueError(f"peak and bandwidth must be positive, got {peak_flops_per_s}, {hbm_bytes_per_s}")
    return _summed(((op.label, op.seconds(peak_flops_per_s, hbm_bytes_per_s)) for op in ops), Basis.ROOFLINE)


def reconcile(parts: Breakdown, whole_step_s: float, tolerance: float = 0.05) -> Reconciliation:
    """Check that a breakdown sums to a whole-step estimate within ``tolerance`` (5% by default); otherwise the
    rest (whole - sum) is added to "unattributed" so that the parts shown add up to the whole."""
    if whole_step_s <= 0:
        raise ValueError(f"whole-step estimate must be positive, got {whole_step_s}")
    components_s = parts.total_s
    within = abs(components_s - whole_step_s) <= tolerance * whole_step_s
    seconds = dict(parts.seconds)
    if not within:
        seconds[UNATTRIBUTED] += whole_step_s - components_s
    return Reconciliation(Breakdown(parts.basis, seconds), whole_step_s, components_s, within)


def breakdown_from_profile(rows: Sequence[OpRow], ops: Iterable[OpCost]) -> Breakdown:
    """Measured seconds per component: each profiled op's self time under the label its HLO op got.

    ``ops`` is ``attribute`` of the profiled program's optimized HLO; rows are matched by instruction name. A row
    with no HLO op is a collective when its category or name says so, else unattributed. Times are summed as the
    rows give them (over every device in the trace, see ``bench.analysis.profile``).
    """
    labels = {op.name: op.label for op in ops}

    def label(row: OpRow) -> str:
        if row.name in labels:
            return labels[row.name]
        return Component.COLLECTIVE.value if is_collective(row.category, row.name) else UNATTRIBUTED

    return _summed(((label(row), row.self_time_us * 1e-6) for row in rows), Basis.MEASURED)
