"""Find the collective ops in optimized HLO text (``jax.jit(f).lower(...).compile().as_text()``).

``parse_collectives`` returns one ``Collective`` per collective instruction reachable from ENTRY:
all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute and their async forms. An
``X-start``/``X-done`` pair counts once, at the start. An op wrapped in a generic ``async-start``
counts once, in the wrapped computation. For each op the parser records:

- ``payload_bytes``: S, the bytes per device that the wire-bytes formulas in ``bench.analysis.comm`` take.
  It is the operand size for all-reduce, reduce-scatter (unscattered), all-to-all and
  collective-permute, and the result (gathered) size for all-gather.
- ``multiplier``: how many times one run of ENTRY executes the op. Each path from ENTRY adds the
  product of the trip counts of the while loops along it. A trip count comes from the
  ``known_trip_count`` that XLA writes in a ``while``'s backend_config. jaxlib 0.4.30's CPU
  pipeline does not write it, so the parser then matches the counted-loop pattern that
  ``lax.scan``/``fori_loop`` lower to (``i < N`` in the condition, ``i + s`` in the body, a constant
  start). When neither works the loop counts once and ``trip_counts_known`` is False. Each branch
  of a conditional counts as if it ran, so ops inside conditionals give an upper bound.
- ``replica_groups``: the groups as printed, with the iota forms ``[G,S]<=[dims]T(perm)`` expanded.
  ``device_groups`` are the same groups as flattened device ids
  (``replica * num_partitions + partition``), using XLA's CollectiveOpGroupMode rules. Under SPMD
  (one replica) these are the partition ids, which are positions in the flattened ``Mesh``.
- ``mesh_axis``: the mesh axes along which group members differ, joined with "+" in mesh order
  ("mp", "dp", "dp+mp"). It is "none" when no group spans an axis and None when no mesh was given; the labels
  and their record-key forms are in ``bench.records.collectives``.
- ``overlapped``: whether compute is scheduled between an async op's start and its done, so that the transfer can
  hide behind it. Optimized HLO of a scheduled module (``is_scheduled=true``) lists each computation's instructions
  in execution order, so "between" is "between in the text" (XLA's HloSchedule is printed as the sequence order).
  Compute is a fusion, convolution, dot, custom-call or a call of other computations (while, call, conditional).
  A synchronous collective, or an async pair with nothing of that kind between, is exposed. ``async_overlap``
  adds payload bytes by mesh axis on each side.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from bench.records.collectives import NO_MESH_AXIS, CollectiveKind, OpForm, collective_opcode


class GroupMode(enum.Enum):
    """What the ids in replica_groups mean (XLA's CollectiveOpGroupMode, collective_ops_utils.h)."""

    CROSS_REPLICA = "cross_replica"  # no channel_id: ids are replicas, per partition
    CROSS_PARTITION = "cross_partition"  # channel_id, no use_global_device_ids field: partitions
    CROSS_REPLICA_AND_PARTITION = "cross_replica_and_partition"  # ids are replicas, all partitions
    FLATTENED_ID = "flattened_id"  # use_global_device_ids=true: replica * num_partitions + partition


Groups = tuple[tuple[int, ...], ...]


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective op in optimized HLO, with what is needed to price it on the wire."""

    kind: CollectiveKind
    name: str  # instruction name, without "%"
    computation: str  # computation that holds the instruction
    is_async: bool  # an X-start op or inside an async-start wrapper
    multiplier: int  # executions per run of ENTRY (product of enclosing trip counts, summed)
    trip_counts_known: bool  # False when some enclosing loop's trip count was not found (taken as 1)
    payload_bytes: int  # S per device, see the module docstring
    bytes_by_dtype: tuple[tuple[str, int], ...]  # S split by element type, e.g. (("f32", 64),)
    group_size: int  # n, devices in each group (2 for collective-permute: a sender and a receiver)
    replica_groups: Groups  # as printed; () when printed as "{}"
    empty_groups: bool  # replica_groups={} (all devices of the group mode in one group)
    device_groups: Groups  # groups as flattened device ids; the pairs for collective-permute
    source_target_pairs: tuple[tuple[int, int], ...]  # collective-permute only
    channel_id: int | None
    use_global_device_ids: bool
    group_mode: GroupMode
    mesh_axis: str | None  # "mp", "dp", "dp+mp", "none"; None without a mesh
    # Arrays the op carries: XLA's all-reduce combiner merges independent all-reduces into one tuple-shaped
    # op, which changes the op count but not this.
    tensor_count: int = 1
    overlapped: bool = False  # async, with compute scheduled between start and done (module docstring)

    @property
    def dtypes(self) -> tuple[str, ...]:
        """Element types in the payload."""
        return tuple(dtype for dtype, _ in self.bytes_by_dtype)


# Bits per element for every HLO primitive type (xla/xla_data.proto PrimitiveType); token is 0.
DTYPE_BITS: Mapping[str, int] = {
    "pred": 8, "token": 0,
    "s1": 1, "s2": 2, "s4": 4, "s8": 8, "s16": 16, "s32": 32, "s64": 64,
    "u1": 1, "u2": 2, "u4": 4, "u8": 8, "u16": 16, "u32": 32, "u64": 64,
    "f16": 16, "bf16": 16, "f32": 32, "f64": 64, "c64": 64, "c128": 128,
    "f4e2m1fn": 4, "f8e8m0fnu": 8, "f8e3m4": 8, "f8e4m3": 8, "f8e4m3fn": 8, "f8e4m3fnuz": 8,
    "f8e4m3b11fnuz": 8, "f8e5m2": 8, "f8e5m2fnuz": 8,
}  # fmt: skip

_ARRAY_SHAPE = re.compile(r"([a-z][a-z0-9]*)\[([^\]]*)\]")
_COMPUTATION_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION_HEAD = re.compile(r"^(ROOT\s+)?%?([\w.\-]+)\s*=\s*")
_OPCODE = re.compile(r"\s*([\w\-]+)\(")
_IOTA_GROUPS = re.compile(r"^\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?$")
_TRIP_COUNT = re.compile(r"known_trip_count\D*?(\d+)")
_CALL_ATTRIBUTES = (
    "calls", "to_apply", "body", "condition", "branch_computations",
    "true_computation", "false_computation",
)  # fmt: skip
_DONE_OPCODES = ("async-done", "async-update")  # they repeat the start's calls=; not a new call
# What can run while an async collective is in flight: on TPU nearly all work is in fusions, convolutions and dots;
# a loop, call or conditional holds more of it.
_COMPUTE_OPCODES = frozenset({"fusion", "convolution", "dot", "custom-call", "while", "call", "conditional"})
_BRACKETS = {"(": ")", "{": "}", "[": "]"}


@dataclasses.dataclass(frozen=True)
class _Instruction:
    name: str
    shape: str
    opcode: str
    operands: tuple[str, ...]  # raw operand text: "%x", "f32[4]{0} %x", or a literal
    attributes: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class _Computation:
    name: str
    instructions: Mapping[str, _Instruction]
    root: str


@dataclasses.dataclass(frozen=True)
class _Module:
    computations: Mapping[str, _Computation]
    entry: str
    num_partitions: int
    replica_count: int


# --- shapes -------------------------------------------------------------------------------------


def shape_bytes_by_dtype(shape: str) -> dict[str, int]:
    """Bytes per element type in an HLO shape: "(f32[8,16]{1,0}, bf16[4])" -> {"f32": 512, "bf16": 8}.

    Tuples add their elements; layouts and memory spaces are ignored; a bounded dynamic dim
    "<=8" counts at its bound.
    """
    bits: dict[str, int] = {}
    for dtype, dims in _ARRAY_SHAPE.findall(shape):
        if dtype not in DTYPE_BITS:
            raise ValueError(f"unknown HLO element type {dtype!r} in {shape!r}; valid: {sorted(DTYPE_BITS)}")
        bits[dtype] = bits.get(dtype, 0) + DTYPE_BITS[dtype] * _element_count(dims, shape)
    return {dtype: math.ceil(b / 8) for dtype, b in bits.items()}


def _element_count(dims: str, shape: str) -> int:
    count = 1
    for dim in filter(None, (d.strip() for d in dims.split(","))):
        bound = dim.removeprefix("<=")
        if not bound.isdigit():
            raise ValueError(f"cannot size dimension {dim!r} in {shape!r}: need an integer or '<=N' bound")
        count *= int(bound)
    return count


def shape_bytes(shape: str) -> int:
    """Total bytes of an HLO shape, tuple elements added."""
    return sum(shape_bytes_by_dtype(shape).values())


# --- replica groups -----------------------------------------------------------------------------


def iota_replica_groups(
    num_groups: int, group_size: int, reshape_dims: Sequence[int], perm: Sequence[int] | None = None
) -> Groups:
    """Expand "[num_groups,group_size]<=[reshape_dims]T(perm)" like XLA's IotaReplicaGroupList.

    iota(prod(reshape_dims)) is reshaped to reshape_dims, transposed by perm, then reshaped to
    [num_groups, group_size] (xla/hlo/ir/tile_assignment.h, IotaTileAssignment).
    """
    total = math.prod(reshape_dims)
    if total != num_groups * group_size:
        raise ValueError(f"iota groups [{num_groups},{group_size}] need {num_groups * group_size} ids, got {total}")
    perm = tuple(range(len(reshape_dims))) if perm is None else tuple(perm)
    if sorted(perm) != list(range(len(reshape_dims))):
        raise ValueError(f"T{perm} is not a permutation of the {len(reshape_dims)} reshape dims")
    ids = np.arange(total).reshape(reshape_dims).transpose(perm).reshape(num_groups, group_size)
    return tuple(tuple(int(i) for i in row) for row in ids)


def parse_replica_groups(text: str) -> Groups:
    """Parse "{}", "{{0,1},{2,3}}", "[2,4]<=[8]" or "[4,2]<=[2,4]T(1,0)"; "{}" gives ()."""
    text = text.strip()
    iota = _IOTA_GROUPS.match(text)
    if iota:
        num_groups, group_size, dims, perm = iota.groups()
        return iota_replica_groups(int(num_groups), int(group_size), _ints(dims), _ints(perm) if perm else None)
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"replica_groups {text!r}: expected '{{{{0,1}},...}}' or '[G,S]<=[dims]T(perm)'")
    return tuple(_ints(group) for group in re.findall(r"\{([\d,\s]*)\}", text[1:-1]))


_MESH_GROUPS = re.compile(r"^mesh\[([^\]]*)\]")
_MESH_DEVICE_IOTA = re.compile(r"\[([\d,]+)\](?:T\(([\d,]+)\))?")


def mesh_replica_groups(replica_groups: str, device_ids: str | None) -> Groups:
    """Expand the mesh form that current XLA prints for partitioner-made collectives:
    ``replica_groups=mesh['axis_0'=4,'axis_1'=1,'axis_2'=2], device_ids=([2,4]T(1,0)) {'axis_0'}``.

    The device list (iota, optionally reshaped and transposed as in the iota groups; plain iota when
    ``device_ids`` is absent) is laid out on the named mesh, and each group runs along the axes in braces.
    """
    mesh = _MESH_GROUPS.match(replica_groups.strip())
    if not mesh:
        raise ValueError(f"replica_groups {replica_groups!r} is not of the mesh[...] form")
    axes = [(name.strip().strip("'"), int(size)) for name, size in (a.split("=") for a in mesh.group(1).split(","))]
    sizes = [size for _, size in axes]
    reduced_text = re.search(r"\{([^}]*)\}", (device_ids or "") + " " + replica_groups[mesh.end() :])
    reduced = {a.strip().strip("'") for a in reduced_text.group(1).split(",")} if reduced_text else set()
    ids = np.arange(math.prod(sizes))
    iota = _MESH_DEVICE_IOTA.search(device_ids) if device_ids else None
    if iota:
        dims, perm = _ints(iota.group(1)), _ints(iota.group(2)) if iota.group(2) else None
        ids = ids.reshape(dims).transpose(perm if perm else range(len(dims))).reshape(-1)
    names = [name for name, _ in axes]
    kept = [i for i, name in enumerate(names) if name not in reduced]
    along = [i for i, name in enumerate(names) if name in reduced]
    grouped = ids.reshape(sizes).transpose(kept + along).reshape(-1, math.prod(sizes[i] for i in along))
    return tuple(tuple(int(i) for i in row) for row in grouped)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def group_mode(has_channel_id: bool, use_global_device_ids: bool | None) -> GroupMode:
    """XLA's GetCollectiveOpGroupMode; use_global_device_ids is None for ops without that field."""
    if not has_channel_id:
        return GroupMode.CROSS_REPLICA
    if use_global_device_ids is None:
        return GroupMode.CROSS_PARTITION
    return GroupMode.FLATTENED_ID if use_global_device_ids else GroupMode.CROSS_REPLICA_AND_PARTITION


def device_groups(groups: Groups, mode: GroupMode, replica_count: int, num_partitions: int) -> Groups:
    """Groups as flattened device ids (replica * num_partitions + partition).

    Follows XLA's GetParticipatingDevicesGroups; empty groups mean every id of the mode.
    """
    replicas, partitions = range(replica_count), range(num_partitions)
    if mode is GroupMode.FLATTENED_ID:
        return groups or (tuple(range(replica_count * num_partitions)),)
    if mode is GroupMode.CROSS_REPLICA:
        groups = groups or (tuple(replicas),)
        return tuple(tuple(r * num_partitions + p for r in g) for p in partitions for g in groups)
    if mode is GroupMode.CROSS_PARTITION:
        groups = groups or (tuple(partitions),)
        return tuple(tuple(r * num_partitions + p for p in g) for r in replicas for g in groups)
    groups = groups or (tuple(replicas),)
    return tuple(tuple(r * num_partitions + p for r in g for p in partitions) for g in groups)


def mesh_axis_of_groups(groups: Groups, mesh_ids: np.ndarray, axis_names: Sequence[str]) -> str:
    """Mesh axes along which members of some group differ, "+"-joined in mesh order, or "none".

    mesh_ids holds the flattened device id at each mesh position (under SPMD: np.arange(N) reshaped
    to the mesh shape); a group whose members share the dp coordinate spans "mp".
    """
    if mesh_ids.ndim != len(axis_names):
        raise ValueError(f"mesh of shape {mesh_ids.shape} needs {mesh_ids.ndim} axis names, got {tuple(axis_names)}")
    coords = {int(mesh_ids[index]): index for index in np.ndindex(mesh_ids.shape)}
    spanned: set[int] = set()
    for group in groups:
        missing = [d for d in group if d not in coords]
        if missing:
            raise ValueError(f"device ids {missing} are not in the mesh ids {sorted(coords)}")
        members = np.array([coords[d] for d in group])  # [group size, mesh rank]
        spanned.update(int(a) for a in np.flatnonzero((members != members[0]).any(axis=0)))
    return "+".join(axis_names[a] for a in sorted(spanned)) or NO_MESH_AXIS


# --- text ---------------------------------------------------------------------------------------


def _matching_close(text: str, start: int) -> int:
    """Index just past the bracket that closes text[start]; skips quoted strings."""
    stack = [_BRACKETS[text[start]]]
    i = start + 1
    while stack:
        if i >= len(text):
            raise ValueError(f"unbalanced brackets in HLO: {text[start : start + 120]!r}")
        char = text[i]
        if char == '"':
            i = _end_of_string(text, i)
            continue
        if char in _BRACKETS:
            stack.append(_BRACKETS[char])
        elif char == stack[-1]:
            stack.pop()
        i += 1
    return i


def _end_of_string(text: str, start: int) -> int:
    i = start + 1
    while i < len(text) and text[i] != '"':
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, begin, i = [], 0, 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _end_of_string(text, i)
            continue
        if char in _BRACKETS:
            i = _matching_close(text, i)
            continue
        if char == ",":
            parts.append(text[begin:i])
            begin = i + 1
        i += 1
    parts.append(text[begin:])
    return [p.strip() for p in parts if p.strip()]


def _parse_instruction(line: str) -> tuple[_Instruction, bool] | None:
    """(instruction, is_root) for an instruction line, None for other lines."""
    line = re.sub(r"/\*.*?\*/", "", line)  # XLA marks long tuples with /*index=5*/ comments
    head = _INSTRUCTION_HEAD.match(line)
    if not head:
        return None
    rest = line[head.end() :]
    shape_end = _matching_close(rest, 0) if rest.startswith("(") else rest.index(" ")
    opcode = _OPCODE.match(rest, shape_end)
    if not opcode:
        raise ValueError(f"cannot find the opcode in HLO line {line.strip()[:160]!r}")
    operands_end = _matching_close(rest, opcode.end() - 1)
    attributes = {}
    for item in _split_top_level(rest[operands_end:]):
        key, _, value = item.partition("=")
        attributes[key.strip()] = value.strip()
    instruction = _Instruction(
        name=head.group(2),
        shape=rest[:shape_end],
        opcode=opcode.group(1),
        operands=tuple(_split_top_level(rest[opcode.end() : operands_end - 1])),
        attributes=attributes,
    )
    return instruction, bool(head.group(1))


def instruction_opcodes(hlo_text: str) -> dict[str, str]:
    """{instruction name: opcode} for every instruction line of HLO text, in any of its printed forms.

    Reads lines one at a time, so it takes what ``parse_collectives`` needs a whole module for as well as the
    short form the profiler's graph viewer prints (computation headers without signatures, no ENTRY needed).
    """
    opcodes = {}
    for line in hlo_text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("HloModule", "//")):
            continue
        parsed = _parse_instruction(stripped)
        if parsed:
            opcodes[parsed[0].name] = parsed[0].opcode
    return opcodes


