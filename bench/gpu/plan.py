"""What ``python -m bench.gpu`` runs, in which order, at which size, and what it skips: pure, no JAX.

The plan is one table, ordered so that a run cut short by its time budget still has the answers that matter:
GPT-J's configuration (parallel-h256, full remat) on every attention kernel first, then the pairs that each change
one design axis against it, then the rest. With one GPU (dp=1, mp=1) pjit, shard_map and xmap compute the same
program; pjit is the measured driver and shard_map runs once, for its driver overhead. xmap does not exist on the
lent machine's jax (0.11.2; model.compat.has_xmap), so it is not planned.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from kernels.choice import AttentionKernel
from model.config import Dtype, Mesh, ModelConfig, Preset, Variant

DEVICE_FILE = "device.json"  # the probe's facts in the run directory: device, peaks, sizing, budget
GPTJ_CONFIG = "parallel-h256-pjit-full"  # GPT-J-6B's block, remat and heads, on the measured driver
BEST_KERNEL = "best"  # a planned run's kernel, resolved once the kernel runs have been measured
KERNELS = (AttentionKernel.reference, AttentionKernel.cudnn, AttentionKernel.xla, AttentionKernel.pallas)
# The batch is sized on the plan's hungriest configuration (no remat, the reference kernel materialising the
# [B, H, T, T] scores), so every run is at one batch and each comparison differs in one axis only.
SIZING_VARIANT = "parallel-h256-pjit-none"
MEMORY_FRACTION = 0.9  # of the allocator's bytes_limit that the sized step's compiled peak may take


@dataclass(frozen=True)
class PlannedRun:
    variant: str  # a variant name; "+best" for the kernel that measured fastest on GPT-J's configuration
    why: str
    profile: bool = False  # capture an XProf trace and break it down by block component


def _kernel_runs() -> list[PlannedRun]:
    names = [Variant.parse(GPTJ_CONFIG).replace(attention_kernel=k).name for k in KERNELS]
    return [PlannedRun(name, "GPT-J's configuration, one attention kernel each") for name in names]


PLAN: tuple[PlannedRun, ...] = (
    *_kernel_runs(),
    PlannedRun(f"{GPTJ_CONFIG}+{BEST_KERNEL}", "the XProf trace of GPT-J's configuration", profile=True),
    PlannedRun("parallel-h256-pjit-none", "remat: none against full"),
    PlannedRun("parallel-h256-pjit-dots", "remat: the dots_with_no_batch_dims_saveable policy"),
    PlannedRun("serial-h256-pjit-full", "residual: serial against parallel"),
    PlannedRun("parallel-h128-pjit-full", "heads: 128 against 256 wide"),
    PlannedRun("parallel-h256-shard_map-full", "the shard_map driver's overhead against pjit (same program at mp=1)"),
    PlannedRun("parallel-h256-pjit-attn", "remat: save only the attention output"),
    PlannedRun("serial-h256-pjit-none", "residual at no remat"),
    PlannedRun("parallel-h128-pjit-none", "heads at no remat"),
    PlannedRun("serial-h128-pjit-full", "both axes changed"),
)
XMAP_NOTE = "xmap: not run; it was removed from JAX after 0.4.30 (model.compat.has_xmap), and the GPU runs a newer one"


@dataclass(frozen=True)
class Sizing:
    """The model and timing of one mode (the GPU, or the CPU dry run); the batch is found at run time."""

    name: str
    n_layers: int
    d_model: int
    d_ff: int
    vocab: int
    seq: int
    warmup: int
    steps: int
    matmul_n: int  # the side of the timed square bf16 matmul


# GPT-J-6B's block (Mesh Transformer JAX configs/6B_roto_256.json), 4 layers so that a compile and a few steps fit
# the budget; the whole vocabulary so the LM head is GPT-J's.
GPU = Sizing("gpu", n_layers=4, d_model=4096, d_ff=16384, vocab=50400, seq=2048, warmup=2, steps=5, matmul_n=8192)
DRY_RUN = Sizing("gpu-dry-run", n_layers=2, d_model=256, d_ff=1024, vocab=256, seq=32, warmup=1, steps=2, matmul_n=256)
DRY_RUN_BATCH = 2


def preset_for(sizing: Sizing, batch: int) -> Preset:
    """bf16 compute with f32 master weights (the parameters are f32 and cast per use, model.gptj), one device;
    layers unrolled so that XLA's FLOP count covers every layer from the one compile."""
    model = ModelConfig(
        n_layers=sizing.n_layers,
        d_model=sizing.d_model,
        d_ff=sizing.d_ff,
        vocab=sizing.vocab,
        context=sizing.seq,
        compute_dtype=Dtype.BFLOAT16,
        param_dtype=Dtype.FLOAT32,
        unroll_layers=True,
    )
    return Preset(sizing.name, model, batch=batch, seq=sizing.seq, mesh=Mesh(1, 1))


