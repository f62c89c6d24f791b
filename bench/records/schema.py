"""The record schema: every field a record may carry, with its type, and the upgrade of older records.

A record is one flat JSON object (one line of ``results.jsonl``). Its fields are declared here, section by section,
as frozen dataclasses whose annotations are the JSON types (``X | None``: may be null); units are in the names
(``_s`` seconds, ``_bytes``, ``_per_step``, ``_per_s``, ``_us`` microseconds). A field may be absent (a failed
record has no timings); a field present must be declared and of its type: ``validate`` says where one is not, and
``bench.records.store.append_record`` refuses such a record, so no writer can drift from this module.

Communication keys are generated: ``comm_key(axis, kind, metric)`` is the one spelling of them, for writers
(``bench.analysis.comm.summarize``) and readers alike; ``comm_dtype_key(dtype)`` names the payload bytes by element
type, a pattern rather than a list because the types present depend on the program.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.records.collectives import CollectiveKind
from kernels.choice import AttentionKernel
from model.config import Layout

SCHEMA_VERSION = 2


class RecordKind(enum.Enum):
    """What a record is. ``backend`` says only which JAX platform ran (cpu, gpu, tpu)."""

    MEASURED = "measured"  # a timed run (``bench run``): ok, or failed with what it got to
    TPU_AOT = "tpu-aot"  # a compile-only run for a TPU topology (``bench tpu-aot``): nothing timed
    FAILED_PLACEHOLDER = "failed-placeholder"  # a run that died before writing its own record, written for it
    # an attention kernel the sweep found this platform or JAX lacks (kernels.attention.check_kernel_supported):
    # failed with that refusal as its error; never started, nothing compiled
    REFUSED = "refused"
    # one decode configuration (``bench decode``): measured on this machine, or (backend tpu) compiled for a TPU
    # topology and projected (bench.projection.decode), nothing timed
    DECODE = "decode"


# The sweep's attention-kernel comparisons (bench.launch.sweep) are a run directory of their own inside the sweep's:
# RUN_DIR/KERNEL_DIR/, so their reference reruns never count as repeats of the 24-variant sweep.
KERNEL_DIR = "kernels"


class Status(enum.Enum):
    OK = "ok"
    FAILED = "failed"


# --- sections ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """What was run, and whether it worked: every record carries these."""

    schema_version: int
    kind: str  # RecordKind
    status: str  # Status
    error: str | None
    traceback: str | None
    timestamp_utc: str  # ISO 8601, seconds
    variant: str  # the name; its four axes and its attention kernel follow
    residual: str
    d_head: int
    strategy: str
    remat: str
    attention_kernel: str  # kernels.choice.AttentionKernel: the name's +kernel suffix, "reference" where it has none
    layout: str  # model.config.Layout: the name's +fsdp suffix, "megatron" where it has none
    preset: str
    scope: str
    mesh_dp: int
    mesh_mp: int
    devices: int
    batch: int  # global sequences per micro-step (per step where grad_accum is 1)
    seq: int  # tokens per sequence
    grad_accum: int  # micro-batches per optimizer step (gradient accumulation): tokens per step = batch x seq x this
    grad_accum_dtype: str  # the dtype micro-batch gradients are summed in (float32; GPT-J's bfloat16 on gptj-6b)
    dtype: str  # compute dtype
    # The model's sizes and layout as run (a --set changes them without changing the preset's name).
    n_layers: int
    d_model: int
    d_ff: int
    vocab: int
    flat_tokens: bool  # model.config.ModelConfig.flat_tokens: projections over one [B*T, D] matrix of tokens
    repeat: int
    jax: str | None  # the JAX version that ran it (None: the placeholder's environment could not say)


@dataclass(frozen=True)
class Environment:
    python: str
    jaxlib: str
    haiku: str
    libtpu: str | None  # installed version, None where not installed
    xla_flags: str
    cpu_model: str
    cpu_count: int | None
    process_count: int
    hostname: str
    git_commit: str | None
    git_dirty: bool | None
    backend: str  # the JAX platform: cpu, gpu, tpu
    device_kind: str
    topology: str | None  # tpu-aot: the compiled-for topology, e.g. "v3:8x16"


@dataclass(frozen=True)
class Timing:
    compile_s: float
    warmup_steps: int
    steps_timed: int
    step_s_median: float | None
    step_s_min: float
    step_s_max: float
    step_s_iqr: float
    tokens_per_s: float | None  # global tokens, counted once
    tokens_per_s_per_device: float
    loss: float
    bare_loop_step_s: float  # the same step in a plain loop, synchronised once (--overhead); median over the pairs
    harness_overhead_frac: float  # median over interleaved pairs of (harnessed / bare loop - 1)
    harness_overhead_frac_min: float  # the pairs' spread
    harness_overhead_frac_max: float
    harness_overhead_pairs: int


@dataclass(frozen=True)
class Flops:
    n_params: int
    tokens_per_step: int
    flops_6n_per_step: float
    model_flops_per_step: float
    hardware_flops_per_step: float
    xla_flops_per_step: float | None  # XLA's cost analysis, summed over devices
    xla_flops_source: str | None  # how xla_flops_per_step was counted
    xla_bytes_accessed_per_step: float | None  # summed over devices
    flops_6n_per_s: float
    model_flops_per_s: float
    hardware_flops_per_s: float
    xla_flops_per_s: float | None
    xla_to_hardware_flops_ratio: float | None
    mfu: float | None  # model FLOP/s over the devices' summed peak; None where the peak is unknown
    mfu_6n: float | None
    hfu: float | None


@dataclass(frozen=True)
class CompilerEstimate:
    """tpu-aot: the TPU compiler's own estimate of the step's time (``optimal_seconds`` of its cost analysis)."""

    xla_optimal_seconds_per_step: float | None  # s per step, per device (every device runs the same program)
    xla_optimal_seconds_source: str | None  # how it was obtained: extrapolated, substituted, or not reported
    # where the estimate above was substituted (bench.analysis.extrapolate), this compile's own, or None
    xla_optimal_seconds_own_compile: float | None
    # per-device costs of the unrolled compiles the whole step is extrapolated from, one dict per compile:
    # layers, microsteps, xla_flops_per_step, xla_bytes_accessed_per_step, xla_optimal_seconds_per_step
    xla_cost_points: list
    # how many of those compiles' figures were reused from the compile cache (bench.tpu_aot.cache) instead of compiled
    xla_cost_points_from_cache: int
    # those compiles wrote the attention kernel's block loops out too (model.config.ModelConfig
    # .unroll_attention_blocks), so their cost analysis priced every block pair of blockwise and pallas; absent from
    # records written before, whose estimates of those kernels priced each block loop once
    xla_cost_points_attention_blocks_unrolled: bool
    # the whole-step compile's outputs were reused from that cache; compile_s is then the original compile's time
    compile_from_cache: bool
    # Why the step takes its time: seconds per step per device by component label (bench.analysis.components:
    # "qkv_proj", "attn_scores", ..., "collective mp"), each op of the optimized HLO priced at its roofline on the
    # topology's row and extrapolated as the estimate above; a projection, never a measurement
    component_seconds_per_step: dict | None
    component_seconds_source: str | None
    component_sum_over_optimal: float | None  # the components' sum over xla_optimal_seconds_per_step
    # The whole-step compile's own program priced op by op (bench.analysis.components over its optimized HLO, each
    # loop body times its trip count, at the topology's roofline): the work of the scanned program that would run,
    # from one compile and no unrolled ones; what the design-space search ranks by (a projection)
    hlo_roofline_seconds_per_step: float | None
    hlo_roofline_component_seconds_per_step: dict | None  # that sum by component label, as component_seconds_per_step


@dataclass(frozen=True)
class Peaks:
    peak_flops_per_device: float | None  # FLOP/s, the spec basis (or the CPU GEMM calibration)
    peak_source: str | None
    peak_flops_per_device_gptj_basis: float | None  # FLOP/s on the basis GPT-J's published MFU used
    peak_source_gptj_basis: str | None
    # CPU: the run directory's calibration (bench.records.peakfile), or the cross-run cache with --peak-cache
    peak_measured_utc: str | None  # ISO 8601; None for a cache entry older than this field
    peak_load_avg_before: float | None  # 1-minute load average around the calibration's GEMMs
    peak_load_avg_after: float | None
    peak_file: str | None  # relative to the run directory; None when the peak came from the cross-run cache
    peak_from_cache: bool  # True: read from the cross-run cache (--peak-cache), not measured for this run
    peak_theoretical_flops_per_device: float | None  # FLOP/s, bench.hardware.cpu; None where lscpu lacks a fact
    peak_theoretical_source: str | None
    # CPU: the peak MFU, HFU and the GEMM floor's share are against, GEMMs timed in the run's own process just
    # before its timed steps (bench.measure.peaks.per_run_peak_fields); absent on accelerators (the table's peak)
    peak_run_flops_per_device: float | None  # FLOP/s
    peak_run_source: str | None
    peak_run_s: float | None  # seconds the per-run calibration took, its GEMMs' compiles included


@dataclass(frozen=True)
class Memory:
    """The compiler's memory analysis, per device."""

    mem_argument_bytes: int
    mem_output_bytes: int
    mem_temp_bytes: int
    mem_alias_bytes: int
    mem_generated_code_bytes: int
    mem_peak_estimate_bytes: int