def _parse_module(hlo_text: str) -> _Module:
    computations: dict[str, _Computation] = {}
    entry, current, instructions, root = None, None, {}, None
    num_partitions, replica_count = 1, 1
    for line in hlo_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("HloModule"):
            num_partitions = _module_int(stripped, "num_partitions", 1)
            replica_count = _module_int(stripped, "replica_count", 1)
        elif current is None:
            header = _COMPUTATION_HEADER.match(stripped)
            if header:
                current, instructions, root = header.group(2), {}, None
                entry = current if header.group(1) else entry
        elif stripped.startswith("}"):
            computations[current] = _Computation(current, instructions, root or next(reversed(instructions)))
            current = None
        elif stripped and not stripped.startswith("//"):
            parsed = _parse_instruction(stripped)
            if parsed:
                instruction, is_root = parsed
                instructions[instruction.name] = instruction
                root = instruction.name if is_root else root
    if entry is None:
        raise ValueError("no ENTRY computation found: pass the text of compiled.as_text() (optimized HLO)")
    return _Module(computations, entry, num_partitions, replica_count)


def _module_int(header: str, key: str, default: int) -> int:
    found = re.search(rf"\b{key}=(\d+)", header)
    return int(found.group(1)) if found else default


def _operand_name(operand: str) -> str:
    return operand.split()[-1].lstrip("%")


