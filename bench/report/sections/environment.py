"""Section 7: the environment the records came from, and the command lines that repeat them."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.records.peakfile import PEAK_FILE, PeakEntry, drift, read_peaks
from bench.records.runspec import flag_argv, run_argv
from bench.records.schema import Status
from bench.report.analyse import Analysis
from bench.report.format import markdown_table, span
from bench.report.load import RunRecords
from model.config import PRESETS

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
    "peak_from_cache",
)
PEAK_DRIFT_LIMIT = 0.05  # a start-to-end or between-environment difference above 5% is reported


def section_environment(a: Analysis) -> list[str]:
    return _section_environment(a) + peak_section(a.run)


def peak_section(run: RunRecords) -> list[str]:
    """Each environment's CPU peak (RUN_DIR/peaks.jsonl): figure, method, load, and the theoretical ceiling."""
    entries = read_peaks(run.run_dir)
    if not entries:
        return []
    rows = [
        {
            "jax": e.jax, "when": e.when, "dtype": e.dtype, "devices": e.devices,
            "GFLOP/s per device": f"{e.flops_per_device / 1e9:.1f}",
            "theoretical GFLOP/s per device": "n/a" if e.theoretical_flops_per_device is None
            else f"{e.theoretical_flops_per_device / 1e9:.1f}",
            "load avg (1 min) before -> after": f"{e.load_avg_before:.2f} -> {e.load_avg_after:.2f}",
            "measured (UTC)": e.measured_utc, "method": e.method,
        }
        for e in entries
    ]  # fmt: skip
    theory = {e.theoretical_source: e.theoretical_flops_per_device is not None for e in entries}
    lines = [f"### CPU peak ({PEAK_FILE})", "", markdown_table(pd.DataFrame(rows)), ""]
    lines += [f"Theoretical peak: {t}." if known else f"{t[0].upper()}{t[1:]}." for t, known in theory.items()]
    lines.append("")
    return lines + [f"- {w}" for w in peak_warnings(run) + per_run_peak_spreads(run)] + [""]


def _per_run_peaks(run: RunRecords) -> dict[str, list[float]]:
    """jax version -> the per-run CPU peaks (FLOP/s per device) of its records, where every ok record has one."""
    ok = [r for r in run.measured if r.get("status") == Status.OK.value]
    if not ok or any(r.get("peak_run_flops_per_s_per_device") is None for r in ok):
        return {}
    peaks: dict[str, list[float]] = {}
    for r in ok:
        peaks.setdefault(r["jax"], []).append(r["peak_run_flops_per_s_per_device"])
    return peaks


def per_run_peak_spreads(run: RunRecords) -> list[str]:
    """A sentence per JAX environment: the spread of the peaks its variants' MFU are against."""
    return [
        f"MFU is against each variant's own CPU peak, measured just before its timed steps: jax {jax} "
        f"{min(p) / 1e9:.1f} to {max(p) / 1e9:.1f} GFLOP/s per device over {len(p)} runs "
        f"({max(p) / min(p) - 1.0:.1%} spread)"
        if max(p) > min(p)
        else f"MFU is against each variant's own CPU peak, measured just before its timed steps: jax {jax} "
        f"{p[0] / 1e9:.1f} GFLOP/s per device in each of {len(p)} runs"
        for jax, p in sorted(_per_run_peaks(run).items())
    ]


