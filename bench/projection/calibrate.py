"""CALIBRATION of the projection against published runs (``python -m bench validate`` records, kind tpu-aot with
bench.records.schema.Validation's fields). Pure: no JAX.

The projection prices a step as work plus ICI (bench.projection.throughput). A real pod reaches only part of each:
its matmuls run below the MXU peak, its memory-bound ops below HBM bandwidth, its collectives below the link rate or
partly hidden under compute. So the calibrated step time is

    step_s = k_mxu * MXU-bound s + k_hbm * HBM-bound s + k_ici * ICI s

with the split of Projection.work_split_s and the projection's ICI time (bandwidth and latency), each term at no
overlap; ``1 / k`` is that part's efficiency (k_ici below 1 says the collectives hide under compute). Three
parameters at most, and never more than half the runs: with fewer than six runs one shared k scales the whole step.
One set of parameters for every generation: seven runs on four generations cannot support a set per generation.

The fit minimises the sum of squared log(predicted / published) over log k. Log ratios because the errors of a
throughput model are multiplicative (a 10% slow matmul is 10% at any scale), the runs span an order of magnitude in
tokens/s (a linear fit would be the largest run's), and over- and under-prediction by the same factor weigh the
same; fitting log k keeps every k positive.

How far to trust it: ``leave_one_out`` refits without each run and predicts it, so every error is on a run the fit
did not see.
"""

from __future__ import annotations

import enum
import functools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from bench.projection import throughput
from bench.projection.throughput import ProjectionModel

# Where ``python -m bench validate`` writes the committed runs' records (noxfile.py VALIDATION_OUT).
VALIDATION_DIR = Path(__file__).resolve().parents[2] / "reports" / "validation"


class Part(enum.Enum):
    """A part of the modelled step time with an efficiency of its own."""

    MXU = "MXU-bound work"
    HBM = "HBM-bound work"
    ICI = "ICI"


PARTS = tuple(Part)
SHARED = "whole step"  # the one parameter of a fit with fewer than 2 x len(PARTS) runs


@dataclass(frozen=True)
class Observation:
    """One published run: its projection's parts and what the source measured."""

    run_id: str
    tokens_per_step: float
    parts_s: Mapping[Part, float]
    published_tokens_per_s: float
    projected_tokens_per_s: float  # the headline model's full-overlap bound, as the record states it

    @property
    def efficiency(self) -> float:
        """Published over projected: the share of the uncalibrated projection the real run reached."""
        return self.published_tokens_per_s / self.projected_tokens_per_s


class CalibrationError(ValueError):
    """Too few runs to fit, or a record without what the fit needs."""


def observation(record: Mapping[str, Any], model: ProjectionModel | None = None) -> Observation:
    """The parts of a validation record's projection under ``model`` (default: the headline model)."""
    p = _projection(record, model)
    return Observation(
        run_id=str(record.get("validation_id") or p.variant),
        tokens_per_step=p.tokens_per_step,
        parts_s=parts_s(p),
        published_tokens_per_s=float(record["published_tokens_per_s"]),
        projected_tokens_per_s=p.tokens_per_s_overlap,
    )


def _projection(record: Mapping[str, Any], model: ProjectionModel | None) -> throughput.Projection:
    """The record under ``model``, by default the headline model (throughput.HEADLINE), which the fit calibrates."""
    return throughput.project(record, model=model)


def parts_s(p: throughput.Projection) -> dict[Part, float]:
    """Seconds of each part of a projected step, at no overlap."""
    mxu_s, hbm_s = p.work_split_s
    return {Part.MXU: mxu_s, Part.HBM: hbm_s, Part.ICI: p.ici_s}


@dataclass(frozen=True)
class Fit:
    """Slowdown factors k (seconds on a real pod per modelled second) fitted on ``run_ids``."""

    k: tuple[tuple[str, float], ...]  # Part.value (or SHARED) -> k
    run_ids: tuple[str, ...]

    def step_s(self, parts_s: Mapping[Part, float]) -> float:
        k = dict(self.k)
        if SHARED in k:
            return k[SHARED] * sum(parts_s.values())
        return sum(k[part.value] * parts_s.get(part, 0.0) for part in PARTS)

    def tokens_per_s(self, obs: Observation) -> float:
        return obs.tokens_per_step / self.step_s(obs.parts_s)

    @property
    def n_params(self) -> int:
        return len(self.k)


def parameters_for(runs: int) -> tuple[str, ...]:
    """The fit's parameters for ``runs`` runs: at most half as many parameters as runs."""
    if runs >= 2 * len(PARTS):
        return tuple(part.value for part in PARTS)
    if runs >= 2:
        return (SHARED,)
    raise CalibrationError(f"{runs} run(s): a fit needs at least 2")