@dataclass(frozen=True)
class Communication:
    """The HLO's collectives per step; the per-kind and per-axis counts are ``comm_key``'s."""

    comm_count_total: int
    comm_bytes_total: int
    comm_wire_bytes_total: float
    comm_trip_counts_known: bool  # False: some loop's trip count was not found and its body counted once
    comm_empty_groups: bool
    comm_wider_than_compute: list  # "all-reduce f32 on mp": collectives in a wider float than the compute dtype
    comm_matches_model: bool  # mp all-reduces (arrays and bytes) and dp gradient bytes agree with the analytic model
    comm_differences: list  # one sentence per disagreement with the model
    comm_notes: list  # one sentence per way XLA combined or widened ops; not a disagreement


@dataclass(frozen=True)
class ExpectedCommunication:
    """bench.analysis.expected.ExpectedComm, per step, payload bytes per device."""

    expected_mp_layer_allreduce_count: int
    expected_mp_layer_allreduce_bytes: int
    expected_mp_other_allreduce_count: int
    expected_mp_other_allreduce_bytes: int
    expected_dp_grad_allreduce_bytes: int
    expected_mp_narrowed_max_bytes: int  # what carrying the loss's max in the compute dtype saves
    expected_dp_grad_allreduce_bytes_in_compute_dtype: int  # the gradient shards in the compute dtype
    expected_dp_gather_count: int  # FSDP: all-gathers over dp the model makes per step (0 in Megatron's layout)
    expected_dp_gather_bytes: int
    expected_dp_gather_count_min: int  # the fewest a compiler may make: gathers hoisted out of the micro-batch loop
    expected_dp_gather_count_max: int  # the most: the recomputed forward gathering the block's parameters again
    expected_dp_scatter_count: int  # FSDP: reduce-scatters of gradients over dp per step
    expected_dp_scatter_bytes: int


