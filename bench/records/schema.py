"""The record schema: every field a record may carry, with its type, and the upgrade of older records.

A record is one flat JSON object (one line of ``results.jsonl``). Its fields are declared here, section by section,
as frozen dataclasses whose annotations are the JSON types (``X | None``: may be null). A field may be absent (a failed
record has no timings); a field present must be declared and of its type: ``validate`` says where one is not, and
``bench.records.store.append_record`` refuses such a record, so no writer can drift from this module.

Communication keys are generated: ``comm_key(axis, kind, metric)`` is the one spelling of them, for writers
(``bench.analysis.comm.summarize``) and readers alike; ``comm_dtype_key(dtype)`` names the payload bytes by element
type, a pattern rather than a list because the types present depend on the program.

Field names follow one rule, ``NAMING_RULE`` (held by tests/test_schema.py; docs/records.md states it), and
records of older versions are upgraded on read (``upgrade``).
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

SCHEMA_VERSION = 3

NAMING_RULE = (
    "A unit is the last word of its quantity: `_s` (seconds), `_bytes`, `_flops` (a count of floating-point "
    "operations), `_per_s` (a rate: `_flops_per_s`, `_bytes_per_s`, `tokens_per_s`). A statistic comes before the "
    "unit (`step_median_s`); what a figure is counted over comes after it (`_per_step`, `_per_token`).",
    "Where a figure of FLOPs, bytes or seconds could be one device's or the sum over every device, the name ends "
    "with `_per_device` or `_total`. A time measured here is wall-clock and never summed over devices; a time the "
    "compiler, the roofline or a profile gives for one device's program says `_per_device`. Tokens are counted once "
    "over the whole program (`tokens_per_s`), per device only where the name says so.",
    "A dimensionless quotient ends with `_frac` (a part of its whole) or `_ratio` (one quantity over another); the "
    "utilisations keep their names (`mfu`, `hfu`, `decode_mbu`).",
    "A writer spells a section's fields through `section_fields`, never by gluing a prefix onto another name.",
)


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
    step_median_s: float | None
    step_min_s: float
    step_max_s: float
    step_iqr_s: float
    tokens_per_s: float | None  # global tokens, counted once
    tokens_per_s_per_device: float
    loss: float
    bare_loop_step_s: float  # the same step in a plain loop, synchronised once (--overhead); median over the pairs
    harness_overhead_frac: float  # median over interleaved pairs of (harnessed / bare loop - 1)
    harness_overhead_min_frac: float  # the pairs' spread
    harness_overhead_max_frac: float
    harness_overhead_pairs: int


@dataclass(frozen=True)
class Flops:
    n_params: int
    tokens_per_step: int
    flops_6n_per_step_total: float
    model_flops_per_step_total: float
    hardware_flops_per_step_total: float
    xla_flops_per_step_total: float | None  # XLA's cost analysis, summed over devices
    xla_flops_source: str | None  # how xla_flops_per_step_total was counted
    xla_bytes_accessed_per_step_total: float | None  # summed over devices
    flops_6n_per_s_total: float
    model_flops_per_s_total: float
    hardware_flops_per_s_total: float
    xla_flops_per_s_total: float | None
    xla_to_hardware_flops_ratio: float | None
    mfu: float | None  # model FLOP/s over the devices' summed peak; None where the peak is unknown
    mfu_6n: float | None
    hfu: float | None


@dataclass(frozen=True)
class CompilerEstimate:
    """tpu-aot: the TPU compiler's own estimate of the step's time (``optimal_seconds`` of its cost analysis)."""

    xla_optimal_s_per_step_per_device: float | None  # s per step, per device (every device runs the same program)
    xla_optimal_source: str | None  # how it was obtained: extrapolated, substituted, or not reported
    # where the estimate above was substituted (bench.analysis.extrapolate), this compile's own, or None
    xla_optimal_own_compile_s_per_device: float | None
    # per-device costs of the unrolled compiles the whole step is extrapolated from, one dict per compile:
    # layers, microsteps and COST_POINT_KEYS' values
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
    component_s_per_step_per_device: dict | None
    component_source: str | None
    component_sum_to_optimal_ratio: float | None  # the components' sum over xla_optimal_s_per_step_per_device
    # The whole-step compile's own program priced op by op (bench.analysis.components over its optimized HLO, each
    # loop body times its trip count, at the topology's roofline): the work of the scanned program that would run,
    # from one compile and no unrolled ones; what the design-space search ranks by (a projection)
    hlo_roofline_s_per_step_per_device: float | None
    hlo_roofline_component_s_per_step_per_device: dict | None  # that sum by component label


# A cost-analysis key (model.compat.cost_analysis) -> its name in each of xla_cost_points: one unrolled compile's
# figures, per device.
COST_POINT_KEYS = {
    "flops": "xla_flops_per_step_per_device",
    "bytes accessed": "xla_bytes_accessed_per_step_per_device",
    "optimal_seconds": "xla_optimal_s_per_step_per_device",
}


@dataclass(frozen=True)
class Peaks:
    peak_flops_per_s_per_device: float | None  # FLOP/s, the spec basis (or the CPU GEMM calibration)
    peak_source: str | None
    peak_gptj_basis_flops_per_s_per_device: float | None  # FLOP/s on the basis GPT-J's published MFU used
    peak_source_gptj_basis: str | None
    # CPU: the run directory's calibration (bench.records.peakfile), or the cross-run cache with --peak-cache
    peak_measured_utc: str | None  # ISO 8601; None for a cache entry older than this field
    peak_load_avg_before: float | None  # 1-minute load average around the calibration's GEMMs
    peak_load_avg_after: float | None
    peak_file: str | None  # relative to the run directory; None when the peak came from the cross-run cache
    peak_from_cache: bool  # True: read from the cross-run cache (--peak-cache), not measured for this run
    peak_theoretical_flops_per_s_per_device: float | None  # FLOP/s, bench.hardware.cpu; None where lscpu lacks a fact
    peak_theoretical_source: str | None
    # CPU: the peak MFU, HFU and the GEMM floor's share are against, GEMMs timed in the run's own process just
    # before its timed steps (bench.measure.peaks.per_run_peak_fields); absent on accelerators (the table's peak)
    peak_run_flops_per_s_per_device: float | None  # FLOP/s
    peak_run_source: str | None
    peak_run_s: float | None  # seconds the per-run calibration took, its GEMMs' compiles included


@dataclass(frozen=True)
class Memory:
    """The compiler's memory analysis, per device."""

    mem_argument_bytes_per_device: int
    mem_output_bytes_per_device: int
    mem_temp_bytes_per_device: int
    mem_alias_bytes_per_device: int
    mem_generated_code_bytes_per_device: int
    mem_peak_estimate_bytes_per_device: int