def peak_warnings(run: RunRecords) -> list[str]:
    """A sentence per drift of the CPU peak above 5%: over the sweep in one environment, or between environments.
    Where every variant's MFU is against its own per-run peak, a drift is a fact about the machine, not a doubt."""
    entries = read_peaks(run.run_dir)
    against_own = bool(_per_run_peaks(run))
    warnings = []
    starts: dict[tuple, PeakEntry] = {}
    for e in entries:
        key = (e.jax, e.python, e.dtype, e.devices)
        if e.when == "start":
            starts.setdefault(key, e)
        elif key in starts and abs(d := drift(starts[key], e)) > PEAK_DRIFT_LIMIT:
            s = starts[key]
            warnings.append(
                f"{'The' if against_own else 'MFU uncertain: the'} CPU peak drifted {d:+.1%} over the sweep "
                f"(jax {e.jax}: {s.flops_per_device / 1e9:.1f} GFLOP/s per device at the start, load "
                f"{s.load_avg_before:.2f}; {e.flops_per_device / 1e9:.1f} at the end, load {e.load_avg_before:.2f})"
                + ("; MFU is against each variant's own peak, so the drift does not move it" if against_own else "")
            )
    by_setting: dict[tuple, list[PeakEntry]] = {}
    for e in starts.values():
        by_setting.setdefault((e.dtype, e.devices), []).append(e)
    for group in by_setting.values():
        low, high = min(group, key=_flops), max(group, key=_flops)
        if high.flops_per_device > low.flops_per_device * (1 + PEAK_DRIFT_LIMIT):
            warnings.append(_between_environments(low, high, against_own))
    return warnings


def _flops(entry: PeakEntry) -> float:
    return entry.flops_per_device


def _between_environments(low: PeakEntry, high: PeakEntry, against_own: bool = False) -> str:
    gap = high.flops_per_device / low.flops_per_device - 1.0
    said = (
        f"The JAX environments' CPU peaks differ by {gap:.1%}: jax {high.jax} {high.flops_per_device / 1e9:.1f} "
        f"GFLOP/s per device (load {high.load_avg_before:.2f}), jax {low.jax} {low.flops_per_device / 1e9:.1f} "
        f"(load {low.load_avg_before:.2f}). "
    )
    if against_own:
        return said + "Each variant's MFU is against its own peak, measured just before its timed steps."
    if low.load_avg_before > high.load_avg_before:
        return said + (
            "The lower one was measured under more load, so contention may explain it: MFU across the two "
            "environments is uncertain."
        )
    return said + (
        "The lower one was not measured under more load, so the two JAX versions' CPU GEMMs run at different "
        "speeds; each environment's MFU is against its own peak, comparable within an environment, not across."
    )


def _section_environment(a: Analysis) -> list[str]:
    lines = ["## 7. Environment", "", markdown_table(environment_table(a.run)), ""]
    commands = reproduce_commands(a.run) + aot_commands(a.run)  # the report's own command ends the report
    if not commands:  # the search's records do not carry the command that made them
        return lines
    return lines + [
        "Commands that reproduce the records (model shape overrides other than batch, seq and dtype are not recorded):",
        "",
        "```",
        *commands,
        "```",
        "",
    ]


def _distinct(records: Sequence[Mapping[str, Any]], key: str) -> str:
    counts = Counter(str(r[key]) for r in records if r.get(key) not in (None, ""))
    if not counts:
        return "n/a"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{value} ({n} records)" for value, n in counts.items())


def environment_table(run: RunRecords) -> pd.DataFrame:
    groups = {
        "measured runs": list(run.measured),
        "tpu-aot compiles": list(run.aot),
        "design-space search": list(run.search),
    }
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
    return span(stamps[0], stamps[-1], str) if stamps else "n/a"


def reproduce_commands(run: RunRecords) -> list[str]:
    """`bench run` command lines that repeat the measured records: one per JAX environment and repeat index."""
    if not run.measured:
        return []
    lines = _checkout(run.measured)
    groups: dict[tuple[str, Any], list[Mapping[str, Any]]] = {}
    for record in run.measured:
        if record.get("jax"):
            groups.setdefault((record["jax"], record.get("repeat", 0)), []).append(record)
        else:  # a placeholder whose environment could not say its JAX version
            lines.append(
                f"# {record['variant']} (repeat {record.get('repeat', 0)}): no JAX version recorded; "
                "run it with the command of its environment"
            )
    for (jax, repeat), records in groups.items():
        lines += _run_command(run, jax, repeat, records)
    return lines


def report_command(a: Analysis) -> str:
    """The command that writes this report again from the same records."""
    words = ["python", "-m", "bench", "report", str(a.run.run_dir)]
    words += [w for d in a.run.aot_dirs for w in ("--aot", str(d))]
    words += ["--compare", str(a.comparison.other_dir)] if a.comparison is not None else []
    return _shell(words)