def resolve(run: PlannedRun, best: AttentionKernel | None) -> str | None:
    """The run's variant name with ``+best`` replaced; None where no kernel run succeeded."""
    if not run.variant.endswith(f"+{BEST_KERNEL}"):
        return run.variant
    if best is None:
        return None
    return Variant.parse(run.variant.partition("+")[0]).replace(attention_kernel=best).name


def best_kernel(tokens_per_s: dict[str, float]) -> AttentionKernel | None:
    """The kernel of the fastest GPT-J-configuration run among ``{variant name: tokens/s}`` of ok runs."""
    base = Variant.parse(GPTJ_CONFIG)
    rates = {
        Variant.parse(name).attention_kernel: rate
        for name, rate in tokens_per_s.items()
        if Variant.parse(name).replace(attention_kernel=base.attention_kernel) == base
    }
    return max(rates, key=rates.__getitem__) if rates else None


def skip_reason(elapsed_s: float, budget_s: float, finished_walls_s: list[float]) -> str | None:
    """None: start the next run. Else why not: the longest run so far would not end within the budget (the first
    run always starts; the first runs are the largest compile, so the estimate errs long)."""
    estimate = max(finished_walls_s, default=0.0)
    left = budget_s - elapsed_s
    if left <= 0 or (finished_walls_s and estimate > left):
        return (
            f"time budget: {left:.0f} s of --budget-s {budget_s:.0f} left, and the longest run so far took "
            f"{estimate:.0f} s"
        )
    return None


def batch_to_fill(peak_at_1: int, peak_at_2: int, limit_bytes: int, fraction: float = MEMORY_FRACTION) -> int:
    """The largest batch whose compiled peak, linear in the batch through the two compiles at batch 1 and 2, stays
    within ``fraction`` of ``limit_bytes``; at least 1 (a batch of 1 that does not fit fails as its record)."""
    per_sequence = peak_at_2 - peak_at_1
    fixed = peak_at_1 - per_sequence
    if per_sequence <= 0:
        raise ValueError(f"compiled peak did not grow from batch 1 ({peak_at_1} B) to batch 2 ({peak_at_2} B)")
    return max(1, math.floor((fraction * limit_bytes - fixed) / per_sequence))


# --- the device tool's limits on what comes back from $OUT (/work/.library/device/README.md, Limits) ---------------
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
MAX_FOLDERS_DOWN = 2
_NAME = re.compile(r"[A-Za-z0-9._-]+")


def out_dir_problems(out: Path) -> list[str]:
    """Every way ``out`` breaks the limits on what the device tool brings back, one sentence each."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    problems = [f"{len(files)} files, at most {MAX_FILES} come back"] if len(files) > MAX_FILES else []
    for path in files:
        relative = path.relative_to(out)
        if len(relative.parts) - 1 > MAX_FOLDERS_DOWN:
            problems.append(f"{relative}: more than {MAX_FOLDERS_DOWN} folders down")
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{relative}: {path.stat().st_size} bytes, over {MAX_FILE_BYTES}")
        if not all(_NAME.fullmatch(part) for part in relative.parts):
            problems.append(f"{relative}: a name outside letters, digits, '.', '_' and '-'")
    return problems
