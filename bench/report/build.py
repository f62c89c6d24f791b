"""``python -m bench report RUN_DIR [--compare OTHER_RUN_DIR] [--aot DIR]``: write RUN_DIR/REPORT.md and its plots.

The report answers "which variant, by how much, and why" against GPT-J-6B's published training throughput. Every
number in it comes from the run's records, from GPT-J's published figures (bench/baseline.py) or from the hardware
table (bench/hardware.py); the v3-256 figures computed from TPU ahead-of-time compiles are labelled as projections
(bench/projection.py) wherever they appear.

Input that cannot be used (a corrupt line, another schema version, a record of another preset or mesh than the
run's main one, a tpu-aot record that cannot be projected) is named at the top of the report and left out; the
rest is reported.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.hardware import baseline, projection
from bench.hardware import table as hardware
from bench.hardware.table import GiB, PeakBasis
from bench.records.store import RESULTS, load_records
from model.config import AXES, PRESETS, ConfigError

REPORT = "REPORT.md"
MiB = 2**20
# A --compare change is flagged only beyond max(noise of either run, this floor): a noise estimate from two
# repeats can be near zero by chance, and timing on a shared machine is rarely steadier than this.
MIN_COMPARE_THRESHOLD = 0.02
# Measured records of one run are compared only when these agree (a different preset, mesh or batch is another
# workload); the most frequent combination is reported, the others are named as skipped.
CONFIG_FIELDS = ("preset", "scope", "mesh_dp", "mesh_mp", "batch", "seq", "dtype")
PLOTS = {  # plot name: its PNG beside REPORT.md
    "throughput": "throughput.png",
    "effects": "effects.png",
    "utilisation": "utilisation.png",
    "wire": "wire_bytes.png",
    "memory": "memory_throughput.png",
    "projection": "projection_tpu.png",
}
ERROR_CHARS = 300  # of an error message in the failures table; the record keeps all of it


class ReportError(ConfigError):
    """Nothing to report, or a directory that is not a run directory; the message says what is expected."""


# ---------------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class RunRecords:
    run_dir: Path
    measured: tuple[dict[str, Any], ...]  # ok and failed, all of one configuration
    aot: tuple[dict[str, Any], ...]  # backend "tpu-aot": projection inputs, never ranked with measured runs
    skipped: tuple[str, ...]  # one sentence per line or record left out
    config: Mapping[str, Any] | None  # what the measured records share (CONFIG_FIELDS)
    aot_from: tuple[Path, ...] = ()  # the directory of each aot record


def _describe(record: Mapping[str, Any]) -> str:
    return f"record {record.get('variant')!r} repeat {record.get('repeat', 0)} ({record.get('timestamp_utc')})"


def _config_text(config: Mapping[str, Any]) -> str:
    return (
        f"preset {config['preset']!r}, scope {config['scope']}, mesh dp={config['mesh_dp']},mp={config['mesh_mp']}, "
        f"batch {config['batch']}, seq {config['seq']}, {config['dtype']}"
    )


def _load_dir(directory: Path, label: str) -> tuple[list[dict[str, Any]], list[str]]:
    if not directory.is_dir():
        raise ReportError(
            f"{directory} is not a directory; expected a run directory holding {RESULTS} "
            f"(written by `python -m bench run --out DIR`)"
        )
    loaded = load_records(directory)
    skipped = [f"{label}{message}" for message in loaded.skipped]
    records = []
    for record in loaded.records:
        if not isinstance(record.get("variant"), str) or record.get("status") not in ("ok", "failed"):
            skipped.append(f"{label}{_describe(record)}: needs a variant name and status ok or failed")
        else:
            records.append(record)
    return records, skipped


def _is_aot(record: Mapping[str, Any]) -> bool:
    return record.get("backend") == projection.AOT_BACKEND


def _one_configuration(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], dict | None]:
    """Keep the most frequent configuration (first seen wins a tie); name the records of the others.

    A record that lacks some configuration fields (the sweep's record of a process that died before measuring has
    no mesh or batch) belongs to the configuration its other fields agree with.
    """
    if not records:
        return [], [], None
    keys = [tuple(r.get(f) for f in CONFIG_FIELDS) for r in records]
    complete = [k for k in keys if None not in k] or keys
    main = Counter(complete).most_common(1)[0][0]
    config = dict(zip(CONFIG_FIELDS, main))
    matches = [all(v is None or v == m for v, m in zip(k, main)) for k in keys]
    skipped = []
    for other, count in Counter(k for k, match in zip(keys, matches) if not match).items():
        skipped.append(
            f"{count} measured record(s) of {_config_text(dict(zip(CONFIG_FIELDS, other)))} left out: this report "
            f"covers {_config_text(config)}, the most frequent configuration. Report each configuration from its "
            f"own run directory."
        )
    return [r for r, match in zip(records, matches) if match], skipped, config


def load_run(run_dir: Path, aot_dirs: Sequence[Path] = ()) -> RunRecords:
    """Records of RUN_DIR, plus the tpu-aot records of ``aot_dirs``; raises ReportError when nothing is usable."""
    run_dir = Path(run_dir)
    records, skipped = _load_dir(run_dir, "")
    aot = [r for r in records if _is_aot(r)]
    aot_from = [run_dir] * len(aot)
    for directory in map(Path, aot_dirs):
        extra, extra_skipped = _load_dir(directory, f"{directory}/")
        skipped += extra_skipped
        aot += [r for r in extra if _is_aot(r)]
        aot_from += [directory] * (len(aot) - len(aot_from))
        others = len([r for r in extra if not _is_aot(r)])
        if others:
            skipped.append(f"{directory}: {others} record(s) without backend tpu-aot left out (--aot reads compiles)")
    measured, config_skipped, config = _one_configuration([r for r in records if not _is_aot(r)])
    skipped += config_skipped
    if not measured and not aot:
        reasons = "; ".join(skipped) or "the file is empty"
        raise ReportError(
            f"no usable records in {run_dir / RESULTS} ({reasons}). A run directory holds one JSON record per line "
            f"with schema_version, variant and status; make one with `python -m bench run --out {run_dir}`"
        )
    return RunRecords(run_dir, tuple(measured), tuple(aot), tuple(skipped), config, tuple(aot_from))


# ---------------------------------------------------------------------------------------------------- summary

# Summary frame column: the record field whose median over a variant's ok repeats it holds.
MEDIAN_FIELDS = (
    "tokens_per_s",
    "tokens_per_s_per_device",
    "mfu",
    "mfu_6n",
    "hfu",
    "step_s_median",
    "compile_s",
    "mem_peak_estimate_bytes",
    "comm_mp_wire_bytes",
    "comm_dp_wire_bytes",
    "comm_allreduce_count",
)


def row_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """A report row: one variant in one JAX environment (xmap exists only on jax 0.4.30)."""
    if record.get("jax"):
        return record["variant"], str(record["jax"])
    # the sweep's record of a process that died before measuring names its environment, not its JAX version
    environment = record.get("environment")
    return record["variant"], f"unknown ({environment} environment)" if environment else "unknown"


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summarise(measured: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (variant, jax) with ok records: medians over repeats, the tokens/s range and its spread."""
    rows: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in measured:
        if record["status"] == "ok":
            rows.setdefault(row_key(record), []).append(record)
    out = []
    for (variant, jax), records in rows.items():
        row: dict[str, Any] = {"variant": variant, "jax": jax, "repeats": len(records)}
        for name in MEDIAN_FIELDS:
            values = [v for v in (_number(r.get(name)) for r in records) if not math.isnan(v)]
            row[name] = statistics.median(values) if values else math.nan
        timed = [_number(r.get("tokens_per_s")) for r in records]
        timed = [v for v in timed if not math.isnan(v)]
        row["tokens_per_s_min"] = min(timed) if timed else math.nan
        row["tokens_per_s_max"] = max(timed) if timed else math.nan
        row["spread"], row["spread_source"] = _spread(records, timed)
        out.append(row)
    frame = pd.DataFrame(out, columns=_SUMMARY_COLUMNS)
    frame = frame.sort_values("tokens_per_s", ascending=False, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


_SUMMARY_COLUMNS = [
    "variant",
    "jax",
    "repeats",
    *MEDIAN_FIELDS,
    "tokens_per_s_min",
    "tokens_per_s_max",
    "spread",
    "spread_source",
]


def _spread(records: Sequence[Mapping[str, Any]], timed: Sequence[float]) -> tuple[float, str]:
    """Relative spread of tokens/s: (max - min) / median over repeats; one repeat: the timed steps' IQR / median."""
    if len(timed) >= 2:
        return (max(timed) - min(timed)) / statistics.median(timed), "repeats"
    iqr, median = _number(records[0].get("step_s_iqr")), _number(records[0].get("step_s_median"))
    if len(records) == 1 and median > 0 and not math.isnan(iqr):
        return iqr / median, "step IQR"
    return math.nan, ""


@dataclass(frozen=True)
class Noise:
    fraction: float | None  # relative; None when the run gives no estimate
    source: str

    def short(self) -> str:
        return "unknown" if self.fraction is None else f"{fmt(self.fraction * 100, 3)}%"

    def text(self) -> str:
        return self.short() + ("" if self.fraction is None else f" ({self.source})")


def run_noise(summary: pd.DataFrame) -> Noise:
    """Median relative spread of tokens/s over repeats; without repeats, the median within-run step-time IQR."""
    for source, label in (
        ("repeats", "median over variants of (max - min) / median across repeats"),
        ("step IQR", "median over variants of the timed steps' IQR / median; no repeats"),
    ):
        values = summary.loc[summary["spread_source"] == source, "spread"].dropna()
        if len(values):
            return Noise(float(values.median()), label)
    return Noise(None, "no repeats and no step-time spread")


def failures(measured: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    ok = Counter(row_key(r) for r in measured if r["status"] == "ok")
    rows = [
        {
            "variant": r["variant"],
            "jax": row_key(r)[1],
            "repeat": r.get("repeat", 0),
            "error": r.get("error") or "(no error recorded)",
            "ok repeats": ok[row_key(r)],
        }
        for r in measured
        if r["status"] == "failed"
    ]
    return pd.DataFrame(rows, columns=["variant", "jax", "repeat", "error", "ok repeats"])


# ---------------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Comparison:
    axis: str  # a key of model.config.AXES, or "jax"
    a: str
    b: str

    @property
    def label(self) -> str:
        if self.axis == "jax":
            return f"jax {self.a} vs jax {self.b}"
        return f"{self.a} vs {self.b}"


DESIGN_COMPARISONS = (
    Comparison("residual", "parallel", "serial"),
    Comparison("head", "h256", "h128"),
    Comparison("strategy", "xmap", "pjit"),
    Comparison("strategy", "xmap", "shard_map"),
    Comparison("strategy", "pjit", "shard_map"),
    Comparison("remat", "full", "none"),
)


@dataclass(frozen=True)
class Pair:
    a_index: int  # summary row of the variant with value a
    b_index: int
    tokens_per_s_ratio: float
    memory_ratio: float  # peak memory per device, a / b (nan where either lacks it)
    jax: str


@dataclass(frozen=True)
class Effect:
    comparison: Comparison
    pairs: tuple[Pair, ...]

    @property
    def ratios(self) -> list[float]:
        return [p.tokens_per_s_ratio for p in self.pairs]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios) if self.pairs else math.nan

    @property
    def memory_median(self) -> float:
        values = [p.memory_ratio for p in self.pairs if not math.isnan(p.memory_ratio)]
        return statistics.median(values) if values else math.nan

    def exceeds(self, noise: Noise) -> bool | None:
        if noise.fraction is None or not self.pairs:
            return None
        return bool(abs(self.median - 1) > noise.fraction)


def axis_values(variant: str, jax: str) -> dict[str, str] | None:
    """{"jax": ..., "residual": ..., "head": ..., "strategy": ..., "remat": ...}, or None for a name of another form."""
    parts = variant.split("-")
    if len(parts) != len(AXES):
        return None
    return {"jax": jax, **dict(zip(AXES, parts))}


def pair_effect(summary: pd.DataFrame, comparison: Comparison, same_jax: bool = True) -> Effect:
    """Ratios a / b over every pair of rows equal in all other axes (and, unless same_jax is False, the JAX version)."""
    held = [k for k in ("jax", *AXES) if k != comparison.axis and (same_jax or k != "jax")]
    index: dict[tuple, list[int]] = {}
    values_of = {}
    for i, row in summary.iterrows():
        values = axis_values(row["variant"], row["jax"])
        if values is None or math.isnan(row["tokens_per_s"]):
            continue
        values_of[i] = values
        index.setdefault((values[comparison.axis], *(values[k] for k in held)), []).append(i)
    pairs = []
    for i, values in values_of.items():
        if values[comparison.axis] != comparison.a:
            continue
        for j in index.get((comparison.b, *(values[k] for k in held)), []):
            a, b = summary.loc[i], summary.loc[j]
            if not same_jax and a["jax"] == b["jax"]:
                continue
            jax = a["jax"] if a["jax"] == b["jax"] else f"{a['jax']} / {b['jax']}"
            memory = float(a["mem_peak_estimate_bytes"] / b["mem_peak_estimate_bytes"])
            pairs.append(Pair(int(i), int(j), float(a["tokens_per_s"] / b["tokens_per_s"]), memory, jax))
    return Effect(comparison, tuple(pairs))


def environment_comparisons(summary: pd.DataFrame) -> list[Comparison]:
    """Same variant in two JAX environments: the environment's own effect (newer vs older)."""
    versions = sorted(set(summary["jax"]), key=_version_key)
    return [Comparison("jax", new, old) for k, new in enumerate(versions) for old in versions[:k]]


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def effects(summary: pd.DataFrame) -> list[Effect]:
    return [pair_effect(summary, c) for c in (*DESIGN_COMPARISONS, *environment_comparisons(summary))]


def cross_environment_effects(summary: pd.DataFrame, found: Sequence[Effect]) -> list[Effect]:
    """xmap comparisons that have no same-environment pair, paired across JAX versions instead (labelled so)."""
    out = []
    for effect in found:
        if effect.comparison.axis == "strategy" and "xmap" in (effect.comparison.a, effect.comparison.b):
            if not effect.pairs:
                crossed = pair_effect(summary, effect.comparison, same_jax=False)
                if crossed.pairs:
                    out.append(crossed)
    return out


# ---------------------------------------------------------------------------------------------------- formatting


def fmt(value: Any, digits: int = 4) -> str:
    """``digits`` significant digits, thousands separated, never in exponent form; "n/a" for a missing value."""
    number = _number(value)
    if math.isnan(number):
        return "n/a"
    if number == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    if magnitude >= digits - 1 or number.is_integer():
        return f"{number:,.0f}"
    return f"{number:,.{digits - 1 - magnitude}f}"


def pct(fraction: Any, digits: int = 4) -> str:
    """A fraction as a percentage: pct(0.2026) == "20.26%"; "n/a" when missing."""
    text = fmt(_number(fraction) * 100, digits)
    return text if text == "n/a" else text + "%"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}x"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured table; cells are pre-formatted strings, so tabulate must not re-parse them as numbers."""
    return frame.map(_cell).to_markdown(index=False, disable_numparse=True)