def _checkout(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """`git checkout` of the most frequent recorded commit, with a warning where the tree or the commits differ."""
    commits = Counter(r.get("git_commit") for r in records if r.get("git_commit"))
    if not commits:
        return []
    lines = [f"git checkout {commits.most_common(1)[0][0]}"]
    if any(r.get("git_dirty") for r in records):
        lines.append("# the recorded tree had uncommitted changes (git_dirty): the checkout may differ")
    if len(commits) > 1:
        lines.append(f"# records come from {len(commits)} commits: {', '.join(commits)}")
    return lines


def _run_command(run: RunRecords, jax: str, repeat: Any, records: Sequence[Mapping[str, Any]]) -> list[str]:
    config = run.config or {}
    first = records[0]
    comment = f"# jax {jax}, jaxlib {first.get('jaxlib')}, dm-haiku {first.get('haiku')}, python {first.get('python')}"
    steps = Counter(r["steps_timed"] for r in records if r.get("steps_timed"))
    warmups = Counter(r["warmup_steps"] for r in records if r.get("warmup_steps") is not None)
    flags = Counter(r.get("xla_flags") for r in records if r.get("xla_flags"))
    words = ["python", "-m", "bench"] + run_argv(
        preset=str(config.get("preset")),
        mesh=f"dp={config.get('mesh_dp')},mp={config.get('mesh_mp')}",
        scope=str(config.get("scope")),
        overrides=_overrides(config),
        steps=steps.most_common(1)[0][0] if steps else None,
        warmup=warmups.most_common(1)[0][0] if warmups else None,
        repeat=repeat,
        out=str(run.run_dir),
        variant=list(dict.fromkeys(r["variant"] for r in records)),
    )
    prefix = f"XLA_FLAGS={shlex.quote(flags.most_common(1)[0][0])} " if flags else ""
    missing = [flag for flag, found in (("--steps", steps), ("--warmup", warmups)) if not found]
    notes = f"# no ok record gives {' or '.join(missing)}" if missing else "# one process per variant in a sweep"
    return [comment, notes, prefix + _shell(words)]


# a tpu-aot command repeats the compiles that agree in these (and in the directory they were read from)
AOT_COMMAND_FIELDS = ("jax", "topology", "preset", "mesh_dp", "mesh_mp", "batch", "seq", "dtype")


def aot_commands(run: RunRecords) -> list[str]:
    """`bench tpu-aot` command lines that repeat the compile records: one per JAX version, topology and mesh."""
    groups: dict[tuple, list[str]] = {}
    for record, directory in zip(run.aot, run.aot_from):
        key = (*(record.get(f) for f in AOT_COMMAND_FIELDS), directory)
        groups.setdefault(key, []).append(record["variant"])
    lines = []
    for (*values, directory), variants in groups.items():
        fields = dict(zip(AOT_COMMAND_FIELDS, values))
        words = ["python", "-m", "bench", "tpu-aot", f"--topology={fields['topology']}"]
        words += flag_argv(
            preset=str(fields["preset"]),
            overrides=_overrides(fields),
            mesh=f"dp={fields['mesh_dp']},mp={fields['mesh_mp']}",
            out=str(directory),
            variant=list(dict.fromkeys(variants)),
        )
        lines += [f"# TPU compile only, jax {fields['jax']}", _shell(words)]
    return lines


def _overrides(config: Mapping[str, Any]) -> list[str]:
    """--set values for the recorded batch, seq and dtype where they differ from the preset's defaults."""
    preset = PRESETS.get(str(config.get("preset")))
    if preset is None:
        return []
    defaults = {"batch": preset.batch, "seq": preset.seq, "compute_dtype": preset.model.compute_dtype.value}
    recorded = {"batch": config.get("batch"), "seq": config.get("seq"), "compute_dtype": config.get("dtype")}
    return [f"{k}={recorded[k]}" for k in defaults if recorded[k] is not None and recorded[k] != defaults[k]]


def _shell(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)