@dataclass(frozen=True)
class Communication:
    """The HLO's collectives per step; the per-kind and per-axis counts are ``comm_key``'s."""

    comm_count: int
    comm_bytes_per_device: int
    comm_wire_bytes_per_device: float
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
    expected_mp_layer_allreduce_bytes_per_device: int
    expected_mp_other_allreduce_count: int
    expected_mp_other_allreduce_bytes_per_device: int
    expected_dp_grad_allreduce_bytes_per_device: int
    expected_mp_narrowed_max_bytes_per_device: int  # what carrying the loss's max in the compute dtype saves
    expected_dp_grad_allreduce_compute_dtype_bytes_per_device: int  # the gradient shards in the compute dtype
    expected_dp_gather_count: int  # FSDP: all-gathers over dp the model makes per step (0 in Megatron's layout)
    expected_dp_gather_bytes_per_device: int
    expected_dp_gather_count_min: int  # the fewest a compiler may make: gathers hoisted out of the micro-batch loop
    expected_dp_gather_count_max: int  # the most: the recomputed forward gathering the block's parameters again
    expected_dp_scatter_count: int  # FSDP: reduce-scatters of gradients over dp per step
    expected_dp_scatter_bytes_per_device: int


@dataclass(frozen=True)
class Profile:
    profile_command: str
    profile_trace_path: str
    profile_error: str | None
    profile_tool: str
    profile_op_count: int
    profile_op_time_s_total: float
    profile_collective_time_s_total: float
    profile_collective_frac: float
    profile_compute_frac: float
    profile_top_ops: list
    # The measured breakdown by block component (bench.measure.profile.component_fields): profiled op self times
    # under bench.analysis.components' labels, in seconds per step per device, over profile_steps steps. The op
    # times above are summed over every device and profiled step (_total); each of profile_top_ops carries
    # self_time_s (summed the same way) and op_time_frac (of profile_op_time_s_total).
    profile_component_basis: str
    profile_component_s_per_step_per_device: dict
    profile_component_matched_frac: float  # of the step program's op time, ops found in its optimized HLO
    profile_other_programs_s_per_step_per_device: float  # op time of other programs in the trace (argument copies, ...)
    profile_steps: int
    # The share of the profiled steps' wall time that op events cover (bench.analysis.profile.covered_share;
    # trace_viewer path only): below 1, work ran outside any op's event (XLA CPU's Eigen dots), so per-op and
    # per-component times understate it.
    profile_op_coverage_frac: float | None


