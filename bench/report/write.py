"""``write_report``: RUN_DIR/REPORT.md and its plots, the report's public entry point (``python -m bench report``).

The report answers "which variant, by how much, and why" first, in the form its kind of run asks for (bench.report.
kinds), then the sections that have something to show. Every number in it comes from the run's records, from GPT-J's
published figures (bench.hardware.baseline) or from the hardware table (bench.hardware.table); the figures computed
from TPU ahead-of-time compiles are labelled PROJECTION wherever they appear. Input that cannot be used is named at
the top of the report and left out; the rest is reported. The report ends with the command that writes it again.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.hardware import baseline
from bench.records.schema import RecordKind
from bench.records.store import RESULTS
from bench.report.analyse import Analysis, analyse
from bench.report.format import fmt, source, wrap_prose
from bench.report.kinds import KIND_PLOTS, KINDS, RunKind, detect
from bench.report.load import RunRecords, config_text, latest_ok, load_run
from bench.report.sections import validation
from bench.report.sections.comm import comm_frame
from bench.report.sections.compare import regression_banner
from bench.report.sections.components import component_frame
from bench.report.sections.environment import report_command
from bench.report.sections.gpu import traced_components
from bench.report.sections.projection import projection_frame
from bench.report.stats import compare_runs

REPORT = "REPORT.md"
PLOTS = {  # plot name: its PNG beside REPORT.md
    "throughput": "throughput.png",
    "effects": "effects.png",
    "utilisation": "utilisation.png",
    "wire": "wire_bytes.png",
    "memory": "memory_throughput.png",
    "projection": "projection_tpu.png",
    "components": "components_tpu.png",
    "measured_components": "components.png",
    "validation": validation.PLOT,
}


def skipped_banner(run: RunRecords, unprojected: Sequence[str]) -> list[str]:
    if not run.skipped and not unprojected:
        return []
    lines = ["> **Skipped input** (this report covers the rest):", ">"]
    lines += [f"> - {s}" for s in run.skipped]
    lines += [f"> - tpu-aot record not projected: {u}" for u in unprojected]
    return lines + [""]


def counts_line(run: RunRecords) -> str:
    """How many records of each kind the report read and how many failed, and of what configuration."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in run.measured:
        groups.setdefault(str(r.get("kind")), []).append(r)
    config = f" of {config_text(run.config)}" if run.config else ""
    if run.aot:
        groups[f"{RecordKind.TPU_AOT.value} compiles"] = list(run.aot)
    if run.search:
        groups[f"{RecordKind.TPU_AOT.value} compiles of the design-space search"] = list(run.search)
    if run.validation:
        groups[f"{RecordKind.TPU_AOT.value} compiles of published runs"] = list(run.validation)
    if run.resized:
        groups[f"{RecordKind.TPU_AOT.value} compiles of resized models"] = list(run.resized)
    said = []
    for kind, records in groups.items():
        failed = sum(r["status"] == "failed" for r in records)
        said.append(f"{len(records)} {kind} ({len(records) - failed} ok, {failed} failed)")
    if said and run.measured:
        said[len({str(r.get("kind")) for r in run.measured}) - 1] += config  # the measured groups come first
    sources = ", ".join(str(p) for p in (run.run_dir / RESULTS, *run.aot_dirs))
    left_out = f"; {len(run.skipped)} left out (below)" if run.skipped else ""
    return f"Records: {'; '.join(said) or 'none'}; from {sources}{left_out}."


def render(a: Analysis, kind: RunKind | None = None) -> str:
    """REPORT.md of ``a``, its sections chosen by the kind of run (read from the records unless given)."""
    run = a.run
    kind = kind or detect(run)
    sections = KINDS[kind]
    lines = [f"# gptj-bench report: {run.run_dir.name} ({kind.value})", ""]
    lines += sections[0].lines(a)  # the answer first
    lines += [counts_line(run), ""]
    lines += regression_banner(a) if kind is not RunKind.CPU_BLOCK else []  # its answer is the comparison
    lines += skipped_banner(run, a.unprojected)
    for section in sections[1:]:
        shown = section.lines(a)
        lines += shown + [""] if shown else []
    lines += ["---", "", f"Written by {source(render)}, with:", "", "```", report_command(a), "```"]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))  # a section's closing blank line and the separator's
    return wrap_prose(text.rstrip()) + "\n"