def operand_name(operand: str) -> str:
    """The instruction an operand's text names: "%x" or "f32[4]{0} %x" -> "x" (a literal stays itself)."""
    return _operand_name(operand)


def _called(value: str) -> list[str]:
    return re.findall(r"%?([\w.\-]+)", value)


def _operand_shape(operand: str, computation: _Computation) -> str:
    """Printed type of an operand ("f32[4]{0} %x", jaxlib 0.4.30) or its definition's shape."""
    if " " in operand:
        return operand.rsplit(" ", 1)[0]
    name = _operand_name(operand)
    if name not in computation.instructions:
        raise ValueError(f"operand %{name} is not defined in computation %{computation.name}")
    return computation.instructions[name].shape


# --- while-loop trip counts ---------------------------------------------------------------------

# A scalar expression found by following an instruction's operands: ("const", v), ("param", i),
# ("gte", k) = element k of parameter 0, ("add", a, b), ("cmp", direction, a, b); None = unknown.
_Term = tuple | None


def _term(module: _Module, computation: _Computation, name: str, bind: Callable[[int], _Term] | None) -> _Term:
    instruction = computation.instructions.get(name)
    if instruction is None:
        return None
    opcode, operands = instruction.opcode, instruction.operands

    def operand(i: int) -> _Term:
        return _term(module, computation, _operand_name(operands[i]), bind)

    if opcode == "constant":
        return ("const", int(operands[0])) if re.fullmatch(r"-?\d+", operands[0]) else None
    if opcode == "parameter":
        number = int(operands[0])
        return bind(number) if bind else ("param", number)
    if opcode in ("copy", "bitcast", "convert"):
        return operand(0)
    if opcode == "get-tuple-element":
        return ("gte", int(instruction.attributes["index"])) if operand(0) == ("param", 0) else None
    if opcode == "add":
        return ("add", operand(0), operand(1))
    if opcode == "compare":
        return ("cmp", instruction.attributes.get("direction"), operand(0), operand(1))
    if opcode == "fusion":
        fused = module.computations[_called(instruction.attributes["calls"])[0]]
        return _term(module, fused, fused.root, operand)
    return None