def _scaled(series: pd.Series, scale: float) -> pd.Series:
    return series.map(lambda v: fmt(_number(v) * scale))


# ---------------------------------------------------------------------------------------------------- sections

SUMMARY_HEADERS = {
    "tokens/s": ("tokens_per_s", 1),
    "tokens/s per device": ("tokens_per_s_per_device", 1),
    "MFU %": ("mfu", 100),
    "MFU (6N) %": ("mfu_6n", 100),
    "HFU %": ("hfu", 100),
    "step ms": ("step_s_median", 1e3),
    "compile s": ("compile_s", 1),
    "peak memory per device MiB": ("mem_peak_estimate_bytes", 1 / MiB),
    "TP (mp) wire MiB/step": ("comm_mp_wire_bytes", 1 / MiB),
    "DP (dp) wire MiB/step": ("comm_dp_wire_bytes", 1 / MiB),
    "all-reduces/step": ("comm_allreduce_count", 1),
}


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({"rank": range(1, len(summary) + 1), "variant": summary["variant"], "jax": summary["jax"]})
    table["repeats"] = summary["repeats"].map(str)
    for header, (column, scale) in SUMMARY_HEADERS.items():
        table[header] = _scaled(summary[column], scale)
        if column == "tokens_per_s":
            table["spread %"] = [
                "n/a" if math.isnan(s) else f"{fmt(s * 100, 2)} ({source})"
                for s, source in zip(summary["spread"], summary["spread_source"])
            ]
    return table


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