@dataclass(frozen=True)
class GemmFloor:
    """Every dot of the compiled step timed alone at its own shapes (``--gemm-floor``, bench.measure.gemm_floor):
    the time no fusion of the rest can beat. CPU: every simulated device's dots in turn on the shared cores."""

    gemm_floor_s_per_step: float
    gemm_floor_flops_per_s_total: float | None
    gemm_floor_component_s_per_step: dict  # by bench.analysis.components' labels
    gemm_floor_dots: int  # dot executions per step
    gemm_floor_distinct_dots: int  # timed once each
    gemm_floor_untimed_matmuls: int  # convolutions (and oneDNN calls that broadcast an operand): not in the floor
    gemm_floor_untimed_flops_per_step_total: int
    gemm_floor_repeats: int
    gemm_floor_peak_frac: float | None  # the floor's FLOP/s over the devices' peak: how fast the GEMMs run
    gemm_floor_step_frac: float  # floor over the measured median step: the share of the step GEMMs must take


@dataclass(frozen=True)
class TpuFit:
    fits_hbm: bool | None
    hbm_bytes_per_device: float | None
    hbm_headroom_bytes_per_device: float
    oom_required_bytes_per_device: float  # what the TPU compiler said the step needs, when it refused it
    oom_available_hbm_bytes_per_device: float
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
    pruned_by_required_bytes_per_device: float | None  # per device, what the compiler said the sibling needs
    pruned_by_available_bytes_per_device: float | None  # per device, what it said is available


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
    projected_to_published_ratio: float | None
    calibrated_tokens_per_s: float | None  # the fit on the committed runs (bench.projection.calibrate), where made


@dataclass(frozen=True)
class MultiProcess:
    failed_processes: list  # process ids
    process_errors: dict  # process id (a string: JSON keys are) -> how it failed
    failure_phase: str  # what the watchdog saw the run doing when it gave up


@dataclass(frozen=True)
class GpuRun:
    """``python -m bench.gpu``: one GPU's own figures beside a measured record."""

    mem_peak_in_use_bytes_per_device: int | None  # jax Device.memory_stats()["peak_bytes_in_use"]; one process per run
    mem_limit_bytes_per_device: int | None  # memory_stats()["bytes_limit"]: what the allocator may use
    matmul_flops_per_s_per_device: (
        float | None
    )  # the bf16 matmul rate bench.gpu measured on this device before the runs
    matmul_source: str | None  # how: shape, dtype, repeats
    mfu_matmul: float | None  # model FLOP/s per device over matmul_flops_per_s_per_device: against the measured ceiling
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
    decode_step_median_s: float  # per-token latency: one decode step (a token for every sequence), s
    decode_step_p90_s: float
    decode_tokens_per_s: float  # batch / median step
    decode_compile_s: float  # the decode step's compile, s
    kv_cache_bytes_total: int  # the whole cache, over all devices
    decode_weight_bytes_total: int  # every parameter as stored, over all devices
    decode_read_bytes_per_step_total: int  # weights but the unread embedding rows + KV cache (bench.analysis.decode)
    decode_fits_memory: bool  # weights + cache within the device memory checked before compiling
    copy_bandwidth_bytes_per_s: float  # this machine's, measured in the same process (bench.measure.bandwidth)
    copy_bandwidth_source: str
    copy_bandwidth_load_avg_before: float  # 1-minute load average around the bandwidth kernel
    copy_bandwidth_load_avg_after: float
    decode_floor_s: float  # read bytes / bandwidth: the least a step can take, s
    decode_mbu: float  # floor / median step: memory-bandwidth utilisation
    decode_load_avg_before: float  # 1-minute load average around the timed steps
    decode_load_avg_after: float
    decode_mp_allreduce_bytes_per_token_per_device: float  # comm_mp_allreduce_bytes_per_device / batch
    expected_decode_mp_layer_allreduce_count: int  # bench.analysis.expected_decode_comm, per step
    expected_decode_mp_layer_allreduce_bytes_per_device: int
    expected_decode_mp_other_allreduce_count: int
    expected_decode_mp_other_allreduce_bytes_per_device: int
    decode_comm_matches_model: bool  # mp all-reduce count and bytes equal the model's
    # TPU (PROJECTION, bench.projection.decode): seconds per decode step per device
    decode_projected_step_s_per_device: float  # roofline work + ICI
    decode_projected_work_s_per_device: float  # the per-op roofline of the compiled step, collectives excluded
    decode_projected_ici_latency_s_per_device: float  # the all-reduces' latency part: hops x per-hop latency
    decode_projected_ici_s_per_device: float  # every collective at max(latency, wire bytes / ICI bandwidth)
    decode_projected_hbm_floor_s_per_device: float  # read bytes per device / HBM bandwidth per device
    decode_projected_component_s_per_device: dict  # work by component label (bench.analysis.components), plus "ici"
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
COMM_TOTAL_METRICS = ("count", "bytes", "wire_bytes")  # comm_count, comm_bytes_per_device, ...: every axis and kind
# Collective payloads are per device per step; counts are executions, the same on every device.
_PER_DEVICE_METRICS = ("bytes", "wire_bytes")
# Whether the schedule puts compute between an async collective's start and done (bench.analysis.hlo, overlapped)
COMM_OVERLAP_SIDES = ("overlappable", "exposed")
_COMM_DTYPE = re.compile(r"comm_dtype_[a-z0-9]+_bytes_per_device")