def _inferred_trip_count(module: _Module, caller: _Computation, loop: _Instruction) -> int | None:
    """Trip count of a counted loop: i = c0 before, `i < N` (or `N > i`) in condition, i += s in body."""
    condition = module.computations[_called(loop.attributes["condition"])[0]]
    body = module.computations[_called(loop.attributes["body"])[0]]
    test = _term(module, condition, condition.root, None)
    if test and test[0] == "cmp" and test[1] == "GT":
        test = ("cmp", "LT", test[3], test[2])
    if not (test and test[1] == "LT" and test[2] and test[2][0] == "gte" and test[3] and test[3][0] == "const"):
        return None
    index, limit = test[2][1], test[3][1]
    start = _tuple_element_term(module, caller, _operand_name(loop.operands[0]), index)
    update = _tuple_element_term(module, body, body.root, index)
    step = _step_of(update, index)
    if not (start and start[0] == "const" and step and step > 0):
        return None
    return max(0, math.ceil((limit - start[1]) / step))


def _tuple_element_term(module: _Module, computation: _Computation, name: str, index: int) -> _Term:
    instruction = computation.instructions.get(name)
    if instruction is None or instruction.opcode != "tuple" or index >= len(instruction.operands):
        return None
    return _term(module, computation, _operand_name(instruction.operands[index]), None)