@dataclass(frozen=True)
class Profile:
    profile_command: str
    profile_trace_path: str
    profile_error: str | None
    profile_tool: str
    profile_op_count: int
    profile_total_op_time_us: float
    profile_collective_time_us: float
    profile_collective_share: float
    profile_compute_share: float
    profile_top_ops: list
    # The measured breakdown by block component (bench.measure.profile.component_fields): profiled op self times
    # under bench.analysis.components' labels, in ms per step per device, over profile_steps steps.
    profile_component_basis: str
    profile_component_ms_per_step: dict
    profile_component_matched_share: float  # of the step program's op time, ops found in its optimized HLO
    profile_other_programs_ms_per_step: float  # op time of other programs in the trace (argument copies, ...)
    profile_steps: int
    # The share of the profiled steps' wall time that op events cover (bench.analysis.profile.covered_share;
    # trace_viewer path only): below 1, work ran outside any op's event (XLA CPU's Eigen dots), so per-op and
    # per-component times understate it.
    profile_op_coverage: float | None


@dataclass(frozen=True)
class GemmFloor:
    """Every dot of the compiled step timed alone at its own shapes (``--gemm-floor``, bench.measure.gemm_floor):
    the time no fusion of the rest can beat. CPU: every simulated device's dots in turn on the shared cores."""

    gemm_floor_s_per_step: float
    gemm_floor_flops_per_s: float | None
    gemm_floor_component_ms_per_step: dict  # by bench.analysis.components' labels
    gemm_floor_dots: int  # dot executions per step
    gemm_floor_distinct_dots: int  # timed once each
    gemm_floor_untimed_matmuls: int  # convolutions (and oneDNN calls that broadcast an operand): not in the floor
    gemm_floor_untimed_flops_per_step: int
    gemm_floor_repeats: int
    gemm_floor_frac_of_peak: float | None  # the floor's FLOP/s over the devices' peak: how fast the GEMMs run
    gemm_floor_frac_of_step: float  # floor over the measured median step: the share of the step GEMMs must take