def comm_key(axis: str | None, kind: CollectiveKind | None, metric: str) -> str:
    """``comm_mp_allreduce_bytes_per_device``; axis None: over all axes (``comm_allreduce_bytes_per_device``); kind
    None: over all kinds (``comm_mp_wire_bytes_per_device``). Metrics: count (executions), tensors (arrays carried),
    bytes (payload), wire_bytes; the byte metrics per device per step."""
    if axis is not None and axis not in COMM_AXES:
        raise ValueError(f"axis {axis!r} is not one of {COMM_AXES}")
    if metric not in COMM_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {COMM_METRICS}")
    unit = [metric, "per_device"] if metric in _PER_DEVICE_METRICS else [metric]
    return "_".join(["comm", *([axis] if axis else []), *([kind.key] if kind else []), *unit])


def comm_overlap_key(axis: str, side: str) -> str:
    """``comm_mp_overlappable_wire_bytes_per_device``: wire bytes per device per step on an axis, of collectives with
    compute scheduled under them (overlappable) or not (exposed: synchronous, or nothing between start and done)."""
    if axis not in COMM_AXES:
        raise ValueError(f"axis {axis!r} is not one of {COMM_AXES}")
    if side not in COMM_OVERLAP_SIDES:
        raise ValueError(f"side {side!r} is not one of {COMM_OVERLAP_SIDES}")
    return f"comm_{axis}_{side}_wire_bytes_per_device"


def comm_total_key(metric: str) -> str:
    """``comm_bytes_per_device``, ``comm_count``: over every kind and axis."""
    if metric not in COMM_TOTAL_METRICS:
        raise ValueError(f"metric {metric!r} is not one of {COMM_TOTAL_METRICS}")
    return comm_key(None, None, metric)


def comm_dtype_key(dtype: str) -> str:
    """Payload bytes of one element type, e.g. ``comm_dtype_bf16_bytes_per_device``."""
    key = f"comm_dtype_{dtype}_bytes_per_device"
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
    """A record of any earlier version as the current one, through each version in turn; a current record is
    returned as a copy. Fields that predate a version-2 record get what every run had before them: ``grad_accum``
    1 and ``grad_accum_dtype`` float32 (no step accumulated gradients before they existed, and the first
    accumulation summed in f32), ``attention_kernel`` reference and ``layout`` megatron (the only ones there were)."""
    new = dict(record)
    new.setdefault("grad_accum", 1)
    new.setdefault("grad_accum_dtype", "float32")  # the only sum there was before the field
    new.setdefault("attention_kernel", AttentionKernel.reference.value)
    new.setdefault("layout", Layout.MEGATRON.value)  # the only layout before the field
    if new.get("schema_version") == 1:
        new = _v1_to_v2(new)
    if new.get("schema_version") == 2:
        new = _v2_to_v3(new)
    return new


def _v1_to_v2(new: dict[str, Any]) -> dict[str, Any]:
    new["schema_version"] = 2
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


# --- version 2 -> 3 ---------------------------------------------------------------------------------------------

