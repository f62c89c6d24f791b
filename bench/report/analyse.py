"""Everything the report's sections read, computed once from a run's records: ``Analysis``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.analysis.extrapolate import substitute_optimal_seconds
from bench.projection import throughput as projection
from bench.report.load import RunRecords, latest_ok
from bench.report.stats import (
    CompareResult,
    Effect,
    Noise,
    cross_environment_effects,
    effects,
    failures,
    run_noise,
    summarise,
)


@dataclass
class Analysis:
    run: RunRecords
    summary: pd.DataFrame
    failed: pd.DataFrame
    noise: Noise
    effects: list[Effect]
    cross_effects: list[Effect]
    projections: list[projection.Projection]
    unprojected: list[str]
    comparison: CompareResult | None = None
    figures: dict[str, str] = field(default_factory=dict)  # plot name -> file name beside REPORT.md


def analyse(run: RunRecords) -> Analysis:
    summary = summarise(run.measured)
    found = effects(summary)
    projected, unprojected = project_all(run.aot)
    return Analysis(
        run=run,
        summary=summary,
        failed=failures(run.measured),
        noise=run_noise(summary),
        effects=found,
        cross_effects=cross_environment_effects(summary, found),
        projections=projected,
        unprojected=unprojected,
    )


def project_all(aot: Sequence[Mapping[str, Any]]) -> tuple[list[projection.Projection], list[str]]:
    """Every tpu-aot record (the last one of each variant, JAX version and topology) on each of its peak bases (one
    where the compiler's estimate prices the work)."""
    projected, unprojected = [], []
    # one compiler's estimate for a ranking: xmap compiles (libtpu 0.0.1) take their shard_map twin's, and say so
    for record in substitute_optimal_seconds(latest_ok(aot, "topology", "preset", "grad_accum")):
        try:
            projected += [projection.project(record, basis) for basis in projection.bases_for_record(record)]
        except ValueError as error:  # ProjectionError, or a topology the hardware table does not know
            unprojected.append(f"{record['variant']} (jax {record.get('jax')}): {error}")
    failed = [
        f"{r['variant']} (jax {r.get('jax')}): compile failed: {first_line(r.get('error'))}"
        for r in aot
        if r["status"] == "failed"
        and r.get("fits_hbm") is not False  # not fitting is a result: see does_not_fit
        and not r.get("refused_by_compiler")  # nor is a kernel the compiler refuses: see sections/kernels_tpu
    ]
    return projected, unprojected + failed


def first_line(text: Any) -> str:
    return str(text or "(no error recorded)").strip().splitlines()[0]