def _step_of(update: _Term, index: int) -> int | None:
    if not (update and update[0] == "add"):
        return None
    for counter, step in ((update[1], update[2]), (update[2], update[1])):
        if counter == ("gte", index) and step and step[0] == "const":
            return step[1]
    return None


def _trip_count(module: _Module, caller: _Computation, loop: _Instruction) -> int | None:
    known = _TRIP_COUNT.search(loop.attributes.get("backend_config", ""))
    return int(known.group(1)) if known else _inferred_trip_count(module, caller, loop)


# --- call graph and multipliers -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Call:
    caller: str
    callee: str
    times: int  # executions of callee per execution of the call site
    known: bool


def _calls(module: _Module) -> Iterator[_Call]:
    for computation in module.computations.values():
        for instruction in computation.instructions.values():
            if instruction.opcode in _DONE_OPCODES or instruction.opcode.endswith("-done"):
                continue
            trips = _trip_count(module, computation, instruction) if instruction.opcode == "while" else 1
            for attribute in _CALL_ATTRIBUTES:
                for callee in _called(instruction.attributes.get(attribute, "")):
                    times = 1 if trips is None else trips + (attribute == "condition")
                    yield _Call(computation.name, callee, times, trips is not None)


def _multipliers(module: _Module) -> dict[str, tuple[int, bool]]:
    """(executions per ENTRY run, all trip counts known) for each computation reachable from ENTRY."""
    callers: dict[str, list[_Call]] = {}
    for call in _calls(module):
        callers.setdefault(call.callee, []).append(call)
    result: dict[str, tuple[int, bool]] = {module.entry: (1, True)}

    def visit(name: str, on_path: frozenset[str]) -> tuple[int, bool]:
        if name not in result:
            if name in on_path:
                raise ValueError(f"computation %{name} calls itself; HLO call graphs are acyclic")
            total, known = 0, True
            for call in callers.get(name, []):
                times, caller_known = visit(call.caller, on_path | {name})
                total += times * call.times
                known = known and caller_known and call.known
            result[name] = (total, known)
        return result[name]

    reachable = _reachable(module.entry, callers)
    return {name: visit(name, frozenset()) for name in module.computations if name in reachable}