# Version 2's names that the naming rule (the module docstring) spells otherwise: version 2 -> version 3. Every
# comm_ key that counted bytes gains _per_device besides (_V2_COMM_BYTES).
V2_NAMES = {
    "step_s_median": "step_median_s",
    "step_s_min": "step_min_s",
    "step_s_max": "step_max_s",
    "step_s_iqr": "step_iqr_s",
    "harness_overhead_frac_min": "harness_overhead_min_frac",
    "harness_overhead_frac_max": "harness_overhead_max_frac",
    "flops_6n_per_step": "flops_6n_per_step_total",
    "model_flops_per_step": "model_flops_per_step_total",
    "hardware_flops_per_step": "hardware_flops_per_step_total",
    "xla_flops_per_step": "xla_flops_per_step_total",
    "xla_bytes_accessed_per_step": "xla_bytes_accessed_per_step_total",
    "flops_6n_per_s": "flops_6n_per_s_total",
    "model_flops_per_s": "model_flops_per_s_total",
    "hardware_flops_per_s": "hardware_flops_per_s_total",
    "xla_flops_per_s": "xla_flops_per_s_total",
    "xla_optimal_seconds_per_step": "xla_optimal_s_per_step_per_device",
    "xla_optimal_seconds_source": "xla_optimal_source",
    "xla_optimal_seconds_own_compile": "xla_optimal_own_compile_s_per_device",
    "component_seconds_per_step": "component_s_per_step_per_device",
    "component_seconds_source": "component_source",
    "component_sum_over_optimal": "component_sum_to_optimal_ratio",
    "hlo_roofline_seconds_per_step": "hlo_roofline_s_per_step_per_device",
    "hlo_roofline_component_seconds_per_step": "hlo_roofline_component_s_per_step_per_device",
    "peak_flops_per_device": "peak_flops_per_s_per_device",
    "peak_flops_per_device_gptj_basis": "peak_gptj_basis_flops_per_s_per_device",
    "peak_theoretical_flops_per_device": "peak_theoretical_flops_per_s_per_device",
    "peak_run_flops_per_device": "peak_run_flops_per_s_per_device",
    "mem_argument_bytes": "mem_argument_bytes_per_device",
    "mem_output_bytes": "mem_output_bytes_per_device",
    "mem_temp_bytes": "mem_temp_bytes_per_device",
    "mem_alias_bytes": "mem_alias_bytes_per_device",
    "mem_generated_code_bytes": "mem_generated_code_bytes_per_device",
    "mem_peak_estimate_bytes": "mem_peak_estimate_bytes_per_device",
    "comm_count_total": "comm_count",
    "comm_bytes_total": "comm_bytes_per_device",
    "comm_wire_bytes_total": "comm_wire_bytes_per_device",
    "expected_mp_layer_allreduce_bytes": "expected_mp_layer_allreduce_bytes_per_device",
    "expected_mp_other_allreduce_bytes": "expected_mp_other_allreduce_bytes_per_device",
    "expected_dp_grad_allreduce_bytes": "expected_dp_grad_allreduce_bytes_per_device",
    "expected_mp_narrowed_max_bytes": "expected_mp_narrowed_max_bytes_per_device",
    "expected_dp_grad_allreduce_bytes_in_compute_dtype": "expected_dp_grad_allreduce_compute_dtype_bytes_per_device",
    "expected_dp_gather_bytes": "expected_dp_gather_bytes_per_device",
    "expected_dp_scatter_bytes": "expected_dp_scatter_bytes_per_device",
    "profile_total_op_time_us": "profile_op_time_s_total",
    "profile_collective_time_us": "profile_collective_time_s_total",
    "profile_collective_share": "profile_collective_frac",
    "profile_compute_share": "profile_compute_frac",
    "profile_component_ms_per_step": "profile_component_s_per_step_per_device",
    "profile_component_matched_share": "profile_component_matched_frac",
    "profile_other_programs_ms_per_step": "profile_other_programs_s_per_step_per_device",
    "profile_op_coverage": "profile_op_coverage_frac",
    "gemm_floor_flops_per_s": "gemm_floor_flops_per_s_total",
    "gemm_floor_component_ms_per_step": "gemm_floor_component_s_per_step",
    "gemm_floor_untimed_flops_per_step": "gemm_floor_untimed_flops_per_step_total",
    "gemm_floor_frac_of_peak": "gemm_floor_peak_frac",
    "gemm_floor_frac_of_step": "gemm_floor_step_frac",
    "hbm_headroom_bytes": "hbm_headroom_bytes_per_device",
    "oom_required_bytes": "oom_required_bytes_per_device",
    "oom_available_hbm_bytes": "oom_available_hbm_bytes_per_device",
    "pruned_by_required_bytes": "pruned_by_required_bytes_per_device",
    "pruned_by_available_bytes": "pruned_by_available_bytes_per_device",
    "projected_over_published": "projected_to_published_ratio",
    "mem_device_peak_bytes": "mem_peak_in_use_bytes_per_device",
    "mem_device_limit_bytes": "mem_limit_bytes_per_device",
    "matmul_flops_per_s": "matmul_flops_per_s_per_device",
    "decode_step_s_median": "decode_step_median_s",
    "decode_step_s_p90": "decode_step_p90_s",
    "kv_cache_bytes": "kv_cache_bytes_total",
    "decode_weight_bytes": "decode_weight_bytes_total",
    "decode_read_bytes_per_step": "decode_read_bytes_per_step_total",
    "decode_mp_allreduce_bytes_per_token": "decode_mp_allreduce_bytes_per_token_per_device",
    "expected_decode_mp_layer_allreduce_bytes": "expected_decode_mp_layer_allreduce_bytes_per_device",
    "expected_decode_mp_other_allreduce_bytes": "expected_decode_mp_other_allreduce_bytes_per_device",
    "decode_projected_step_s": "decode_projected_step_s_per_device",
    "decode_projected_work_s": "decode_projected_work_s_per_device",
    "decode_projected_ici_latency_s": "decode_projected_ici_latency_s_per_device",
    "decode_projected_ici_s": "decode_projected_ici_s_per_device",
    "decode_projected_hbm_floor_s": "decode_projected_hbm_floor_s_per_device",
    "decode_projected_component_s": "decode_projected_component_s_per_device",
}
_V2_COMM_BYTES = re.compile(r"comm_[a-z0-9_]*bytes")
# Version 2 kept these in milliseconds or microseconds (a number, or a dict of numbers): the factor to seconds.
_V2_TO_SECONDS = {
    "profile_op_time_s_total": 1e-6,
    "profile_collective_time_s_total": 1e-6,
    "profile_component_s_per_step_per_device": 1e-3,
    "profile_other_programs_s_per_step_per_device": 1e-3,
    "gemm_floor_component_s_per_step": 1e-3,
}
# xla_cost_points' keys in version 2 (each a per-device figure), by cost-analysis key -> COST_POINT_KEYS' spelling
_V2_COST_POINT = {
    v2: COST_POINT_KEYS[key]
    for key, v2 in (
        ("flops", "xla_flops_per_step"),
        ("bytes accessed", "xla_bytes_accessed_per_step"),
        ("optimal_seconds", "xla_optimal_seconds_per_step"),
    )
}