def _row_name(summary: pd.DataFrame, index: int) -> str:
    row = summary.loc[index]
    return f"{row['variant']} (jax {row['jax']})"


def effect_sentence(effect: Effect, noise: Noise) -> str:
    c = effect.comparison
    if not effect.pairs:
        held = "the other three axes" if c.axis != "jax" else "the variant"
        return f"{c.label}: no pair in this run (needs two variants that differ only in {c.axis}, {held} fixed)."
    ratios = effect.ratios
    what = f"{c.a} runs at {effect.median:.3f}x the tokens/s of {c.b}"
    spread = f"median of {len(ratios)} pair(s), range {min(ratios):.3f}-{max(ratios):.3f}x"
    memory = ""
    if c.axis == "remat" and not math.isnan(effect.memory_median):
        memory = f"; its peak memory per device is {effect.memory_median:.3f}x that of {c.b}"
    exceeds = effect.exceeds(noise)
    verdict = {True: "beyond", False: "within", None: "noise unknown, so not judged against"}[exceeds]
    return f"{c.label}: {what} ({spread}), {verdict} the run's noise ({noise.short()}){memory}."


def section_headline(a: Analysis) -> list[str]:
    lines = ["## 1. Headline", ""]
    timed = a.summary.dropna(subset=["tokens_per_s"])
    if timed.empty:
        lines.append("No measured variant has a throughput in this run (see sections 2 and 4).")
    else:
        best = timed.iloc[0]
        lines.append(
            f"Fastest: **{best['variant']}** (jax {best['jax']}) at **{fmt(best['tokens_per_s'])} tokens/s** "
            f"({fmt(best['tokens_per_s_per_device'])} per device, {_devices_text(a.run)}), "
            f"MFU {pct(best['mfu'])}, MFU (6N) {pct(best['mfu_6n'])}, HFU {pct(best['hfu'])} "
            f"of its own peak ({_peak_source(a.run.measured, best)})."
        )
    lines.append("")
    for effect in a.effects:
        if effect.pairs:
            lines.append(f"- {effect_sentence(effect, a.noise)}")
    if not any(e.pairs for e in a.effects) and not timed.empty:
        lines.append("- No design effect can be measured: no two variants differ in exactly one axis.")
    lines.append(f"- GPT-J-6B: {_gptj_sentence()} (section 4).")
    lines += _projection_headline(a.projections)
    return lines


def _projection_headline(projections: Sequence[projection.Projection]) -> list[str]:
    if not projections:
        return []
    fitting = [p for p in projections if p.fits_hbm is not False]
    too_big = sorted({p.variant for p in projections if p.fits_hbm is False})
    excluded = f" ({', '.join(too_big)} left out: its peak memory exceeds HBM)" if too_big else ""
    if not fitting:
        return [f"- PROJECTION (not a measurement): no compiled variant fits in HBM{excluded}."]
    best = max(fitting, key=lambda p: p.tokens_per_s_overlap)
    return [
        f"- PROJECTION (not a measurement), 6B scale on {best.topology or best.accelerator}: the highest "
        f"perfect-overlap bound among variants that fit in HBM is {best.variant} (jax {best.jax}) at "
        f"{fmt(best.tokens_per_s_overlap)} projected tokens/s ({best.basis.value} peak; no-overlap bound "
        f"{fmt(best.tokens_per_s_serial)}), against GPT-J's measured {fmt(baseline.TOKENS_PER_S.value)}{excluded}."
    ]


def _devices_text(run: RunRecords) -> str:
    config = run.config or {}
    kinds = sorted({str(r.get("device_kind")) for r in run.measured if r.get("device_kind")})
    return f"{config.get('mesh_dp', 0) * config.get('mesh_mp', 0)} {'/'.join(kinds) or 'unknown'} devices"


def _peak_source(measured: Iterable[Mapping[str, Any]], row: Mapping[str, Any]) -> str:
    for record in measured:
        if row_key(record) == (row["variant"], row["jax"]) and record.get("peak_source"):
            return f"peak: {record['peak_source']}"
    return "no peak recorded"


def _gptj_sentence() -> str:
    mfu_6n = baseline.utilisation(baseline.effective_flops_per_s())
    hfu = baseline.utilisation(baseline.hardware_flops_per_s(as_benchmark_py=True))
    return (
        f"{fmt(baseline.TOKENS_PER_S.value)} tokens/s on a TPU v3-256, MFU (6N) {fmt(mfu_6n * 100, 3)}% and HFU "
        f"{fmt(hfu * 100, 3)}% on GPT-J's {fmt(_v3_peak_tflops(PeakBasis.GPTJ), 3)} TFLOP/s-per-core basis"
    )


def _v3_peak_tflops(basis: PeakBasis) -> float:
    peak, _ = hardware.peak_flops_per_device(baseline.DEVICE_KIND, basis)
    return peak / 1e12


def section_summary(a: Analysis) -> list[str]:
    lines = ["## 2. Summary", ""]
    if a.summary.empty:
        lines += ["No measured variant finished (failures below, if any).", ""]
    else:
        lines += [
            f"One row per variant and JAX version, ranked by tokens/s. Values are medians over the ok repeats; "
            f"spread is (max - min) / median over repeats, or the timed steps' IQR / median where a variant ran once. "
            f"Run noise: {a.noise.text()}. Wire bytes are what each device sends per step (ring algorithms, "
            f"bench/comm.py); memory is the compiler's peak estimate per device.",
            "",
            markdown_table(summary_table(a.summary)),
            "",
        ]
        lines += _figure(a, "throughput", "Measured tokens/s by variant")
    lines += ["### Failed variants", ""]
    if a.failed.empty:
        lines.append("None: every recorded variant finished.")
    else:
        table = a.failed.copy()
        table["error"] = table["error"].map(lambda e: e if len(e) <= ERROR_CHARS else e[:ERROR_CHARS] + "...")
        table["repeat"] = table["repeat"].map(str)
        table["ok repeats"] = table["ok repeats"].map(str)
        lines += [markdown_table(table)]
    return lines


def _figure(a: Analysis, name: str, alt: str) -> list[str]:
    return [f"![{alt}]({a.figures[name]})", ""] if name in a.figures else []


def effects_table(a: Analysis, found: Sequence[Effect]) -> pd.DataFrame:
    rows = []
    for effect in found:
        ratios = effect.ratios
        exceeds = effect.exceeds(a.noise)
        rows.append(
            {
                "effect": effect.comparison.label,
                "pairs": str(len(ratios)),
                "median tokens/s ratio": fmt_ratio(effect.median) if ratios else "n/a",
                "range": f"{min(ratios):.3f}-{max(ratios):.3f}x" if ratios else "n/a",
                "beyond noise": "n/a" if not ratios else {True: "yes", False: "no", None: "unknown"}[exceeds],
                "median peak-memory ratio": fmt_ratio(effect.memory_median) if ratios else "n/a",
                "jax": ", ".join(sorted({p.jax for p in effect.pairs})) or "n/a",
            }
        )
    return pd.DataFrame(rows)