def _reachable(entry: str, callers: Mapping[str, list[_Call]]) -> set[str]:
    callees: dict[str, set[str]] = {}
    for calls in callers.values():
        for call in calls:
            callees.setdefault(call.caller, set()).add(call.callee)
    seen, frontier = {entry}, [entry]
    while frontier:
        for callee in callees.get(frontier.pop(), ()):
            if callee not in seen:
                seen.add(callee)
                frontier.append(callee)
    return seen


# --- collectives --------------------------------------------------------------------------------


def _kind_of(opcode: str) -> tuple[CollectiveKind, bool] | None:
    """(kind, is the async start form) for collective opcodes; None for others, X-done included."""
    found = collective_opcode(opcode)
    if found is None or found[1] is OpForm.DONE:
        return None
    return found[0], found[1] is OpForm.START


def _payload_by_dtype(kind: CollectiveKind, instruction: _Instruction, computation: _Computation) -> dict[str, int]:
    """S per element type: operand bytes, or result bytes for all-gather."""
    operands = instruction.operands
    if kind is CollectiveKind.COLLECTIVE_PERMUTE and "slice_sizes" in instruction.attributes:
        operands = operands[:1]  # in-place form: the other operands are the output buffer and indices
    sent: dict[str, int] = {}
    for operand in operands:
        for dtype, size in shape_bytes_by_dtype(_operand_shape(operand, computation)).items():
            sent[dtype] = sent.get(dtype, 0) + size
    if kind is not CollectiveKind.ALL_GATHER:
        return sent
    gathered = shape_bytes_by_dtype(instruction.shape)
    if instruction.opcode.endswith("-start"):  # the start's shape is (operands, results)
        gathered = {dtype: size - sent.get(dtype, 0) for dtype, size in gathered.items()}
    return {dtype: size for dtype, size in gathered.items() if size}