def _seconds(value: Any, factor: float) -> Any:
    if isinstance(value, dict):
        return {k: _seconds(v, factor) for k, v in value.items()}
    return value * factor if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _v2_to_v3(old: dict[str, Any]) -> dict[str, Any]:
    new: dict[str, Any] = {}
    for name, value in old.items():
        name = V2_NAMES.get(name, name)
        if _V2_COMM_BYTES.fullmatch(name):
            name = f"{name}_per_device"
        new[name] = _seconds(value, _V2_TO_SECONDS[name]) if name in _V2_TO_SECONDS else value
    if isinstance(new.get("xla_cost_points"), list):
        new["xla_cost_points"] = [
            {_V2_COST_POINT.get(k, k): v for k, v in p.items()} if isinstance(p, dict) else p
            for p in new["xla_cost_points"]
        ]
    if isinstance(new.get("profile_top_ops"), list):
        new["profile_top_ops"] = [_v2_top_op(op) if isinstance(op, dict) else op for op in new["profile_top_ops"]]
    new["schema_version"] = 3
    return new


def _v2_top_op(op: dict[str, Any]) -> dict[str, Any]:
    new = {k: v for k, v in op.items() if k not in ("self_time_us", "share")}
    if "self_time_us" in op:
        new["self_time_s"] = _seconds(op["self_time_us"], 1e-6)
    if "share" in op:
        new["op_time_frac"] = op["share"]
    return new


def section_fields(section: type, **values: Any) -> dict[str, Any]:
    """The record fields of one schema section, by their declared names: a writer spells every key of a section
    here, and a name the section does not declare is an error, never a record field built from a prefix."""
    declared = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(values) - declared)
    if unknown:
        raise TypeError(f"{section.__name__} declares no field {unknown}")
    return values
