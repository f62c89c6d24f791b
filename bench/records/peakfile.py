"""``RUN_DIR/peaks.jsonl``: the CPU peaks a run measured, one JSON line per calibration, the contract between the
code that measures them (bench.measure.peaks, ``python -m bench calibrate``) and the report.

A run (or a sweep, once per JAX environment) measures the peak at its start, before any timed step; a sweep
measures it again at its end. Records point to their start entry (``peak_file``, ``peak_measured_utc``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.records.store import append_line_atomically

PEAK_FILE = "peaks.jsonl"
WHEN = ("start", "end")  # before the first timed step; after the last (a sweep's)


@dataclass(frozen=True)
class PeakEntry:
    """One calibration in one JAX environment, for one dtype and device count."""

    when: str  # one of WHEN
    jax: str
    jaxlib: str
    python: str  # the environment's interpreter
    dtype: str
    devices: int  # the simulated CPU devices sharing the machine's cores
    flops_per_device: float  # FLOP/s
    method: str  # bench.measure.calibrate.METHOD
    source: str  # what was measured, as peak_source
    measured_utc: str  # ISO 8601, seconds
    load_avg_before: float  # 1-minute load average, os.getloadavg()[0]
    load_avg_after: float
    theoretical_flops_per_device: float | None  # bench.hardware.cpu; None where lscpu lacks a fact
    theoretical_source: str

    def same_setting(self, jax: str, python: str, dtype: str, devices: int) -> bool:
        return (self.jax, self.python, self.dtype, self.devices) == (jax, python, dtype, devices)


def peak_path(run_dir: Path) -> Path:
    return Path(run_dir) / PEAK_FILE


def read_peaks(run_dir: Path) -> list[PeakEntry]:
    """The run directory's entries in the order measured; lines that are not entries are skipped."""
    path = peak_path(run_dir)
    if not path.exists():
        return []
    names = {f.name for f in dataclasses.fields(PeakEntry)}
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, Mapping) and set(data) == names and data["when"] in WHEN:
            entries.append(PeakEntry(**data))
    return entries


def append_peak(run_dir: Path, entry: PeakEntry) -> None:
    """Add ``entry`` atomically: the file is rewritten to a temporary name and renamed over the old one."""
    if entry.when not in WHEN:
        raise ValueError(f"when must be one of {WHEN}, got {entry.when!r}")
    path = peak_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_line_atomically(path, json.dumps(dataclasses.asdict(entry)) + "\n")


def drift(start: PeakEntry, end: PeakEntry) -> float:
    """(end - start) / start of the per-device figure."""
    return end.flops_per_device / start.flops_per_device - 1.0


def entry_fields(entry: PeakEntry) -> dict[str, Any]:
    """The record fields (schema section Peaks) of a record whose peak is ``entry``."""
    return {
        "peak_flops_per_s_per_device": entry.flops_per_device,
        "peak_source": entry.source,
        "peak_measured_utc": entry.measured_utc,
        "peak_load_avg_before": entry.load_avg_before,
        "peak_load_avg_after": entry.load_avg_after,
        "peak_theoretical_flops_per_s_per_device": entry.theoretical_flops_per_device,
        "peak_theoretical_source": entry.theoretical_source,
        "peak_file": PEAK_FILE,
        "peak_from_cache": False,
    }
