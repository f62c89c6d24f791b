"""Does the projection hold? Each published run (reports/published-runs/) compiled for its topology and PROJECTED
by every work model, beside the figure its source published, and the calibration fitted on them
(bench/projection/calibrate.py) with its leave-one-out error.

Self-contained: ``section_validation_records`` is a function of the records alone; the report passes it the
records ``python -m bench validate`` wrote (those with ``validation_id``). Nothing to show, nothing printed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.projection import calibrate, throughput
from bench.projection.calibrate import SHARED, Part
from bench.projection.throughput import ProjectionModel
from bench.report.format import fmt, fmt_ratio, markdown_table, pct

TITLE = "## Does the projection hold?"
PLOT = "validation.png"
MEANING = {
    Part.MXU.value: "seconds on a pod per second the roofline gives the step's FLOPs at the MXU peak",
    Part.HBM.value: "seconds per second of HBM-bound work (the per-op roofline's time beyond the FLOPs' time)",
    Part.ICI.value: "seconds per second of ICI time at no overlap (below 1: collectives hidden under compute)",
    SHARED: "seconds on a pod per modelled second of the whole step at no overlap",
}


def is_validation(record: Mapping[str, Any]) -> bool:
    return bool(record.get("validation_id"))


def validation_frame(records: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, calibrate.Summary | None]:
    """One row per published run (numbers, not text), and the calibration over them (None with too few runs)."""
    runs = calibrate.validation_records([r for r in records if is_validation(r)])
    summary = None
    if len(runs) >= 2:
        summary = calibrate.summarise([calibrate.observation(r) for r in runs])
    loo = {p.run_id: p for p in (summary.loo if summary else ())}
    rows = []
    for r in runs:
        by_model = r.get("projected_tokens_per_s_by_model") or {}
        held_out = loo.get(r["validation_id"])
        row = {
            "run": r["validation_id"],
            "topology": r.get("topology"),
            "published": r["published_tokens_per_s"],
            "headline": throughput.HEADLINE.value,  # not the record's projected_model: records may predate HEADLINE
            "calibrated": calibrate.calibrated_tokens_per_s(r, summary.fit) if summary else None,
            "loo_predicted": held_out.predicted_tokens_per_s if held_out else None,
            "loo_error": held_out.error if held_out else None,
            "fits_hbm": r.get("fits_hbm"),
        }
        for model in ProjectionModel:
            row[model.value] = (by_model.get(model.value) or [None, None])[1]
        rows.append(row)
    return pd.DataFrame(rows), summary


def section_validation_records(
    records: Sequence[Mapping[str, Any]], figures: Mapping[str, str] | None = None
) -> list[str]:
    frame, summary = validation_frame(records)
    if frame.empty:
        return []
    lines = [
        TITLE,
        "",
        f"{len(frame)} published training runs, each compiled for its own topology (compile-only) and priced (a "
        "PROJECTION) by every work model the suite has (full-overlap bound), beside the figure its source published "
        "converted to tokens/s. Calibrated: the fit below applied to the run's projection; leave-one-out: the run "
        "predicted by a fit on the other runs alone.",
        "",
    ]
    if summary is not None:
        lines += [_trust(summary), ""] + _misses(summary, records)
    lines += [_model_choice(records), "", markdown_table(_display(frame)), ""]
    if PLOT in (figures or {}).values():
        lines += [f"![PROJECTION against published tokens/s]({PLOT})", ""]
    if summary is not None:
        lines += _parameters(summary) + [""]
    lines += _not_fitting(frame) + _unprojected(records) + _conversions(records) + _notes(records)
    return lines


def _unprojected(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The published runs with no projection (the compiler refused them, say), each with its error: a run that ran on
    real hardware and does not compile here is a finding about the memory model, not a run to drop."""
    projected = {r["validation_id"] for r in calibrate.validation_records(records)}
    latest = {r["validation_id"]: r for r in records if is_validation(r)}
    missing = [r for run_id, r in latest.items() if run_id not in projected]
    if not missing:
        return []
    lines = ["Published runs with no projection here (each ran on real hardware):", ""]
    lines += [
        f"- {r['validation_id']} ({r.get('topology')}): {(r.get('error') or 'no projection')[:300]}" for r in missing
    ]
    return lines + [""]


def _trust(summary: calibrate.Summary) -> str:
    spread = (
        f"Uncalibrated, the runs reached {pct(summary.efficiency_low, 3)} to {pct(summary.efficiency_high, 3)} of "
        f"their projection ({fmt_ratio(summary.efficiency_high / summary.efficiency_low)} apart)."
    )
    if not summary.loo:
        return spread + " Too few runs for a leave-one-out error."
    return (
        f"**How far to trust a calibrated PROJECTION: leave-one-out error median {pct(summary.median_abs_error, 3)}, "
        f"maximum {pct(summary.max_abs_error, 3)}** (|predicted / published - 1| of each run predicted by a fit that "
        f"did not see it). " + spread
    )