def _effect_pairs(a: Analysis) -> pd.DataFrame:
    """The effects plot's input: each design pair's two tokens/s (environment effects left out)."""
    return pd.DataFrame(
        [
            {
                "comparison": e.comparison.label,
                "a": e.comparison.a,
                "b": e.comparison.b,
                "tokens_per_s_a": a.summary.loc[p.a_index, "tokens_per_s"],
                "tokens_per_s_b": a.summary.loc[p.b_index, "tokens_per_s"],
            }
            for e in a.effects
            if e.comparison.axis != "jax"
            for p in e.pairs
        ]
    )


def draw(a: Analysis, out_dir: Path) -> dict[str, str]:
    """Write the PNGs beside REPORT.md; returns {plot name: file name} for the ones with data."""
    from bench.report import plots  # matplotlib is imported only when plots are drawn

    for name in PLOTS.values():  # a plot with no data this time must not leave last time's picture behind
        (out_dir / name).unlink(missing_ok=True)
    remat = next(e for e in a.effects if e.comparison.axis == "remat")
    references = {
        "GPT-J-6B MFU (6N), published basis": baseline.utilisation(baseline.effective_flops_per_s()),
        "GPT-J-6B HFU, published basis": baseline.utilisation(
            baseline.hardware_flops_per_s_total(as_benchmark_py=True)
        ),
    }
    jobs: dict[str, Callable[[Path], Path | None]] = {
        "throughput": lambda p: plots.throughput(a.summary, p),
        "effects": lambda p: plots.effects(_effect_pairs(a), p),
        "utilisation": lambda p: plots.utilisation(a.summary, references, p),
        "wire": lambda p: plots.wire_bytes(comm_frame(latest_ok(a.run.measured, "topology")), p),
        "memory": lambda p: plots.memory_vs_throughput(a.summary, [(q.a_index, q.b_index) for q in remat.pairs], p),
        "projection": lambda p: plots.projection(
            projection_frame(a.projections),
            baseline.TOKENS_PER_S.value,
            f"GPT-J-6B measured {fmt(baseline.TOKENS_PER_S.value)} tokens/s (published)",
            p,
        ),
        "components": lambda p: plots.components(component_frame(a.projections), p),
        # a one-GPU run's traced run; the CPU runs' profiles are tables in their own section
        "measured_components": lambda p: plots.measured_components(traced_components(a) if a.run.device else {}, p),
        "validation": lambda p: validation.plot(a.run.validation, p),
    }
    wanted = KIND_PLOTS.get(detect(a.run), tuple(jobs))
    return {
        name: PLOTS[name] for name, job in jobs.items() if name in wanted and job(out_dir / PLOTS[name]) is not None
    }


def build(run_dir: Path, compare: Path | None = None, aot_dirs: Sequence[Path] = ()) -> Analysis:
    """The analysis of RUN_DIR's records (and ``aot_dirs``' compiles), compared with ``compare``'s run if given."""
    analysis = analyse(load_run(Path(run_dir), aot_dirs))
    if compare is not None:
        analysis.comparison = compare_runs(analysis.summary, analysis.noise, analysis.run.config, Path(compare))
    return analysis


def write_report(
    run_dir: Path, compare: Path | None = None, aot_dirs: Sequence[Path] = (), *, plots: bool = True
) -> Path:
    """Write RUN_DIR/REPORT.md (and its PNG plots unless ``plots`` is False); returns the report's path.

    Raises ``ReportError`` (a ConfigError) when RUN_DIR holds nothing usable; what was skipped goes to stderr too.
    """
    analysis = build(run_dir, compare, aot_dirs)
    if plots:
        analysis.figures = draw(analysis, Path(run_dir))
    path = Path(run_dir) / REPORT
    path.write_text(render(analysis))
    for line in [*analysis.run.skipped, *analysis.unprojected]:
        print(f"report: skipped: {line}", file=sys.stderr)
    return path