def section_effects(a: Analysis) -> list[str]:
    lines = [
        "## 3. Effect of each design choice",
        "",
        "Each ratio is a's tokens/s over b's for two variants equal in the other three axes and measured in the "
        "same JAX version; the median and range are over those pairs. An effect is beyond the noise when its "
        f"median differs from 1 by more than the run's noise ({a.noise.text()}).",
        "",
    ]
    if a.summary.empty:
        return lines + ["No measured variant finished: no effect to compute."]
    lines += [markdown_table(effects_table(a, a.effects)), ""]
    lines += [f"- {effect_sentence(e, a.noise)}" for e in a.effects if not e.pairs]
    lines += [""] if any(not e.pairs for e in a.effects) else []
    remat = next(e for e in a.effects if e.comparison.axis == "remat")
    if remat.pairs and not math.isnan(remat.memory_median):
        lines += [
            f"Remat trade-off (median over {len(remat.pairs)} pair(s)): full remat "
            f"{_change(remat.median, 'throughput')} and {_change(remat.memory_median, 'peak memory per device')}, "
            f"against no remat.",
            "",
        ]
    lines += _jax_note(a)
    lines += _figure(a, "effects", "Paired effects")
    lines += _figure(a, "memory", "Peak memory per device against tokens/s")
    return lines


def _change(ratio: float, what: str) -> str:
    """'lowers throughput by 20.2%' for a ratio of 0.798."""
    if ratio == 1:
        return f"leaves {what} unchanged"
    verb = "lowers" if ratio < 1 else "raises"
    return f"{verb} {what} by {fmt(abs(ratio - 1) * 100, 3)}%"


def _jax_note(a: Analysis) -> list[str]:
    versions = sorted(set(a.summary["jax"]), key=_version_key)
    has_xmap = any(
        axis_values(v, j) and axis_values(v, j)["strategy"] == "xmap"
        for v, j in zip(a.summary["variant"], a.summary["jax"])
    )
    lines = []
    if len(versions) > 1:
        env = [e for e in a.effects if e.comparison.axis == "jax" and e.pairs]
        measured = "; ".join(f"{e.comparison.label}: {fmt_ratio(e.median)} over {len(e.pairs)} variant(s)" for e in env)
        lines.append(
            f"Cross-environment note: this run holds JAX {', '.join(versions)}. Rows of different versions are never "
            f"paired for a design effect, because the environment alone moves throughput "
            f"({measured or 'no variant was measured in both, so by an unmeasured amount'})."
        )
    if has_xmap:
        lines.append(
            "xmap exists only up to jax 0.4.30, so its ratios use pjit and shard_map measured in that same environment."
        )
    if a.cross_effects:
        lines.append(
            "Some xmap comparison has no variant measured in xmap's environment, so the rows below pair across "
            "JAX versions: they mix the strategy's effect with the environment's and are not strategy effects."
        )
        table = effects_table(a, a.cross_effects)
        table["effect"] = table["effect"] + " (CROSS-ENVIRONMENT: strategy and JAX version confounded)"
        lines += ["", markdown_table(table)]
    return lines + [""] if lines else []


def section_baseline(a: Analysis) -> list[str]:
    lines = ["## 4. Against the baseline: GPT-J-6B on a TPU v3-256", ""]
    lines += [markdown_table(published_table()), ""]
    lines += _this_run_utilisation(a)
    lines += _figure(a, "utilisation", "MFU and HFU by variant")
    lines += section_projection(a)
    return lines


def published_table() -> pd.DataFrame:
    gptj, spec = PeakBasis.GPTJ, PeakBasis.SPEC
    effective = baseline.effective_flops_per_s()
    hardware_as_script = baseline.hardware_flops_per_s(as_benchmark_py=True)
    hardware_own_shape = baseline.hardware_flops_per_s()
    tokens = fmt(baseline.TOKENS_PER_S.value)
    rows = [
        (
            "training throughput, GPT-J-6B",
            f"{fmt(baseline.TOKENS_PER_S.value)} tokens/s",
            baseline.TOKENS_PER_S.wording,
            baseline.TOKENS_PER_S.source,
        ),
        (
            "training throughput, GPT-Neo 2.7B, same pod",
            f"{fmt(baseline.GPT_NEO_2_7B_TOKENS_PER_S.value)} tokens/s",
            baseline.GPT_NEO_2_7B_TOKENS_PER_S.wording,
            baseline.GPT_NEO_2_7B_TOKENS_PER_S.source,
        ),
        (
            "6N FLOP/s",
            f"{fmt(effective / 1e15, 3)} PFLOP/s ({tokens} tokens/s x 6 x {fmt(baseline.N_PARAMS_HF)} params)",
            baseline.EFFECTIVE_PFLOPS.wording,
            baseline.EFFECTIVE_PFLOPS.source,
        ),
        (
            f"theoretical peak, GPT-J basis ({fmt(_v3_peak_tflops(gptj), 3)} TFLOP/s per core)",
            f"{fmt(baseline.theoretical_flops_per_s(gptj) / 1e15, 3)} PFLOP/s",
            baseline.THEORETICAL_PFLOPS.wording,
            baseline.THEORETICAL_PFLOPS.source,
        ),
        (
            f"theoretical peak, spec basis ({fmt(_v3_peak_tflops(spec), 3)} TFLOP/s per core)",
            f"{fmt(baseline.theoretical_flops_per_s(spec) / 1e15, 3)} PFLOP/s",
            "derived",
            "bench/hardware.py",
        ),
        ("MFU (6N), GPT-J basis", f"{fmt(baseline.utilisation(effective, gptj) * 100, 3)}%", "derived", "6N / peak"),
        ("MFU (6N), spec basis", f"{fmt(baseline.utilisation(effective, spec) * 100, 3)}%", "derived", "6N / peak"),
        (
            "HFU, GPT-J basis, benchmark.py's attention constants",
            f"{fmt(hardware_as_script / 1e15, 3)} PFLOP/s = {fmt(baseline.utilisation(hardware_as_script) * 100, 3)}%",
            baseline.HARDWARE_PFLOPS.wording,
            baseline.HARDWARE_PFLOPS.source,
        ),
        (
            "HFU, GPT-J basis, GPT-J-6B's own shape",
            f"{fmt(hardware_own_shape / 1e15, 3)} PFLOP/s = {fmt(baseline.utilisation(hardware_own_shape) * 100, 3)}%",
            "derived",
            baseline.BENCHMARK_PY,
        ),
    ]
    return pd.DataFrame(rows, columns=["GPT-J-6B, published (TPU v3-256)", "value", "wording", "source"])


def _this_run_utilisation(a: Analysis) -> list[str]:
    timed = a.summary.dropna(subset=["tokens_per_s"])
    if timed.empty:
        return ["This run has no measured utilisation to set beside them.", ""]
    best = timed.iloc[0]
    rows = []
    for label, column in (("MFU (6N)", "mfu_6n"), ("MFU", "mfu"), ("HFU", "hfu")):
        values = a.summary[column].dropna()
        rows.append(
            {
                "this run": label,
                f"fastest variant ({best['variant']}) %": fmt(best[column] * 100),
                "lowest %": fmt(values.min() * 100) if len(values) else "n/a",
                "highest %": fmt(values.max() * 100) if len(values) else "n/a",
            }
        )
    return [
        f"This run beside them, each against its own peak ({_peak_source(a.run.measured, best)}); "
        f"GPT-J's figures are against TPU v3 peaks, so only the percentages compare:",
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
    ]


# ---------------------------------------------------------------------------------------------------- projection


def project_all(aot: Sequence[Mapping[str, Any]]) -> tuple[list[projection.Projection], list[str]]:
    """Every tpu-aot record (the last one of each variant, JAX version and topology) on each of its peak bases."""
    latest: dict[tuple, Mapping[str, Any]] = {}
    for record in aot:
        if record["status"] == "ok":
            latest[(*row_key(record), record.get("topology"), record.get("preset"))] = record
    projected, unprojected = [], []
    for record in latest.values():
        try:
            accelerator = projection.accelerator_of(record)
            projected += [projection.project(record, basis) for basis in projection.bases_for(accelerator)]
        except ValueError as error:  # ProjectionError, or a topology the hardware table does not know
            unprojected.append(f"{record['variant']} (jax {record.get('jax')}): {error}")
    failed = [
        f"{r['variant']} (jax {r.get('jax')}): compile failed: {first_line(r.get('error'))}"
        for r in aot
        if r["status"] == "failed" and r.get("fits_hbm") is not False  # not fitting is a result: see does_not_fit
    ]
    return projected, unprojected + failed