def _collective(
    module: _Module,
    computation: _Computation,
    instruction: _Instruction,
    multiplier: tuple[int, bool],
    is_async: bool,
    mesh: tuple[np.ndarray, Sequence[str]] | None,
    overlapped: bool,
) -> Collective:
    kind, is_start = _kind_of(instruction.opcode)
    attributes = instruction.attributes
    channel_id = int(attributes["channel_id"]) if "channel_id" in attributes else None
    use_global = attributes.get("use_global_device_ids", "false") == "true"
    has_global_field = kind in (CollectiveKind.ALL_REDUCE, CollectiveKind.ALL_GATHER, CollectiveKind.REDUCE_SCATTER)
    mode = group_mode(channel_id is not None, use_global if has_global_field else None)
    pairs = tuple(tuple(p) for p in parse_replica_groups(attributes.get("source_target_pairs", "{}")))
    printed_groups = attributes.get("replica_groups", "{}")
    if printed_groups.startswith("mesh["):
        groups = mesh_replica_groups(printed_groups, attributes.get("device_ids"))
    else:
        groups = parse_replica_groups(printed_groups)
    if kind is CollectiveKind.COLLECTIVE_PERMUTE:
        devices = device_groups(pairs, mode, module.replica_count, module.num_partitions) if pairs else ()
        size = 2
    else:
        devices = device_groups(groups, mode, module.replica_count, module.num_partitions)
        size = _common_size(devices, instruction.name)
    by_dtype = _payload_by_dtype(kind, instruction, computation)
    return Collective(
        kind=kind,
        name=instruction.name,
        computation=computation.name,
        is_async=is_start or is_async,
        multiplier=multiplier[0],
        trip_counts_known=multiplier[1],
        payload_bytes=sum(by_dtype.values()),
        bytes_by_dtype=tuple(by_dtype.items()),
        group_size=size,
        replica_groups=groups,
        empty_groups=kind is not CollectiveKind.COLLECTIVE_PERMUTE and not groups,
        device_groups=devices,
        source_target_pairs=pairs,
        channel_id=channel_id,
        use_global_device_ids=use_global,
        group_mode=mode,
        mesh_axis=mesh_axis_of_groups(devices, *mesh) if mesh is not None else None,
        tensor_count=len(instruction.operands) if kind is CollectiveKind.ALL_REDUCE else 1,
        overlapped=overlapped,
    )


def _overlapped_starts(computation: _Computation) -> set[str]:
    """Names of the async starts in `computation` with compute scheduled before their done (file order)."""
    origin: dict[str, str] = {}  # start, update or done -> the start it continues
    compute_since: dict[str, bool] = {}  # open start -> compute seen since it
    overlapped = set()
    for name, instruction in computation.instructions.items():
        found = collective_opcode(instruction.opcode)
        form = found[1] if found else None
        if instruction.opcode == "async-start" or form is OpForm.START:
            origin[name] = name
            compute_since[name] = False
        elif instruction.opcode in _DONE_OPCODES or form is OpForm.DONE:
            start = origin.get(_operand_name(instruction.operands[0])) if instruction.operands else None
            if start is not None:
                origin[name] = start
                if compute_since.pop(start, False):
                    overlapped.add(start)
                if instruction.opcode == "async-update":
                    compute_since[start] = start in overlapped
        elif instruction.opcode in _COMPUTE_OPCODES:
            for start in compute_since:
                compute_since[start] = True
    return overlapped


def _async_callers(module: _Module) -> dict[str, tuple[str, str]]:
    """{wrapped computation: (caller computation, async-start name)} for generic async-start wrappers."""
    return {
        callee: (computation.name, name)
        for computation in module.computations.values()
        for name, instruction in computation.instructions.items()
        if instruction.opcode == "async-start"
        for callee in _called(instruction.attributes.get("calls", ""))
    }


def _common_size(groups: Groups, name: str) -> int:
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"%{name} has replica groups of sizes {sorted(sizes)}; the formulas need one size n")
    return sizes.pop()


