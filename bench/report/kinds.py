"""Which kind of run a directory holds, and each kind's report: an ordered list of ``Section``s.

The kind is read from the records (``detect``). Each report opens with its answer (sections/lead), then the
sections that hold something for this run: a section whose ``needs`` is false is left out.

A new section is one line: a ``Section(name, render, needs)`` in the tuple of each kind that shows it. A new kind is
a ``RunKind`` member, its line in ``DETECT`` (the first predicate that holds wins) and its tuple in ``KINDS``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from bench.report.analyse import Analysis
from bench.report.load import RunRecords, latest_ok
from bench.report.section import Section
from bench.report.sections import claims, gpu, validation
from bench.report.sections.baseline import section_baseline
from bench.report.sections.comm import section_comm
from bench.report.sections.compare import section_compare
from bench.report.sections.decode import DECODE_DIR, decode_records, section_decode
from bench.report.sections.effects import section_effects
from bench.report.sections.environment import section_environment
from bench.report.sections.headline import section_failed, section_headline, section_summary
from bench.report.sections.kernels import load_kernel_run, section_kernels
from bench.report.sections.kernels_tpu import section_kernels_tpu
from bench.report.sections.lead import compare_lead, lead_block, search_lead, sweep_lead
from bench.report.sections.profiles import section_profiles
from bench.report.sections.search import section_search


class RunKind(enum.Enum):
    SWEEP = "sweep"  # the main job: a CPU sweep of the variants, TPU compiles projected, attention kernels
    SEARCH = "search"  # the design-space search: TPU compiles of its points only
    CPU_BLOCK = "cpu-block"  # one block on this machine's CPU, one layout against another (--compare)
    GPU = "gpu"  # python -m bench.gpu: the plan's runs on one GPU, with the probe's device.json
    VALIDATE = "validate"  # python -m bench validate: published TPU runs compiled, projected and calibrated


DETECT: tuple[tuple[RunKind, Callable[[RunRecords], bool]], ...] = (
    (RunKind.GPU, lambda run: run.device is not None),
    (RunKind.SEARCH, lambda run: bool(run.search) and not run.measured and not run.aot),
    (RunKind.VALIDATE, lambda run: bool(run.validation) and not run.measured and not run.aot and not run.search),
    (RunKind.CPU_BLOCK, lambda run: (run.config or {}).get("scope") == "block"),
)


def detect(run: RunRecords) -> RunKind:
    return next((kind for kind, holds in DETECT if holds(run)), RunKind.SWEEP)


def answer(lead: Callable[[Analysis], list[str]]) -> Section:
    return Section("answer", lambda a: lead_block(lead(a)))


def _timed(a: Analysis) -> bool:
    return not a.summary.empty


def _effects(a: Analysis) -> bool:
    return any(e.pairs for e in (*a.effects, *a.cross_effects))


def _profiled(a: Analysis) -> bool:
    return any(r.get("profile_collective_frac") is not None or r.get("gemm_floor_s_per_step") for r in a.run.measured)


def _collectives(a: Analysis) -> bool:
    return bool(latest_ok(a.run.measured, "topology") or latest_ok(a.run.aot, "topology"))


HEADLINE = Section("headline", section_headline, lambda a: bool(a.projections) or _timed(a))
SUMMARY = Section("summary", section_summary, _timed)
FAILED = Section("failed", section_failed, lambda a: not a.failed.empty)
EFFECTS = Section("effects", section_effects, _effects)
KERNELS = Section("kernels", section_kernels, lambda a: load_kernel_run(a.run.run_dir) is not None)
BASELINE = Section("baseline", section_baseline)
KERNELS_TPU = Section("kernels on TPU", section_kernels_tpu, lambda a: bool(a.projections))
SEARCH = Section("search", section_search, lambda a: bool(a.run.search))
COMM = Section("communication", section_comm, _collectives)
PROFILES = Section("profiles", section_profiles, _profiled)
ENVIRONMENT = Section(
    "environment", section_environment, lambda a: bool(a.run.measured or a.run.aot or a.run.search or a.run.validation)
)
COMPARE = Section("compare", section_compare, lambda a: a.comparison is not None)
VALIDATION = Section("validation", validation.section_validation, lambda a: bool(a.run.validation))
CLAIMS = Section("claims", claims.section_claims, lambda a: bool(a.projections))
INFERENCE = Section(
    "inference",
    lambda a: section_decode(decode_records(a.run.run_dir / DECODE_DIR)),
    lambda a: bool(decode_records(a.run.run_dir / DECODE_DIR)),
)

KINDS: dict[RunKind, tuple[Section, ...]] = {
    RunKind.SWEEP: (
        answer(sweep_lead),
        HEADLINE,
        SUMMARY,
        FAILED,
        EFFECTS,
        KERNELS,
        BASELINE,
        KERNELS_TPU,
        VALIDATION,
        CLAIMS,
        INFERENCE,
        SEARCH,
        COMM,
        PROFILES,
        ENVIRONMENT,
        COMPARE,
    ),
    RunKind.SEARCH: (answer(search_lead), SEARCH, BASELINE, ENVIRONMENT),
    RunKind.CPU_BLOCK: (answer(compare_lead), COMPARE, SUMMARY, FAILED, EFFECTS, PROFILES, COMM, ENVIRONMENT),
    RunKind.VALIDATE: (answer(validation.validation_lead), VALIDATION, ENVIRONMENT),
    RunKind.GPU: (
        answer(gpu.gpu_lead),
        Section("setup", gpu.section_setup),
        Section("peaks", gpu.section_peaks, gpu.probe_ok),
        Section("results", gpu.section_results, gpu.probe_ok),
        Section("components", gpu.section_components, gpu.probe_ok),
        Section("failures", gpu.section_failures, gpu.has_failures),
    ),
}

# The plots a kind draws, where it is not every plot with data: a one-GPU run's directory comes back through the
# device tool, which returns at most 8 files (bench.gpu.plan.MAX_FILES), so it draws only the two its sections show.
KIND_PLOTS: dict[RunKind, tuple[str, ...]] = {RunKind.GPU: ("throughput", "measured_components")}
