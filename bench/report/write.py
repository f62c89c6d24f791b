"""``write_report``: RUN_DIR/REPORT.md and its plots, the report's public entry point (``python -m bench report``).

The report answers "which variant, by how much, and why" against GPT-J-6B's published training throughput. Every
number in it comes from the run's records, from GPT-J's published figures (bench/hardware/baseline.py) or from the
hardware table (bench/hardware/table.py); the v3-256 figures computed from TPU ahead-of-time compiles are labelled
as projections (bench/projection/throughput.py) wherever they appear. Input that cannot be used is named at the top
of the report and left out; the rest is reported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bench.hardware import baseline
from bench.records.store import RESULTS
from bench.report.analyse import Analysis, analyse
from bench.report.format import fmt
from bench.report.load import RunRecords, config_text, latest_ok, load_run
from bench.report.sections.baseline import section_baseline
from bench.report.sections.comm import comm_frame, section_comm
from bench.report.sections.compare import regression_banner, section_compare
from bench.report.sections.components import component_frame
from bench.report.sections.decode import DECODE_DIR, decode_records, section_decode
from bench.report.sections.effects import section_effects
from bench.report.sections.environment import section_environment
from bench.report.sections.headline import section_headline, section_summary
from bench.report.sections.kernels import section_kernels
from bench.report.sections.kernels_tpu import section_kernels_tpu
from bench.report.sections.profiles import section_profiles
from bench.report.sections.projection import projection_frame
from bench.report.sections.search import section_search
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
}
SECTIONS = (
    section_headline,
    section_summary,
    section_effects,
    section_kernels,
    section_baseline,
    section_kernels_tpu,
    section_search,
    section_comm,
    section_profiles,
    section_environment,
    section_compare,
)


def skipped_banner(run: RunRecords, unprojected: Sequence[str]) -> list[str]:
    if not run.skipped and not unprojected:
        return []
    lines = ["> **Skipped input** (this report covers the rest):", ">"]
    lines += [f"> - {s}" for s in run.skipped]
    lines += [f"> - tpu-aot record not projected: {u}" for u in unprojected]
    return lines + [""]


def render(a: Analysis) -> str:
    run = a.run
    ok = sum(r["status"] == "ok" for r in run.measured)
    lines = [
        f"# gptj-bench report: {run.run_dir.name}",
        "",
        f"From {run.run_dir / RESULTS}: {len(run.measured)} measured records ({ok} ok, {len(run.measured) - ok} "
        f"failed) of {config_text(run.config, 'no measured configuration')}; "
        f"{len(run.aot)} TPU ahead-of-time compile records (projection inputs, section 4)"
        + (f"; {len(run.search)} records of the design-space search" if run.search else "")
        + ".",
        "",
    ]
    lines += regression_banner(a)
    lines += skipped_banner(run, a.unprojected)
    for section in SECTIONS:
        lines += section(a) + [""]
    lines += section_decode(decode_records(run.run_dir / DECODE_DIR))
    return "\n".join(lines).rstrip() + "\n"


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
        "GPT-J-6B HFU, published basis": baseline.utilisation(baseline.hardware_flops_per_s(as_benchmark_py=True)),
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
    }
    return {name: PLOTS[name] for name, job in jobs.items() if job(out_dir / PLOTS[name]) is not None}


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