@dataclass(frozen=True)
class TpuFit:
    fits_hbm: bool | None
    hbm_bytes_per_device: float | None
    hbm_headroom_bytes: float
    oom_required_bytes: float  # what the TPU compiler said the step needs, when it refused it
    oom_available_hbm_bytes: float
    # A program the TPU compiler refuses for the target (Mosaic's refusal of a Pallas kernel on TPU v3): a finding,
    # recorded as a failed record, not a crash; compiler_refusal is its own words, trimmed to the line saying why.
    refused_by_compiler: bool
    compiler_refusal: str


@dataclass(frozen=True)
class Search:
    """A point of the design-space search (bench.tpu_aot.search, ``nox -s tpu_search``), on a tpu-aot record."""

    search_point: str  # "variant dp=32,mp=8 m=1": unique within a topology and preset
    search_micro_batch: int  # sequences per replica per micro-step (batch = dp x this)
    search_anchor: bool  # GPT-J's own choice (parallel-h256, dp=32 x mp=8 on the v3-256, full remat, m=1, megatron)
    # A pruned point: not compiled, because a refused sibling needs no more memory than it (the search's dominance
    # rules); fits_hbm is false, status failed, and these cite the sibling and the compiler's figures for it.
    pruned_by: str  # the sibling's search_point
    pruned_rule: str  # why the point needs at least the sibling's memory
    pruned_by_required_bytes: float | None  # per device, what the compiler said the sibling needs
    pruned_by_available_bytes: float | None  # per device, what it said is available


@dataclass(frozen=True)
class Validation:
    """A published run compiled for its topology (``python -m bench validate``, bench/tpu_aot/validate.py), on a
    tpu-aot record: the source's figure beside the projection. Tokens/s are over the whole slice."""

    validation_id: str  # the run file's id (reports/published-runs/)
    validation_file: str  # the run file read
    published_source: str  # repository, path and commit, or page
    published_quote: str  # the figure exactly as published
    published_figure: str  # which figure the source gave (bench.projection.published.Figure)
    published_value: float  # that figure, in its own unit
    published_convention: str | None  # the source's FLOPs per token, where the figure needs one
    published_tokens_per_s: float  # the figure as tokens/s, by that convention
    published_conversion: list  # [text, value] per step of that conversion
    remat_source_name: str  # the recomputation as the source names it
    remat_policy: str  # the suite's policy compiled for it
    validation_notes: list  # where the compile differs from what the source ran (a kernel priced by the reference)
    validate_s: float  # seconds to compile (or read from the cache) and project the run
    projected_tokens_per_s_by_model: dict  # projection model -> [no-overlap, full-overlap] PROJECTED tokens/s
    projected_model: str  # the headline's model (bench.projection.throughput.model_of)
    projected_tokens_per_s: float | None  # PROJECTED: the headline model's full-overlap bound
    projected_over_published: float | None
    calibrated_tokens_per_s: float | None  # the fit on the committed runs (bench.projection.calibrate), where made


@dataclass(frozen=True)
class MultiProcess:
    failed_processes: list  # process ids
    process_errors: dict  # process id (a string: JSON keys are) -> how it failed
    failure_phase: str  # what the watchdog saw the run doing when it gave up