# A leave-one-out error beyond this misses: the bar a calibrated prediction is held to (median 10%, maximum 20%).
MISS = 0.20


def _misses(summary: calibrate.Summary, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each run the leave-one-out prediction misses by more than MISS, with its modelled step by part: where the
    fit's efficiencies would have to differ for it."""
    parts = {
        r["validation_id"]: calibrate.observation(r).parts_s
        for r in calibrate.validation_records([r for r in records if is_validation(r)])
    }
    lines = []
    for p in summary.loo:
        if abs(p.error) > MISS:
            total = sum(parts[p.run_id].values())
            shares = ", ".join(f"{pct(t / total, 3)} {part.value}" for part, t in parts[p.run_id].items())
            lines.append(f"- misses {p.run_id} by {p.error:+.1%}; its modelled step (no overlap): {shares}")
    if not lines:
        return []
    return [f"Runs predicted worse than {pct(MISS, 2)} when held out:", "", *lines, ""]


def _model_choice(records: Sequence[Mapping[str, Any]]) -> str:
    """Which work model is the headline, with the data that chose it."""
    spread = calibrate.model_spread(calibrate.validation_records([r for r in records if is_validation(r)]))
    headline, cross = throughput.HEADLINE, throughput.CROSS_CHECK
    (runs, h), (_, c) = spread[headline], spread[cross]
    if not runs:
        compared = "No run here is priced by both work models."
    else:
        compared = (
            f"On the {runs} run(s) priced by both, PROJECTION: published / projected varies {fmt_ratio(h)} between "
            f"runs under the {headline.value} and {fmt_ratio(c)} under the {cross.value} (max / min)."
        )
    return (
        f"{compared} The {headline.value} is the headline model of every ranking in these reports "
        f"(bench/projection/throughput.py HEADLINE), the {cross.value} a cross-check: it alone prices every generation "
        "(libtpu gives no estimate for v4, v5e and v5p)."
    )


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame(
        {"run": frame["run"], "topology": frame["topology"], "published tokens/s": frame["published"].map(fmt)}
    )
    for model in ProjectionModel:
        if frame[model.value].notna().any():
            shown[f"PROJECTED, {model.value}"] = frame[model.value].map(fmt)
    shown["headline / published"] = [
        fmt_ratio(row[row["headline"]] / row["published"]) if row["headline"] and row[row["headline"]] else "n/a"
        for _, row in frame.iterrows()
    ]
    shown["calibrated"] = frame["calibrated"].map(fmt)
    shown["leave-one-out predicted"] = frame["loo_predicted"].map(fmt)
    shown["leave-one-out error"] = frame["loo_error"].map(lambda e: "n/a" if e is None or pd.isna(e) else f"{e:+.1%}")
    return shown


# Below this k a part has no time left in the fitted step: its efficiency 1/k is no figure to print
NEGLIGIBLE_K = 1e-3


def _k(k: float) -> str:
    return f"{k:.3f}" if k >= NEGLIGIBLE_K else f"{k:.1e}"


def _efficiency(k: float) -> str:
    return pct(1 / k, 3) if k >= NEGLIGIBLE_K else "none: the fit gives this part no time"


def _parameters(summary: calibrate.Summary) -> list[str]:
    rows = pd.DataFrame(
        [
            {"part": name, "k": _k(k), "efficiency 1/k": _efficiency(k), "meaning": MEANING[name]}
            for name, k in summary.fit.k
        ]
    )
    return [
        f"The fit (least squares on log(predicted / published) over log k, {summary.fit.n_params} parameter(s) on "
        f"{len(summary.fit.run_ids)} runs, bench/projection/calibrate.py): calibrated step = sum of k x each part's "
        "modelled seconds.",
        "",
        markdown_table(rows),
    ]


def _not_fitting(frame: pd.DataFrame) -> list[str]:
    misses = [run for run, fits in zip(frame["run"], frame["fits_hbm"]) if fits is False]
    if not misses:
        return []
    return [
        f"The compiler's memory estimate says {', '.join(misses)} do(es) not fit HBM, although each ran on real "
        "hardware: a finding about the memory model, not about the run.",
        "",
    ]


def _conversions(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["Each published figure as tokens/s, by its source's own FLOP convention:", ""]
    for r in calibrate.validation_records([r for r in records if is_validation(r)]):
        steps = "; ".join(f"{text} = {fmt(value)}" for text, value in r.get("published_conversion") or [])
        lines.append(f'- **{r["validation_id"]}**: "{r["published_quote"]}" ({r["published_source"]}). {steps}')
    return lines + [""]


def _notes(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for r in calibrate.validation_records([r for r in records if is_validation(r)]):
        for note in r.get("validation_notes") or []:
            lines.append(f"- {r['validation_id']}: {note}")
    return ["Where a compile differs from what its source ran:", "", *lines, ""] if lines else []


def plot(records: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """PROJECTED (each model) and calibrated tokens/s against published, log axes, with the identity line."""
    frame, _ = validation_frame(records)
    if frame.empty:
        return None
    from matplotlib.figure import Figure

    from bench.report.plots import _save

    figure = Figure(figsize=(6.5, 6))
    axes = figure.add_subplot()
    markers = {ProjectionModel.XLA_OPTIMAL: "s", ProjectionModel.HLO_ROOFLINE: "o", ProjectionModel.ROOFLINE: "^"}
    values = list(frame["published"])
    for model, marker in markers.items():
        shown = frame.dropna(subset=[model.value])
        if not shown.empty:
            axes.scatter(shown["published"], shown[model.value], marker=marker, label=f"PROJECTION: {model.value}")
            values += list(shown[model.value])
    calibrated = frame.dropna(subset=["loo_predicted"])
    if not calibrated.empty:
        axes.scatter(
            calibrated["published"],
            calibrated["loo_predicted"],
            marker="*",
            s=120,
            color="black",
            label="calibrated, leave-one-out",
        )
        values += list(calibrated["loo_predicted"])
    for _, row in frame.iterrows():
        y = row[row["headline"]] if row["headline"] and pd.notna(row[row["headline"]]) else row["published"]
        axes.annotate(row["run"], (row["published"], y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    low, high = min(values) / 1.5, max(values) * 1.5
    axes.plot([low, high], [low, high], color="gray", linestyle="--", label="predicted = published")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("published tokens/s")
    axes.set_ylabel("predicted tokens/s (PROJECTION)")
    axes.set_title("Does the projection hold? Published TPU runs", fontsize=10)
    axes.legend(fontsize=7, loc="upper left")
    return _save(figure, path)


def section_validation(a: Any) -> list[str]:
    """The report's hook: the published runs' records among those the report read (bench.report.load)."""
    return section_validation_records(a.run.validation, a.figures)


def calibrated_cell(p: Any, summary: calibrate.Summary | None) -> str:
    """A projection's calibrated tokens/s with its leave-one-out interval (x (1 -/+ the largest leave-one-out
    error)), for a ranking table; n/a without a calibration or under another model than the headline."""
    value = calibrate.calibrated_projection(p, summary.fit) if summary else None
    if value is None:
        return "n/a"
    if not summary.loo:
        return fmt(value)
    e = summary.max_abs_error
    return f"{fmt(value)} ({fmt(value * (1 - e))} to {fmt(value * (1 + e))})"


def margin_line(best: Any, anchor: Any, summary: calibrate.Summary | None) -> str:
    """Whether ``best``'s calibrated margin over ``anchor`` exceeds the calibration's leave-one-out interval: the
    two intervals (each x (1 -/+ the largest leave-one-out error)) must not overlap."""
    if summary is None or not summary.loo:
        runs = len(summary.fit.run_ids) if summary else 0
        return (
            f"- CALIBRATION: {runs} published run(s) calibrated, too few for a leave-one-out interval (3 needed): "
            "whether the margin would hold on hardware is not decided."
        )
    high, low = calibrate.calibrated_projection(best, summary.fit), calibrate.calibrated_projection(anchor, summary.fit)
    if high is None or low is None:
        return f"- CALIBRATION: the two are not both priced by {throughput.HEADLINE.value}: no calibrated margin."
    e = summary.max_abs_error
    exceeds = high * (1 - e) > low * (1 + e)
    return (
        f"- CALIBRATED PROJECTION: {fmt(high)} against {fmt(low)} tokens/s, {fmt_ratio(high / low)}; the leave-one-out "
        f"interval is +/-{pct(e, 3)}, so the margin {'exceeds' if exceeds else 'does not exceed'} it"
        f" ({fmt_ratio((1 + e) / (1 - e))} needed)."
    )


def validation_lead(a: Any) -> list[str]:
    """A validate run's answer: how far the projection sits from the published runs, and how far a calibrated
    prediction can be trusted (leave-one-out)."""
    frame, summary = validation_frame(a.run.validation)
    runs = len({r.get("validation_id") for r in a.run.validation})
    if summary is None:
        return [f"PROJECTION against {runs} published TPU run(s): none priced, so no calibration (see below)."]
    lines = [
        f"PROJECTION against {runs} published TPU runs ({len(summary.fit.run_ids)} priced by "
        f"{throughput.HEADLINE.value}): uncalibrated, the runs reached {pct(summary.efficiency_low, 3)} to "
        f"{pct(summary.efficiency_high, 3)} of their projection."
    ]
    if summary.loo:
        lines.append(
            f"Calibrated, a held-out run is predicted within {pct(summary.median_abs_error, 3)} (median) and "
            f"{pct(summary.max_abs_error, 3)} (worst) of its published figure (leave-one-out)."
        )
    return lines
