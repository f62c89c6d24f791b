"""The GEMMs of a compiled step, read from its optimized HLO: each dot's operand shapes, dimension numbers, block
component and executions per step, for timing each alone (``bench.measure.gemm_floor``).

Every ``dot`` counts, at top level or inside a fusion (XLA CPU wraps most in YNNPACK fusions), times the trip
counts of the loops around it (``bench.analysis.hlo.computation_multipliers``), and so does every oneDNN matmul
custom call (jaxlib 0.4.30's CPU pipeline rewrites dots to them: [.., M, K] x [.., K, N], ``transpose_a`` and
``transpose_b`` in their config), as the dot it computes. Convolutions are counted apart as not timed, so a floor
never claims the whole step where it covers only part of it.
"""

from __future__ import annotations

import dataclasses
import re

from bench.analysis.components import _is_matmul, component_of, matmul_flops
from bench.analysis.hlo import (
    array_dims,
    computation_multipliers,
    op_name,
    operand_shapes,
    parse_module,
)

_DTYPE = re.compile(r"^([a-z][a-z0-9]*)\[")


@dataclasses.dataclass(frozen=True)
class Gemm:
    """One dot of the program: enough to build the same ``lax.dot_general`` on operands of its shapes."""

    name: str
    component: str  # bench.analysis.components' label, "unattributed" where no scope names one
    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    lhs_dtype: str  # HLO element types: f32, bf16, ...
    rhs_dtype: str
    out_dtype: str
    lhs_contracting: tuple[int, ...]
    rhs_contracting: tuple[int, ...]
    lhs_batch: tuple[int, ...]
    rhs_batch: tuple[int, ...]
    flops: int  # per execution
    executions: int  # per step

    @property
    def signature(self) -> tuple:
        """What makes two dots the same work to time: shapes, element types and dimension numbers."""
        return dataclasses.astuple(self)[2:11]


@dataclasses.dataclass(frozen=True)
class ProgramGemms:
    gemms: list[Gemm]
    untimed_matmuls: int  # convolutions (and oneDNN calls that broadcast an operand), per step: not timed
    untimed_flops: int  # their FLOPs per step


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in re.findall(r"\d+", text))


def _dtype(shape: str) -> str:
    found = _DTYPE.match(shape.strip().lstrip("("))
    if not found:
        raise ValueError(f"{shape!r} has no element type")
    return found.group(1)


def program_gemms(hlo_text: str) -> ProgramGemms:
    """The dots of one optimized HLO module, each with its executions per run of ENTRY."""
    module = parse_module(hlo_text)
    gemms, untimed, untimed_flops = [], 0, 0
    # every computation that runs, fused ones included, with its executions per step (a fusion's are its caller's)
    for name, (multiplier, _known) in computation_multipliers(module).items():
        computation = module.computations[name]
        for instruction in computation.instructions.values():
            if not _is_matmul(instruction):
                continue
            flops = matmul_flops(instruction, computation)
            lhs, rhs = operand_shapes(instruction, computation)[:2]
            dims = _dimension_numbers(instruction, array_dims(lhs), array_dims(rhs))
            if dims is None:
                untimed += multiplier
                untimed_flops += multiplier * flops
                continue
            component = component_of(op_name(instruction))
            gemms.append(
                Gemm(
                    instruction.name,
                    component.value if component is not None else "unattributed",
                    array_dims(lhs),
                    array_dims(rhs),
                    _dtype(lhs),
                    _dtype(rhs),
                    _dtype(instruction.shape),  # a oneDNN call's tuple: its first element, the result
                    *dims,
                    flops=flops,
                    executions=multiplier,
                )
            )
    return ProgramGemms(gemms, untimed, untimed_flops)


def _dimension_numbers(instruction, lhs: tuple[int, ...], rhs: tuple[int, ...]) -> tuple[tuple[int, ...], ...] | None:
    """(lhs contracting, rhs contracting, lhs batch, rhs batch) of a dot or a oneDNN matmul; None for others."""
    attributes = instruction.attributes
    if instruction.opcode == "dot":
        keys = ("lhs_contracting_dims", "rhs_contracting_dims", "lhs_batch_dims", "rhs_batch_dims")
        return tuple(_ints(attributes.get(key, "")) for key in keys)
    if instruction.opcode != "custom-call" or len(lhs) != len(rhs) or len(lhs) < 2:
        return None  # a convolution, or a oneDNN call broadcasting one operand's batch dims
    config = attributes.get("backend_config", "")
    transpose_a, transpose_b = '"transpose_a":true' in config, '"transpose_b":true' in config
    rank, batch = len(lhs), tuple(range(len(lhs) - 2))
    return (rank - 2 if transpose_a else rank - 1,), (rank - 1 if transpose_b else rank - 2,), batch, batch