@dataclass(frozen=True)
class GpuRun:
    """``python -m bench.gpu``: one GPU's own figures beside a measured record."""

    mem_device_peak_bytes: int | None  # jax Device.memory_stats()["peak_bytes_in_use"]; one process per run
    mem_device_limit_bytes: int | None  # memory_stats()["bytes_limit"]: what the allocator may use
    matmul_flops_per_s: float | None  # the bf16 matmul rate bench.gpu measured on this device before the runs
    matmul_source: str | None  # how: shape, dtype, repeats
    mfu_matmul: float | None  # model FLOP/s per device over matmul_flops_per_s: against the measured ceiling
    skipped_reason: str | None  # planned but not run (time budget); such a record has status failed


@dataclass(frozen=True)
class Decode:
    """``bench decode``: one variant at one batch and cache length; the record's batch and seq are these two.
    Communication per decode step is in the ``comm_key`` fields (one step: one new token per sequence)."""

    decode_prompt_tokens: int  # tokens per sequence the prefill wrote into the cache
    decode_new_tokens: int  # decode steps timed (tokens generated per sequence)
    decode_temperature: float  # 0: greedy
    decode_top_p: float
    prefill_s: float  # time to first token: the prefill of B x prompt tokens, s
    prefill_tokens_per_s: float
    decode_step_s_median: float  # per-token latency: one decode step (a token for every sequence), s
    decode_step_s_p90: float
    decode_tokens_per_s: float  # batch / median step
    decode_compile_s: float  # the decode step's compile, s
    kv_cache_bytes: int  # the whole cache, over all devices
    decode_weight_bytes: int  # every parameter as stored, over all devices
    decode_read_bytes_per_step: int  # weights but the unread embedding rows + KV cache (bench.analysis.decode)
    decode_fits_memory: bool  # weights + cache within the device memory checked before compiling
    copy_bandwidth_bytes_per_s: float  # this machine's, measured in the same process (bench.measure.bandwidth)
    copy_bandwidth_source: str
    copy_bandwidth_load_avg_before: float  # 1-minute load average around the bandwidth kernel
    copy_bandwidth_load_avg_after: float
    decode_floor_s: float  # read bytes / bandwidth: the least a step can take, s
    decode_mbu: float  # floor / median step: memory-bandwidth utilisation
    decode_load_avg_before: float  # 1-minute load average around the timed steps
    decode_load_avg_after: float
    decode_mp_allreduce_bytes_per_token: float  # comm_mp_allreduce_bytes / batch
    expected_decode_mp_layer_allreduce_count: int  # bench.analysis.expected_decode_comm, per step
    expected_decode_mp_layer_allreduce_bytes: int
    expected_decode_mp_other_allreduce_count: int
    expected_decode_mp_other_allreduce_bytes: int
    decode_comm_matches_model: bool  # mp all-reduce count and bytes equal the model's
    # TPU (PROJECTION, bench.projection.decode): seconds per decode step per device
    decode_projected_step_s: float  # roofline work + ICI
    decode_projected_work_s: float  # the per-op roofline of the compiled step, collectives excluded
    decode_projected_ici_latency_s: float  # the all-reduces' latency part: hops x per-hop latency
    decode_projected_ici_s: float  # every collective at max(latency, wire bytes / ICI bandwidth)
    decode_projected_hbm_floor_s: float  # read bytes per device / HBM bandwidth per device
    decode_projected_component_s: dict  # work by component label (bench.analysis.components), plus "ici"
    decode_projected_tokens_per_s: float  # batch / projected step


SECTIONS: tuple[type, ...] = (
    GpuRun,
    Head,
    Environment,
    Timing,
    Flops,
    CompilerEstimate,
    Peaks,
    Memory,
    Communication,
    ExpectedCommunication,
    Profile,
    GemmFloor,
    TpuFit,
    Search,
    Validation,
    MultiProcess,
    Decode,
)
REQUIRED_FIELDS = ("schema_version", "kind", "variant", "preset", "scope", "status", "timestamp_utc")


