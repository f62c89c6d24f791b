"""Build one variant's training step on this process's devices, compile it and analyse it (bench.compile.step);
nothing here is timed.

``prepare`` validates the run, compiles the step once and analyses it: HLO collectives against the analytic
model, memory analysis, analytic and XLA FLOPs per step. ``Prepared.step`` runs one step and waits for every
output; bench.measure.pipeline times it and builds the record; the pytest-benchmark suite
(tests/test_benchmarks.py) times it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from bench.analysis.flops import xla_to_hardware_flops_ratio
from bench.compile.step import analyse, build_program, lower, xla_flops_fields, xla_flops_of
from model.config import Mesh, Preset, Variant
from model.program import Program, Scope
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


def prepare(preset: Preset, variant: Variant, mesh: Mesh, scope: Scope = Scope.MODEL) -> Prepared:
    program = build_program(preset, variant, mesh, scope)
    driver = make_driver(variant.strategy, program, mesh, layout=variant.layout)
    lowered, state, batch = lower(driver, program)
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