def first_line(text: Any) -> str:
    return str(text or "(no error recorded)").strip().splitlines()[0]


def does_not_fit_table(aot: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Variants the TPU compiler refused because one step's memory exceeds a device's HBM, with its figures."""
    rows = [
        {
            "variant": r["variant"],
            "jax": r.get("jax"),
            "topology": r.get("topology"),
            "required per device GiB": fmt(r["oom_required_bytes"] / GiB) if r.get("oom_required_bytes") else "n/a",
            "available per device GiB": fmt(r["oom_available_hbm_bytes"] / GiB)
            if r.get("oom_available_hbm_bytes")
            else "n/a",
        }
        for r in aot
        if r["status"] == "failed" and r.get("fits_hbm") is False
    ]
    return pd.DataFrame(rows)


def _aot_record(a: Analysis, p: projection.Projection) -> Mapping[str, Any]:
    for record in reversed(a.run.aot):
        same_compile = str(record.get("topology") or "") == p.topology and str(record.get("preset")) == p.preset
        if row_key(record) == (p.variant, p.jax) and same_compile:
            return record
    raise KeyError(p.variant)


def aot_resources_table(a: Analysis) -> pd.DataFrame:
    rows = []
    for p in a.projections:
        if p.basis is not PeakBasis.SPEC:
            continue
        r = _aot_record(a, p)
        capacity = p.hbm_capacity_bytes_per_device
        rows.append(
            {
                "variant": p.variant,
                "jax": p.jax,
                "preset": p.preset,
                "topology": p.topology or p.accelerator,
                "mesh": f"dp={r.get('mesh_dp')},mp={r.get('mesh_mp')}",
                "peak HBM per device GiB": fmt(_number(p.mem_peak_bytes_per_device) / GiB),
                "HBM per device GiB": fmt(_number(capacity) / GiB),
                "fits": {True: "yes", False: "NO", None: "n/a"}[p.fits_hbm],
                "mp wire GiB/step": fmt(_number(r.get("comm_mp_wire_bytes")) / GiB),
                "dp wire GiB/step": fmt(_number(r.get("comm_dp_wire_bytes")) / GiB),
                "dp+mp wire GiB/step": fmt(_number(r.get("comm_dpmp_wire_bytes")) / GiB),
                "all-reduces/step": fmt(r.get("comm_allreduce_count")),
                "HBM bytes accessed per device GB/step": fmt(
                    _number(r.get("xla_bytes_accessed_per_step")) / p.devices / 1e9
                ),
            }
        )
    return pd.DataFrame(rows)


def projection_table(a: Analysis) -> pd.DataFrame:
    reference = baseline.TOKENS_PER_S.value
    rows = []
    for p in a.projections:
        ici = dict(p.ici_s_by_axis)
        rows.append(
            {
                "variant": p.variant,
                "jax": p.jax,
                "peak basis": p.basis.value,
                "fits HBM": {True: "yes", False: "NO", None: "n/a"}[p.fits_hbm],
                "peak TFLOP/s per device": fmt(p.peak_flops_per_device / 1e12),
                "FLOPs counted": p.flops_counted,
                "compute ms": fmt(p.compute_s * 1e3),
                "ICI ms (mp + dp + dp+mp)": f"{fmt(p.ici_s * 1e3)} ({' + '.join(fmt(ici[k] * 1e3) for k in ici)})",
                "HBM ms": fmt(p.hbm_s * 1e3) if p.hbm_s is not None else "n/a",
                "projected tokens/s, perfect overlap": fmt(p.tokens_per_s_overlap),
                "projected tokens/s, no overlap": fmt(p.tokens_per_s_serial),
                f"perfect overlap / {fmt(reference)}": fmt_ratio(p.tokens_per_s_overlap / reference),
                f"no overlap / {fmt(reference)}": fmt_ratio(p.tokens_per_s_serial / reference),
            }
        )
    return pd.DataFrame(rows)


def projection_frame(projections: Sequence[projection.Projection]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "variant": p.variant,
                "jax": p.jax,
                "basis": p.basis.value,
                "tokens_per_s_overlap": p.tokens_per_s_overlap,
                "tokens_per_s_serial": p.tokens_per_s_serial,
                "fits": p.fits_hbm is not False,
            }
            for p in projections
        ],
        columns=["variant", "jax", "basis", "tokens_per_s_overlap", "tokens_per_s_serial", "fits"],
    )


def hardware_lines(projections: Sequence[projection.Projection]) -> list[str]:
    """Every hardware number a projection used, with the table row's source."""
    lines = []
    for name in dict.fromkeys(p.accelerator for p in projections):
        acc = next(a for a in hardware.ACCELERATORS if a.name == name)
        per_device_ici = (
            [
                projection.ici_bandwidth_per_device(acc.ici_link_bandwidth_bytes_per_s, dims, acc.devices_per_chip)
                for dims in (1, 2)
            ]
            if acc.ici_link_bandwidth_bytes_per_s
            else None
        )
        hbm_bw = acc.hbm_bandwidth_bytes_per_s
        lines += [
            f"- {acc.name}: peak {fmt(acc.peak_bf16_flops_per_chip / 1e12)} TFLOP/s bf16 per chip, "
            f"{acc.devices_per_chip} device(s) per chip, so {fmt(acc.peak_bf16_flops_per_device / 1e12)} per device "
            f"(spec basis); HBM {fmt(_number(acc.hbm_bytes_per_chip) / GiB)} GiB per chip = "
            f"{fmt(_number(acc.hbm_bytes_per_device) / GiB)} GiB per device; HBM bandwidth "
            f"{fmt(_number(hbm_bw) / 1e9)} GB/s per chip = "
            f"{fmt(_number(hbm_bw) / acc.devices_per_chip / 1e9)} GB/s per device; ICI "
            f"{fmt(_number(acc.ici_link_bandwidth_bytes_per_s) / 1e9)} GB/s one-way per link, "
            f"{acc.ici_links_per_chip} links per chip, so "
            + (
                f"{fmt(per_device_ici[0] / 1e9)} GB/s per device on one mesh axis and {fmt(per_device_ici[1] / 1e9)} "
                f"on dp+mp"
                if per_device_ici
                else "no ICI figure"
            )
            + f". Source: {acc.source}",
        ]
        if PeakBasis.GPTJ in projection.bases_for(acc):
            peak, source = hardware.peak_flops_per_device(acc.device_kind_patterns[0], PeakBasis.GPTJ)
            lines.append(f"- {acc.name}, GPT-J basis: {fmt(peak / 1e12)} TFLOP/s per device. Source: {source}")
    return lines


def section_projection(a: Analysis) -> list[str]:
    lines = ["### PROJECTION: each variant at 6B scale, from TPU ahead-of-time compiles", ""]
    if not a.projections:
        lines.append("No tpu-aot records in this run directory or the --aot directories: nothing to project.")
        lines += [f"- not projected: {u}" for u in a.unprojected]
        return lines + [""]
    lines += [
        "These are PROJECTIONS from compiler output, not measurements. Memory, bytes on the wire and HBM bytes "
        "accessed are the compiler's figures for one step; times are rooflines (bench/projection.py): compute = "
        "FLOPs / (devices x peak); ICI = wire bytes per device / ICI bandwidth per device on the collective's mesh "
        "axis (a bidirectional ring per torus dimension, 2 x one-way link bandwidth, one dimension per mesh axis and "
        "two for dp+mp, the chip's links shared by its devices; axes added); HBM = bytes accessed per device / HBM "
        "bandwidth per device. The perfect-overlap bound is the largest of the three, the no-overlap one their sum; "
        "tokens/s = tokens per step / step time. Model: "
        f"{projection.SCALING_BOOK}, roofline.md and sharding.md.",
        "",
        "Resources per device and step (compiler figures):",
        "",
        markdown_table(aot_resources_table(a)),
        "",
        f"Roofline PROJECTION of tokens/s, next to GPT-J's measured {fmt(baseline.TOKENS_PER_S.value)}:",
        "",
        markdown_table(projection_table(a)),
        "",
        "Hardware numbers used (bench/hardware.py):",
        "",
        *hardware_lines(a.projections),
        "",
    ]
    refused = does_not_fit_table(a.run.aot)
    if not refused.empty:
        lines += [
            "Variants that do not fit: the TPU compiler refused them, one step needing more HBM per device than a "
            "v3 core has (its own figures; nothing to project):",
            "",
            markdown_table(refused),
            "",
        ]
    no_hbm = sorted({p.variant for p in a.projections if p.hbm_s is None})
    if no_hbm:
        lines += [f"- no xla_bytes_accessed_per_step for {', '.join(no_hbm)}: its bounds leave HBM time out", ""]
    lines += [f"- not projected: {u}" for u in a.unprojected]
    lines += _figure(a, "projection", "PROJECTION of tokens/s at 6B scale against GPT-J's measured throughput")
    return lines


# ---------------------------------------------------------------------------------------------------- communication

OTHER_KINDS = {
    "allgather": "all-gather",
    "reducescatter": "reduce-scatter",
    "alltoall": "all-to-all",
    "collectivepermute": "collective-permute",
}
AXIS_LABELS = {"mp": "mp", "dp": "dp", "dpmp": "dp+mp", "none": "no mesh axis"}


def _int(record: Mapping[str, Any], key: str) -> int | None:
    value = _number(record.get(key))
    return None if math.isnan(value) else int(value)


def _difference(found: int, expected: int, unit: str) -> str:
    delta = found - expected
    word = "more" if delta > 0 else "fewer" if unit == "op" else "less"
    plural = "s" if abs(delta) != 1 else ""
    return f"{abs(delta):,} {unit}{plural} {word}"


def explain_comm(record: Mapping[str, Any]) -> list[str]:
    """Sentences saying where the HLO's collectives differ from the Megatron expectation, from the record's fields.

    The expectation counts arrays reduced; XLA's all-reduce combiner may carry several in one tuple-shaped op, so
    arrays are compared through ``comm_mp_allreduce_tensors`` where the record has it, ops otherwise.
    """
    ops, nbytes = _int(record, "comm_mp_allreduce_count"), _int(record, "comm_mp_allreduce_bytes")
    tensors = _int(record, "comm_mp_allreduce_tensors")
    want_count = _sum_ints(record, "expected_mp_layer_allreduce_count", "expected_mp_other_allreduce_count")
    want_bytes = _sum_ints(record, "expected_mp_layer_allreduce_bytes", "expected_mp_other_allreduce_bytes")
    if None in (ops, nbytes, want_count, want_bytes):
        recorded = record.get("comm_mismatch") or []
        return list(recorded) or ["no expected_* or comm_* fields: nothing to compare"]
    found, unit = (tensors, "array") if tensors is not None else (ops, "op")
    notes = []
    if found != want_count or nbytes != want_bytes:
        parts = [_difference(found, want_count, unit)] if found != want_count else []
        parts += [_difference(nbytes, want_bytes, "byte")] if nbytes != want_bytes else []
        text = (
            f"mp all-reduce: {found:,} {unit}s carrying {nbytes:,} bytes in the HLO, {want_count:,} and "
            f"{want_bytes:,} expected ({', '.join(parts)})"
        )
        if unit == "op" and nbytes == want_bytes:
            text += "; the same bytes in a different number of ops, as when XLA combines or splits all-reduces"
        notes.append(text + ".")
    if tensors is not None and ops < tensors:
        notes.append(
            f"mp all-reduce: XLA's combiner carried {tensors:,} arrays in {ops:,} ops ({tensors - ops:,} "
            f"fewer ops than arrays)."
        )
    dp, want_dp = _int(record, "comm_dp_allreduce_bytes"), _int(record, "expected_dp_grad_allreduce_bytes")
    if dp is not None and want_dp is not None and dp != want_dp:
        notes.append(
            f"dp all-reduce: {dp:,} bytes in the HLO against {want_dp:,} bytes of gradients "
            f"({_difference(dp, want_dp, 'byte')})."
        )
    for axis, axis_label in AXIS_LABELS.items():
        for kind, kind_label in OTHER_KINDS.items():
            n = _int(record, f"comm_{axis}_{kind}_count")
            if n:
                size = _int(record, f"comm_{axis}_{kind}_bytes") or 0
                notes.append(
                    f"{n:,} {kind_label} op(s) on {axis_label} ({size:,} bytes), which the Megatron "
                    f"expectation (all-reduces only) does not have."
                )
    for wide in record.get("comm_wider_than_compute") or []:
        notes.append(f"{wide}: a collective wider than the compute dtype {record.get('dtype')}.")
    if record.get("comm_trip_counts_known") is False:
        notes.append("some loop trip count was not found in the HLO, so counts may be low.")
    return notes


def _sum_ints(record: Mapping[str, Any], *keys: str) -> int | None:
    values = [_int(record, k) for k in keys]
    return None if None in values else sum(values)


def _latest_ok(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    latest: dict[tuple, Mapping[str, Any]] = {}
    for record in records:
        if record["status"] == "ok":
            latest[(*row_key(record), record.get("topology"))] = record
    return list(latest.values())


def comm_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        want_count = _sum_ints(r, "expected_mp_layer_allreduce_count", "expected_mp_other_allreduce_count")
        want_bytes = _sum_ints(r, "expected_mp_layer_allreduce_bytes", "expected_mp_other_allreduce_bytes")
        other = sum(_int(r, f"comm_{a}_{k}_count") or 0 for a in AXIS_LABELS for k in OTHER_KINDS)
        rows.append(
            {
                "variant": r["variant"],
                "jax": row_key(r)[1],
                "mp all-reduce ops (arrays) HLO / expected arrays": (
                    f"{fmt(r.get('comm_mp_allreduce_count'))} ({fmt(r.get('comm_mp_allreduce_tensors'))}) / "
                    f"{fmt(want_count)}"
                ),
                "mp all-reduce bytes HLO / expected": f"{fmt(r.get('comm_mp_allreduce_bytes'))} / {fmt(want_bytes)}",
                "dp all-reduce bytes HLO / gradients": (
                    f"{fmt(r.get('comm_dp_allreduce_bytes'))} / {fmt(r.get('expected_dp_grad_allreduce_bytes'))}"
                ),
                "other collectives": str(other),
                "mismatches": str(len(explain_comm(r))),
            }
        )
    return pd.DataFrame(rows)


def comm_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    columns = ["variant", "jax"] + [f"comm_{k}_wire_bytes" for k in ("allreduce", *OTHER_KINDS)]
    return pd.DataFrame(
        [
            {"variant": r["variant"], "jax": row_key(r)[1], **{c: _number(r.get(c)) for c in columns[2:]}}
            for r in records
        ],
        columns=columns,
    )


def section_comm(a: Analysis) -> list[str]:
    lines = [
        "## 5. Communication: HLO against the analytic expectation",
        "",
        "Collectives parsed from each variant's compiled HLO (latest ok record), per step and per device, against "
        "the Megatron expectation of bench/expected.py. Each mismatch is explained below from the record's fields.",
        "",
    ]
    for title, records in (
        ("Measured runs", _latest_ok(a.run.measured)),
        ("TPU ahead-of-time compiles (6B scale)", _latest_ok(a.run.aot)),
    ):
        if not records:
            continue
        lines += [f"### {title}", "", markdown_table(comm_table(records)), ""]
        for r in records:
            notes = explain_comm(r)
            where = f" on {r['topology']}" if r.get("topology") else ""
            if notes:
                lines.append(f"- {r['variant']} (jax {row_key(r)[1]}{where}): " + " ".join(notes))
            recorded = r.get("comm_mismatch") or []
            if recorded:
                lines.append(f"  - recorded check: {'; '.join(recorded)}")
        lines.append("")
    if len(lines) == 5:
        lines.append("No ok record carries communication fields.")
    lines += _figure(a, "wire", "Bytes on the wire per device per step by collective kind")
    return lines


# ---------------------------------------------------------------------------------------------------- profiles


def trace_log_dir(trace_path: str) -> Path:
    """The TensorBoard log directory of an xplane file: LOG_DIR/plugins/profile/RUN/HOST.xplane.pb."""
    path = Path(trace_path)
    parents = path.parents
    if len(parents) >= 4 and parents[1].name == "profile" and parents[2].name == "plugins":
        return parents[3]
    return path.parent


def section_profiles(a: Analysis) -> list[str]:
    lines = ["## 6. Profiles", ""]
    profiled = [r for r in _latest_profiled(a.run.measured)]
    if not profiled:
        return lines + ["No variant in this run has a captured trace (records carry no profile_* fields).", ""]
    from bench.measure.profile import tensorboard_command  # imports JAX: only when there is a trace to open

    for r in profiled:
        ops = pd.DataFrame(
            [
                {
                    "op": o.get("name"),
                    "category": o.get("category"),
                    "self time ms": fmt(_number(o.get("self_time_us")) / 1e3),
                    "share %": fmt(_number(o.get("share")) * 100),
                }
                for o in r.get("profile_top_ops") or []
            ]
        )
        lines += [
            f"### {r['variant']} (jax {row_key(r)[1]}, repeat {r.get('repeat', 0)})",
            "",
            f"Collectives take {pct(r.get('profile_collective_share'))} of the summed op time "
            f"({r.get('profile_tool', 'profiler')} tool; busy device time, not wall-clock step time).",
            "",
        ]
        if not ops.empty:
            lines += [markdown_table(ops), ""]
        trace = r.get("profile_trace_path")
        if trace:
            lines += [
                f"Trace: `{trace}`. Open it with:",
                "",
                "```",
                tensorboard_command(trace_log_dir(trace)),
                "```",
                "",
            ]
    return lines


def _latest_profiled(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    latest: dict[tuple, Mapping[str, Any]] = {}
    for record in records:
        if record["status"] == "ok" and record.get("profile_collective_share") is not None:
            latest[row_key(record)] = record
    return list(latest.values())


# ---------------------------------------------------------------------------------------------------- environment

ENV_FIELDS = (
    "hostname",
    "cpu_model",
    "cpu_count",
    "backend",
    "device_kind",
    "devices",
    "topology",
    "process_count",
    "python",
    "jax",
    "jaxlib",
    "haiku",
    "libtpu",
    "xla_flags",
    "git_commit",
    "git_dirty",
    "peak_source",
)


def _distinct(records: Sequence[Mapping[str, Any]], key: str) -> str:
    counts = Counter(str(r[key]) for r in records if r.get(key) not in (None, ""))
    if not counts:
        return "n/a"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{value} ({n} records)" for value, n in counts.items())


def environment_table(run: RunRecords) -> pd.DataFrame:
    groups = {"measured runs": list(run.measured), "tpu-aot compiles": list(run.aot)}
    groups = {name: records for name, records in groups.items() if records}
    rows = []
    for key in ENV_FIELDS:
        values = {name: _distinct(records, key) for name, records in groups.items()}
        if any(v != "n/a" for v in values.values()):
            rows.append({"field": key, **values})
    stamps = {name: _time_range(records) for name, records in groups.items()}
    rows.append({"field": "timestamp_utc", **stamps})
    return pd.DataFrame(rows)


def _time_range(records: Sequence[Mapping[str, Any]]) -> str:
    stamps = sorted(str(r["timestamp_utc"]) for r in records if r.get("timestamp_utc"))
    return f"{stamps[0]} to {stamps[-1]}" if stamps else "n/a"


def reproduce_commands(run: RunRecords) -> list[str]:
    """`bench run` command lines that repeat the measured records: one per JAX environment and repeat index."""
    if not run.measured:
        return []
    lines = []
    commits = Counter(r.get("git_commit") for r in run.measured if r.get("git_commit"))
    if commits:
        lines.append(f"git checkout {commits.most_common(1)[0][0]}")
        if any(r.get("git_dirty") for r in run.measured):
            lines.append("# the recorded tree had uncommitted changes (git_dirty): the checkout may differ")
        if len(commits) > 1:
            lines.append(f"# records come from {len(commits)} commits: {', '.join(commits)}")
    groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for record in run.measured:
        if record.get("jax"):
            groups.setdefault((record["jax"], record.get("repeat", 0)), []).append(record)
        else:  # e.g. the sweep's record of a process that died: it names an environment, not a JAX version
            lines.append(
                f"# {record['variant']} (repeat {record.get('repeat', 0)}): no JAX version recorded"
                + (f" (environment {record['environment']})" if record.get("environment") else "")
                + "; run it with the command of its environment"
            )
    for (jax, repeat), records in groups.items():
        lines += _run_command(run, jax, repeat, records)
    lines.append(f"python -m bench report {shlex.quote(str(run.run_dir))}")
    return lines


def _run_command(run: RunRecords, jax: str, repeat: Any, records: Sequence[Mapping[str, Any]]) -> list[str]:
    config = run.config or {}
    first = records[0]
    comment = f"# jax {jax}, jaxlib {first.get('jaxlib')}, dm-haiku {first.get('haiku')}, python {first.get('python')}"
    steps = Counter(r["steps_timed"] for r in records if r.get("steps_timed"))
    warmups = Counter(r["warmup_steps"] for r in records if r.get("warmup_steps") is not None)
    flags = Counter(r.get("xla_flags") for r in records if r.get("xla_flags"))
    words = [
        "python",
        "-m",
        "bench",
        "run",
        "--preset",
        str(config.get("preset")),
        "--mesh",
        f"dp={config.get('mesh_dp')},mp={config.get('mesh_mp')}",
        "--scope",
        str(config.get("scope")),
    ]
    words += [f for s in _overrides(config) for f in ("--set", s)]
    if steps:
        words += ["--steps", str(steps.most_common(1)[0][0])]
    if warmups:
        words += ["--warmup", str(warmups.most_common(1)[0][0])]
    words += ["--repeat", str(repeat), "--out", str(run.run_dir)]
    for variant in dict.fromkeys(r["variant"] for r in records):
        words += ["--variant", variant]
    prefix = f"XLA_FLAGS={shlex.quote(flags.most_common(1)[0][0])} " if flags else ""
    missing = [flag for flag, found in (("--steps", steps), ("--warmup", warmups)) if not found]
    notes = f"# no ok record gives {' or '.join(missing)}" if missing else "# one process per variant in a sweep"
    return [comment, notes, prefix + " ".join(shlex.quote(w) for w in words)]


def _overrides(config: Mapping[str, Any]) -> list[str]:
    """--set values for the recorded batch, seq and dtype where they differ from the preset's defaults."""
    preset = PRESETS.get(str(config.get("preset")))
    if preset is None:
        return []
    defaults = {"batch": preset.batch, "seq": preset.seq, "compute_dtype": preset.model.compute_dtype.value}
    recorded = {"batch": config.get("batch"), "seq": config.get("seq"), "compute_dtype": config.get("dtype")}
    return [f"{k}={recorded[k]}" for k in defaults if recorded[k] is not None and recorded[k] != defaults[k]]


def section_environment(a: Analysis) -> list[str]:
    return [
        "## 7. Environment",
        "",
        markdown_table(environment_table(a.run)),
        "",
        "Commands that reproduce the records (model shape overrides other than batch, seq and dtype are not recorded):",
        "",
        "```",
        *(reproduce_commands(a.run) + aot_commands(a.run) or ["# no records to reproduce"]),
        "```",
        "",
    ]


def aot_commands(run: RunRecords) -> list[str]:
    """`bench tpu-aot` command lines that repeat the compile records: one per JAX version, topology and mesh."""
    groups: dict[tuple, list[str]] = {}
    for record, directory in zip(run.aot, run.aot_from):
        key = (
            record.get("jax"),
            record.get("topology"),
            record.get("preset"),
            record.get("mesh_dp"),
            record.get("mesh_mp"),
            record.get("batch"),
            record.get("seq"),
            record.get("dtype"),
            directory,
        )
        groups.setdefault(key, []).append(record["variant"])
    lines = []
    for (jax, topology, preset, dp, mp, batch, seq, dtype, directory), variants in groups.items():
        config = {"preset": preset, "batch": batch, "seq": seq, "dtype": dtype}
        words = [
            "python",
            "-m",
            "bench",
            "tpu-aot",
            "--topology",
            str(topology),
            "--preset",
            str(preset),
            "--mesh",
            f"dp={dp},mp={mp}",
            *[f for o in _overrides(config) for f in ("--set", o)],
            "--out",
            str(directory),
        ]
        for variant in dict.fromkeys(variants):
            words += ["--variant", variant]
        lines += [f"# TPU compile only, jax {jax}", " ".join(shlex.quote(w) for w in words)]
    return lines


# ---------------------------------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class CompareResult:
    other_dir: Path
    table: pd.DataFrame  # variant, jax, this, other, ratio, flag
    threshold: float
    threshold_source: str
    regressions: tuple[str, ...]
    note: str | None  # why rows could not be compared, if they could not


def compare_runs(this: Analysis, other_dir: Path) -> CompareResult:
    other_run = load_run(other_dir)
    other = summarise(other_run.measured)
    other_noise = run_noise(other)
    candidates = [(MIN_COMPARE_THRESHOLD, "floor")]
    for noise, name in ((this.noise, "this run's noise"), (other_noise, "the other run's noise")):
        if noise.fraction is not None:
            candidates.append((noise.fraction, name))
    threshold, source = max(candidates)
    if other_run.config != this.run.config:
        note = (
            f"not compared: this run is {_config_text(this.run.config) if this.run.config else 'empty'}, "
            f"{other_dir} is {_config_text(other_run.config) if other_run.config else 'empty'}"
        )
        return CompareResult(other_dir, pd.DataFrame(), threshold, source, (), note)
    merged = this.summary[["variant", "jax", "tokens_per_s"]].merge(
        other[["variant", "jax", "tokens_per_s"]], on=["variant", "jax"], how="outer", suffixes=("_this", "_other")
    )
    merged["ratio"] = merged["tokens_per_s_this"] / merged["tokens_per_s_other"]
    merged["flag"] = [
        _flag(r, t, o, threshold)
        for r, t, o in zip(merged["ratio"], merged["tokens_per_s_this"], merged["tokens_per_s_other"])
    ]
    regressions = tuple(
        f"{v} (jax {j}): {r:.3f}x ({fmt(t)} tokens/s here, {fmt(o)} in {other_dir})"
        for v, j, r, t, o, f in merged[
            ["variant", "jax", "ratio", "tokens_per_s_this", "tokens_per_s_other", "flag"]
        ].itertuples(index=False)
        if f == "REGRESSION"
    )
    return CompareResult(other_dir, merged, threshold, source, regressions, None)


def _flag(ratio: float, this: float, other: float, threshold: float) -> str:
    if math.isnan(this) and math.isnan(other):
        return "no throughput in either run"
    if math.isnan(other):
        return "only in this run"
    if math.isnan(this):
        return "only in the other run"
    if ratio < 1 - threshold:
        return "REGRESSION"
    if ratio > 1 + threshold:
        return "faster"
    return "within noise"


def section_compare(a: Analysis) -> list[str]:
    c = a.comparison
    if c is None:
        return []
    lines = [f"## 8. Against {c.other_dir}", ""]
    if c.note:
        return lines + [c.note, ""]
    lines += [
        f"Ratio = this run's tokens/s over the other run's, per variant and JAX version. A change is flagged beyond "
        f"{fmt(c.threshold * 100, 3)}% ({c.threshold_source}; the threshold is the largest of this run's noise, the "
        f"other run's noise and a {fmt(MIN_COMPARE_THRESHOLD * 100, 2)}% floor).",
        "",
    ]
    table = pd.DataFrame(
        {
            "variant": c.table["variant"],
            "jax": c.table["jax"],
            "tokens/s this run": c.table["tokens_per_s_this"].map(fmt),
            "tokens/s other run": c.table["tokens_per_s_other"].map(fmt),
            "ratio": c.table["ratio"].map(fmt_ratio),
            "flag": c.table["flag"],
        }
    )
    return lines + [markdown_table(table), ""]


def regression_banner(a: Analysis) -> list[str]:
    c = a.comparison
    if c is None:
        return []
    if c.note:
        return [f"> **--compare:** {c.note}", ""]
    if not c.regressions:
        return [f"> **--compare:** no regression beyond {fmt(c.threshold * 100, 3)}% against {c.other_dir}.", ""]
    return [
        f"> **REGRESSIONS** beyond the noise threshold ({fmt(c.threshold * 100, 3)}%) against {c.other_dir}:",
        ">",
        *[f"> - {r}" for r in c.regressions],
        "",
    ]


# ---------------------------------------------------------------------------------------------------- report


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
        f"failed) of {_config_text(run.config) if run.config else 'no measured configuration'}; "
        f"{len(run.aot)} TPU ahead-of-time compile records (projection inputs, section 4).",
        "",
    ]
    lines += regression_banner(a)
    lines += skipped_banner(run, a.unprojected)
    for section in (
        section_headline,
        section_summary,
        section_effects,
        section_baseline,
        section_comm,
        section_profiles,
        section_environment,
        section_compare,
    ):
        lines += section(a) + [""]
    return "\n".join(lines).rstrip() + "\n"


def draw(a: Analysis, out_dir: Path) -> dict[str, str]:
    """Write the PNGs beside REPORT.md; returns {plot name: file name} for the ones with data."""
    from bench.report import plots  # matplotlib is imported only when plots are drawn

    for name in PLOTS.values():  # a plot with no data this time must not leave last time's picture behind
        (out_dir / name).unlink(missing_ok=True)
    remat = next(e for e in a.effects if e.comparison.axis == "remat")
    pairs = pd.DataFrame(
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
    references = {
        "GPT-J-6B MFU (6N), published basis": baseline.utilisation(baseline.effective_flops_per_s()),
        "GPT-J-6B HFU, published basis": baseline.utilisation(baseline.hardware_flops_per_s(as_benchmark_py=True)),
    }
    jobs: dict[str, Callable[[Path], Path | None]] = {
        "throughput": lambda p: plots.throughput(a.summary, p),
        "effects": lambda p: plots.effects(pairs, p),
        "utilisation": lambda p: plots.utilisation(a.summary, references, p),
        "wire": lambda p: plots.wire_bytes(comm_frame(_latest_ok(a.run.measured)), p),
        "memory": lambda p: plots.memory_vs_throughput(a.summary, [(q.a_index, q.b_index) for q in remat.pairs], p),
        "projection": lambda p: plots.projection(
            projection_frame(a.projections),
            baseline.TOKENS_PER_S.value,
            f"GPT-J-6B measured {fmt(baseline.TOKENS_PER_S.value)} tokens/s (published)",
            p,
        ),
    }
    drawn = {}
    for name, job in jobs.items():
        if job(out_dir / PLOTS[name]) is not None:
            drawn[name] = PLOTS[name]
    return drawn


def build(run_dir: Path, compare: Path | None = None, aot_dirs: Sequence[Path] = ()) -> Analysis:
    analysis = analyse(load_run(Path(run_dir), aot_dirs))
    if compare is not None:
        analysis.comparison = compare_runs(analysis, Path(compare))
    return analysis


def write_report(
    run_dir: Path, compare: Path | None = None, aot_dirs: Sequence[Path] = (), *, plots: bool = True
) -> Path:
    """Write RUN_DIR/REPORT.md (and its PNG plots unless ``plots`` is False); returns the report's path."""
    analysis = build(run_dir, compare, aot_dirs)
    if plots:
        analysis.figures = draw(analysis, Path(run_dir))
    path = Path(run_dir) / REPORT
    path.write_text(render(analysis))
    for line in [*analysis.run.skipped, *analysis.unprojected]:
        print(f"report: skipped: {line}", file=sys.stderr)
    return path


# ---------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory holding results.jsonl")
    parser.add_argument("--compare", type=Path, help="another run directory: per-variant ratios, regressions flagged")
    parser.add_argument(
        "--aot",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a directory of tpu-aot records to project (repeatable); tpu-aot records in RUN_DIR are read too",
    )
    parser.add_argument("--no-plots", action="store_true", help="write REPORT.md without the PNG plots")


def cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.run_dir, args.compare, args.aot, plots=not args.no_plots)
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_report(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