# --- communication keys -----------------------------------------------------------------------------------------

COMM_AXES = ("dp", "mp", "dpmp", "none")  # mesh-axis labels of ("dp", "mp") with "+" dropped
COMM_METRICS = ("count", "tensors", "bytes", "wire_bytes")
COMM_TOTAL_METRICS = ("count", "bytes", "wire_bytes")  # comm_<metric>_total
# Whether the schedule puts compute between an async collective's start and done (bench.analysis.hlo, overlapped)
COMM_OVERLAP_SIDES = ("overlappable", "exposed")
_COMM_DTYPE = re.compile(r"comm_dtype_[a-z0-9]+_bytes")


def comm_key(axis: str | None, kind: CollectiveKind | None, metric: str) -> str:
    """``comm_mp_allreduce_bytes``; axis None: over all axes (``comm_allreduce_bytes``); kind None: over all kinds
    (``comm_mp_wire_bytes``). Metrics: count (executions), tensors (arrays carried), bytes (payload), wire_bytes."""
    if axis is not None and axis not in COMM_AXES:
        raise ValueError(f"axis {axis!r} is not one of {COMM_AXES}")
    if metric not in COMM_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {COMM_METRICS}")
    return "_".join(["comm", *([axis] if axis else []), *([kind.key] if kind else []), metric])


def comm_overlap_key(axis: str, side: str) -> str:
    """``comm_mp_overlappable_wire_bytes``: wire bytes per device per step on an axis, of collectives with compute
    scheduled under them (overlappable) or not (exposed: synchronous, or nothing between start and done)."""
    if axis not in COMM_AXES:
        raise ValueError(f"axis {axis!r} is not one of {COMM_AXES}")
    if side not in COMM_OVERLAP_SIDES:
        raise ValueError(f"side {side!r} is not one of {COMM_OVERLAP_SIDES}")
    return f"comm_{axis}_{side}_wire_bytes"


def comm_total_key(metric: str) -> str:
    """``comm_bytes_total``: over every kind and axis."""
    if metric not in COMM_TOTAL_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {COMM_TOTAL_METRICS}")
    return f"comm_{metric}_total"


def comm_dtype_key(dtype: str) -> str:
    """Payload bytes of one element type, e.g. ``comm_dtype_bf16_bytes``."""
    key = f"comm_dtype_{dtype}_bytes"
    if not _COMM_DTYPE.fullmatch(key):
        raise ValueError(f"element type {dtype!r} makes no record key")
    return key


def _comm_fields() -> dict[str, tuple[type, ...]]:
    fields: dict[str, tuple[type, ...]] = {}
    for axis in (None, *COMM_AXES):
        for kind in CollectiveKind:
            for metric in COMM_METRICS:
                fields[comm_key(axis, kind, metric)] = (float,) if metric == "wire_bytes" else (int,)
        if axis is not None:
            fields[comm_key(axis, None, "wire_bytes")] = (float,)
            fields.update({comm_overlap_key(axis, side): (float,) for side in COMM_OVERLAP_SIDES})
    return fields


# --- the table --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldType:
    types: tuple[type, ...]  # JSON-level Python types; float admits int
    nullable: bool

    def problem(self, name: str, value: Any) -> str | None:
        if value is None:
            return None if self.nullable else f"{name} is null, expected {self.describe()}"
        accepted = (*self.types, int) if float in self.types else self.types
        if isinstance(value, bool) and bool not in accepted or not isinstance(value, accepted):
            return f"{name} is {type(value).__name__} {value!r:.60}, expected {self.describe()}"
        return None

    def describe(self) -> str:
        return " or ".join([t.__name__ for t in self.types] + (["null"] if self.nullable else []))


def _field_type(annotation: Any) -> FieldType:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    return FieldType(tuple(typing.get_origin(a) or a for a in args if a is not type(None)), type(None) in args)


def _declared() -> dict[str, FieldType]:
    fields: dict[str, FieldType] = {}
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            fields[f.name] = _field_type(hints[f.name])
    fields.update({name: FieldType(accepted, nullable=False) for name, accepted in _comm_fields().items()})
    return fields