def fit(observations: Sequence[Observation]) -> Fit:
    """Least squares on log(predicted / published) over log k (the module docstring says why). A part with no time
    in any run has nothing to fit and keeps k = 1."""
    names = parameters_for(len(observations))
    # the columns of the design: seconds of each parameter's part per run
    columns = [
        [sum(o.parts_s.values()) if name == SHARED else o.parts_s.get(Part(name), 0.0) for o in observations]
        for name in names
    ]
    free = [i for i, column in enumerate(columns) if any(t > 0 for t in column)]
    if not free:
        raise CalibrationError("no run has any modelled time: nothing to fit")
    seconds = np.array([columns[i] for i in free]).T  # [runs, free parameters]
    constant = np.array(columns).T.sum(axis=1) - seconds.sum(axis=1)  # [runs]: the parts kept at k = 1
    target = np.array([o.tokens_per_step / o.published_tokens_per_s for o in observations])  # published step s

    def log_ratios(log_k: np.ndarray) -> np.ndarray:
        # log(predicted tokens/s / published) = log(published step / predicted step)
        return np.log(target) - np.log(seconds @ np.exp(log_k) + constant)

    start = np.full(len(free), math.log(statistics.geometric_mean(target / (seconds.sum(axis=1) + constant))))
    solved = least_squares(log_ratios, start, method="lm", xtol=1e-12, ftol=1e-12)
    k = dict.fromkeys(names, 1.0)
    for i, value in zip(free, np.exp(solved.x)):
        k[names[i]] = float(value)
    return Fit(tuple(k.items()), tuple(o.run_id for o in observations))


@dataclass(frozen=True)
class Prediction:
    run_id: str
    published_tokens_per_s: float
    predicted_tokens_per_s: float

    @property
    def error(self) -> float:
        """predicted / published - 1."""
        return self.predicted_tokens_per_s / self.published_tokens_per_s - 1


def leave_one_out(
    observations: Sequence[Observation], fitter: Callable[[Sequence[Observation]], Fit] = fit
) -> list[Prediction]:
    """Each run predicted by ``fitter`` on all the other runs."""
    predictions = []
    for i, held_out in enumerate(observations):
        rest = [o for j, o in enumerate(observations) if j != i]
        predictions.append(
            Prediction(held_out.run_id, held_out.published_tokens_per_s, fitter(rest).tokens_per_s(held_out))
        )
    return predictions


@dataclass(frozen=True)
class Summary:
    """How far a prediction can be trusted."""

    fit: Fit
    loo: tuple[Prediction, ...]
    efficiency_low: float  # the uncalibrated projection's spread: min and max published / projected
    efficiency_high: float

    @property
    def median_abs_error(self) -> float:
        return statistics.median(abs(p.error) for p in self.loo)

    @property
    def max_abs_error(self) -> float:
        return max(abs(p.error) for p in self.loo)


def summarise(observations: Sequence[Observation]) -> Summary:
    """The fit on every run, each run's leave-one-out prediction, and the uncalibrated spread."""
    efficiencies = [o.efficiency for o in observations]
    # leave-one-out needs a fit on len - 1 runs
    loo = leave_one_out(observations) if len(observations) >= 3 else []
    return Summary(fit(observations), tuple(loo), min(efficiencies), max(efficiencies))


def validation_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last ok record of each published run that has a projection."""
    latest: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if r.get("validation_id") and r.get("status", "ok") == "ok" and r.get("projected_tokens_per_s"):
            latest[r["validation_id"]] = r
    return list(latest.values())


def model_spread(records: Sequence[Mapping[str, Any]]) -> dict[ProjectionModel, tuple[int, float]]:
    """Per work model, over the runs priced by every model in MODEL_FIELDS: (runs, max / min efficiency). The model
    whose efficiency varies less from run to run needs less of a calibration to predict a run it has not seen."""
    both = [
        r
        for r in records
        if all(m.value in (r.get("projected_tokens_per_s_by_model") or {}) for m in throughput.MODEL_FIELDS)
    ]
    spread = {}
    for model in throughput.MODEL_FIELDS:
        eff = [r["published_tokens_per_s"] / r["projected_tokens_per_s_by_model"][model.value][1] for r in both]
        spread[model] = (len(eff), max(eff) / min(eff) if eff else math.nan)
    return spread


@functools.cache
def committed_summary(directory: Path = VALIDATION_DIR) -> Summary | None:
    """The calibration on the committed runs' records alone (reports/published-runs/, their records in
    ``directory``); None where there are too few. A run passed with --run is calibrated by this fit, never by a fit
    that saw it."""
    from bench.records.store import load_records

    try:
        return summarise([observation(r) for r in committed_only(load_records(directory).records)])
    except CalibrationError:
        return None


def committed_only(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The validation records of the committed run files (reports/published-runs/), none of a file from elsewhere."""
    from bench.projection.published import committed_runs, load_runs

    committed = {run.id for run in load_runs(committed_runs())}
    return [r for r in validation_records(records) if r["validation_id"] in committed]


def calibrated_tokens_per_s(record: Mapping[str, Any], fit: Fit | None = None) -> float | None:
    """CALIBRATED PROJECTION of a tpu-aot record's tokens/s: ``fit`` (default the committed fit) applied to its
    headline projection's parts; None without a fit."""
    return calibrated_projection(_projection(record, None), fit)


def calibrated_projection(p: throughput.Projection, fit: Fit | None = None) -> float | None:
    """``fit`` (default the committed fit) applied to a projection under the headline model; None without a fit or
    under another model."""
    if fit is None:
        summary = committed_summary()
        fit = summary.fit if summary else None
    if fit is None or p.model is not throughput.HEADLINE:
        return None
    return p.tokens_per_step / fit.step_s(parts_s(p))
