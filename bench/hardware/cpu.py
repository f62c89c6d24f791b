"""The theoretical f32 peak of this machine's CPU, from what lscpu says: a ceiling no GEMM calibration may pass.

peak = cores x clock x f32 lanes per vector x 2 (an FMA is two FLOPs) x FMA units per core.

- lanes: 16 with AVX-512F (512-bit registers), 8 with AVX2 and FMA (256-bit), else no FMA peak is claimed.
- FMA units: 2 per core on x86-64 with FMA (Intel 64 and IA-32 Architectures Optimization Reference Manual,
  Haswell and later: two FMA units on ports 0 and 1; AMD Software Optimization Guide for AMD Family 17h/19h
  Processors: two FMA pipes, FP0 and FP1; per-instruction throughputs at https://uops.info/table.html). Zen 1 and
  Zen+ split a 256-bit FMA into two 128-bit halves, so there the formula is twice the true peak: still a ceiling.
- clock: the maximum (turbo) clock, lscpu's "CPU max MHz". A guest VM's "CPU MHz" is the nominal or current clock,
  which turbo exceeds: on this project's 2-core KVM guest (nominal 1996 MHz, AVX2) a jitted 2048 GEMM reached
  174 GFLOP/s (measured on the CPU block's machine) against 2 x 1.996 GHz x 8 x 2 x 2 = 128 at the nominal clock.
  Without a maximum clock no ceiling is claimed, rather than a false one.
- cores: physical cores (hyperthreads share a core's FMA units), at most those this process may run on.

Pure (no JAX): ``read_cpu_facts`` runs lscpu; the rest are functions of text and numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

FMA_UNITS_X86_64 = 2  # see the module docstring for the manuals
FLOPS_PER_FMA = 2  # a multiply and an add
LANES_BY_FLAG = (("avx512f", 16), ("avx2", 8))  # f32 lanes of the widest FMA vector the flag brings


class PeakAboveTheoretical(ValueError):
    """A CPU peak calibration above the theoretical peak: the timing measured something other than the GEMM."""


@dataclass(frozen=True)
class CpuFacts:
    """What the formula needs; None where it could not be read."""

    cores: int | None  # physical cores this process may use
    max_clock_hz: float | None
    f32_lanes: int | None  # of the widest FMA vector
    fma_units: int | None
    note: str  # where the facts came from, or which one is missing


def theoretical_f32_peak_flops(cores: int, clock_hz: float, f32_lanes: int, fma_units: int) -> float:
    """FLOP/s of ``cores`` each retiring ``fma_units`` FMAs of ``f32_lanes`` lanes per cycle at ``clock_hz``."""
    if min(cores, clock_hz, f32_lanes, fma_units) <= 0:
        raise ValueError(f"every factor must be positive: {cores=}, {clock_hz=}, {f32_lanes=}, {fma_units=}")
    return cores * clock_hz * f32_lanes * FLOPS_PER_FMA * fma_units


def parse_lscpu(text: str, usable_cpus: int | None = None) -> CpuFacts:
    """``lscpu`` output (English field names) as CpuFacts; ``usable_cpus``: the CPUs this process may run on."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    flags = set(fields.get("flags", "").split())
    lanes = next((n for flag, n in LANES_BY_FLAG if flag in flags and (flag != "avx2" or "fma" in flags)), None)
    fma_units = FMA_UNITS_X86_64 if fields.get("architecture") == "x86_64" and "fma" in flags else None
    cores = _int(fields.get("core(s) per socket"))
    sockets = _int(fields.get("socket(s)"))
    cores = cores * sockets if cores and sockets else None
    if cores and usable_cpus:
        threads = _int(fields.get("thread(s) per core")) or 1
        cores = min(cores, max(1, usable_cpus // threads))
    max_mhz = _float(fields.get("cpu max mhz"))
    missing = [
        name
        for name, value in (("cores", cores), ("max clock (CPU max MHz)", max_mhz), ("FMA vector width", lanes))
        if not value
    ] + ([] if fma_units else ["FMA units (x86-64 with FMA only)"])
    note = f"lscpu: {fields.get('model name', 'unknown CPU')}"
    if missing:
        note += f"; unreadable: {', '.join(missing)}"
    return CpuFacts(cores, max_mhz * 1e6 if max_mhz else None, lanes, fma_units, note)


def theoretical_peak(facts: CpuFacts) -> tuple[float | None, str]:
    """The machine's theoretical f32 FLOP/s and how it was computed; None, with the reason, where a fact is missing."""
    if not (facts.cores and facts.max_clock_hz and facts.f32_lanes and facts.fma_units):
        return None, f"no theoretical peak: {facts.note}"
    flops = theoretical_f32_peak_flops(facts.cores, facts.max_clock_hz, facts.f32_lanes, facts.fma_units)
    return flops, (
        f"{facts.cores} cores x {facts.max_clock_hz / 1e9:.2f} GHz x {facts.f32_lanes} f32 lanes x 2 (FMA) x "
        f"{facts.fma_units} FMA units = {flops / 1e9:.0f} GFLOP/s ({facts.note})"
    )


def read_cpu_facts() -> CpuFacts:
    """This machine's CpuFacts, from ``lscpu`` in the C locale (field names in English)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lscpu = shutil.which("lscpu")
    if lscpu is None:
        return CpuFacts(None, None, None, None, "lscpu is not installed")
    try:
        result = subprocess.run([lscpu], capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError) as error:
        return CpuFacts(None, None, None, None, f"lscpu failed: {error}")
    return parse_lscpu(result.stdout, usable)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