FIELDS: Mapping[str, FieldType] = _declared()
_DTYPE_BYTES = FieldType((int,), nullable=False)
_CHOICES = {
    "kind": {k.value for k in RecordKind},
    "status": {s.value for s in Status},
    "attention_kernel": {k.value for k in AttentionKernel},
    "layout": {m.value for m in Layout},
}


def field_type(name: str) -> FieldType | None:
    """The declared type of a key, patterns included; None where undeclared."""
    return FIELDS.get(name) or (_DTYPE_BYTES if _COMM_DTYPE.fullmatch(name) else None)


def validate(record: Mapping[str, Any]) -> list[str]:
    """Every way ``record`` departs from the schema, one sentence each; empty when it conforms."""
    problems = []
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        problems.append(f"record lacks required fields {missing}")
    if "schema_version" in record and record["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {record['schema_version']!r}, expected {SCHEMA_VERSION}")
    for name, value in record.items():
        declared = field_type(name)
        if declared is None:
            problems.append(f"{name} is not a declared field")
        elif problem := declared.problem(name, value):
            problems.append(problem)
        elif name in _CHOICES and value not in _CHOICES[name]:
            problems.append(f"{name} is {value!r}, expected one of {sorted(_CHOICES[name])}")
    return problems


def variant_fields(variant: Any) -> dict[str, Any]:
    """The variant's name, its four axes, its attention kernel and its layout, as every record spells them."""
    return {
        "variant": variant.name,
        "residual": variant.residual.value,
        "d_head": variant.head.d_head,
        "strategy": variant.strategy.value,
        "remat": variant.remat.value,
        "attention_kernel": variant.attention_kernel.value,
        "layout": variant.layout.value,
    }


# --- version 1 -> 2 ---------------------------------------------------------------------------------------------

# FLOP/s fields that version 1 named without their unit.
_V1_RATES = {name: f"{name}_per_s" for name in ("flops_6n", "model_flops", "hardware_flops", "xla_flops")}
# Version 1 sweep placeholders named their environment; these were its JAX pins (requirements/{current,xmap}.txt).
_V1_ENVIRONMENT_JAX = {"current": "0.10.2", "xmap": "0.4.30"}
_V1_COMBINED = "XLA combined "  # the one kind of comm_mismatch sentence that was a note, not a difference


def upgrade(record: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 record as version 2 (a version-2 record is returned as a copy, with ``grad_accum`` 1 and
    ``grad_accum_dtype`` float32 where it predates those fields: no step accumulated gradients before they existed,
    and the first accumulation summed in f32; and ``attention_kernel`` reference: the only kernel any variant ran
    before it)."""
    new = dict(record)
    new.setdefault("grad_accum", 1)
    new.setdefault("grad_accum_dtype", "float32")  # the only sum there was before the field
    new.setdefault("attention_kernel", AttentionKernel.reference.value)
    new.setdefault("layout", Layout.MEGATRON.value)  # the only layout before the field
    if new.get("schema_version") != 1:
        return new
    new["schema_version"] = SCHEMA_VERSION
    new.pop("timed_steps", None)  # the planned count; steps_timed is what ran
    for old, name in _V1_RATES.items():
        if old in new:
            new[name] = new.pop(old)
    if "comm_mismatch" in new:
        sentences = new.pop("comm_mismatch")
        new["comm_notes"] = [s for s in sentences if s.startswith(_V1_COMBINED)]
        new["comm_differences"] = [s for s in sentences if not s.startswith(_V1_COMBINED)]
        new["comm_matches_model"] = not new["comm_differences"]
    placeholder = "environment" in new or (new.get("status") == Status.FAILED.value and "python" not in new)
    if "environment" in new:
        new["jax"] = _V1_ENVIRONMENT_JAX.get(new.pop("environment"))
    if new.get("backend") == RecordKind.TPU_AOT.value:
        new["kind"], new["backend"] = RecordKind.TPU_AOT.value, "tpu"
    elif placeholder:
        new["kind"] = RecordKind.FAILED_PLACEHOLDER.value
    else:
        new["kind"] = RecordKind.MEASURED.value
    return new