def parse_collectives(
    hlo_text: str, mesh_ids: np.ndarray | None = None, axis_names: Sequence[str] = ("dp", "mp")
) -> list[Collective]:
    """Every collective reachable from ENTRY in optimized HLO text, in file order.

    mesh_ids (device id at each mesh position, e.g. np.arange(8).reshape(2, 4)) with axis_names
    turns on mesh-axis attribution; without it mesh_axis is None.
    """
    module = _parse_module(hlo_text)
    multipliers = _multipliers(module)
    wrapped = _async_callers(module)
    overlapped = {name: _overlapped_starts(c) for name, c in module.computations.items() if name in multipliers}
    mesh = (np.asarray(mesh_ids), tuple(axis_names)) if mesh_ids is not None else None

    def hidden(computation: _Computation, instruction: _Instruction) -> bool:
        caller, start = wrapped.get(computation.name, (computation.name, instruction.name))
        return start in overlapped.get(caller, set())

    return [
        _collective(
            module,
            computation,
            instruction,
            multipliers[computation.name],
            computation.name in wrapped,
            mesh,
            hidden(computation, instruction),
        )
        for computation in module.computations.values()
        if computation.name in multipliers
        for instruction in computation.instructions.values()
        if _kind_of(instruction.opcode)
    ]


def async_overlap(
    hlo_text: str, mesh_ids: np.ndarray, axis_names: Sequence[str] = ("dp", "mp")
) -> dict[str, dict[str, int]]:
    """Payload bytes per step by mesh axis, split by whether compute is scheduled under the transfer:
    {"mp": {"overlappable": S, "exposed": S}, ...} with trip counts applied (see the module docstring)."""
    totals: dict[str, dict[str, int]] = {}
    for c in parse_collectives(hlo_text, mesh_ids, axis_names):
        side = "overlappable" if c.overlapped else "exposed"
        axis = totals.setdefault(c.mesh_axis, {"overlappable": 0, "exposed": 0})
        axis[side] += c.payload_bytes * c.multiplier
    return totals


__all__ = [
    "DTYPE_BITS",
    "Collective",
    "CollectiveKind",
    "async_overlap",
    "GroupMode",
    "device_groups",
    "group_mode",
    "instruction_opcodes",
    "iota_replica_groups",
    "mesh_axis_of_groups",
    "mesh_replica_groups",
    "parse_collectives",
    "parse_replica_groups",
    "shape_bytes",
    "shape_bytes_by_dtype",
]


# --- the parsed module, for analyses beyond collectives (bench.analysis.components) -------------

HloModule = _Module
HloComputation = _Computation
HloInstruction = _Instruction

_OP_NAME = re.compile(r'op_name="((?:[^"\\]|\\.)*)"')


def parse_module(hlo_text: str) -> HloModule:
    """Computations of optimized HLO text, by name, each with its instructions in file order."""
    return _parse_module(hlo_text)


def computation_multipliers(module: HloModule) -> dict[str, tuple[int, bool]]:
    """(executions per ENTRY run, every enclosing trip count known) for each computation reachable from ENTRY,
    with trip counts found as ``parse_collectives`` finds them (see the module docstring)."""
    return _multipliers(module)


def called_computations(instruction: HloInstruction, attribute: str) -> list[str]:
    """Names of the computations an instruction's attribute (``calls``, ``body``, ``to_apply``, ...) names."""
    return _called(instruction.attributes.get(attribute, ""))


def operand_shapes(instruction: HloInstruction, computation: HloComputation) -> list[str]:
    """Printed shape of each operand of an instruction that is defined in ``computation`` (literals skipped)."""
    return [
        _operand_shape(operand, computation)
        for operand in instruction.operands
        if " " in operand or _operand_name(operand) in computation.instructions
    ]


def op_name(instruction: HloInstruction) -> str | None:
    """The ``metadata={op_name=...}`` that JAX writes (name scopes, haiku module names, primitive), if any."""
    found = _OP_NAME.search(instruction.attributes.get("metadata", ""))
    return found.group(1) if found else None


def array_dims(shape: str) -> tuple[int, ...]:
    """Dimensions of an array shape "f32[4,8]{1,0}" -> (4, 8); a bounded dynamic dim counts at its bound."""
    found = _ARRAY_SHAPE.search(shape)
    if not found:
        raise ValueError(f"{shape!r} is not an array shape")
    return tuple(int(d.strip().removeprefix("<=")) for d in found.group(2).split(",") if d.strip())


__all__ += [
    "HloComputation",
    "HloInstruction",
    "HloModule",
    "array_dims",
    "called_computations",
    "computation_multipliers",
    "op_name",
    "operand_shapes",
    "parse_module",
]
