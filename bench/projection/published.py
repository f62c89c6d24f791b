"""Published training runs as data: the run files of reports/published-runs/ (the format is documented in that
directory's README.md, a contract), read strictly, and each published figure converted to tokens/s by its source's
own FLOP convention, step by step.

Pure: tomllib and the suite's pure modules only, no JAX. Every check that can fail on a run file runs here, before
anything compiles; a failure is one ``RunFileError`` (a ConfigError: ``error:`` and exit 2 at the CLI) naming the file,
the key and what is valid.

A run's mesh is dp x fsdp x tp devices (TensorCores on v3, chips on v4, v5e, v5p and v6e: JAX's devices,
bench.hardware.topology). No committed run has data parallelism over replicated parameters and FSDP at once, and the
suite's mesh has two axes, so a run uses one of the suite's two layouts (model.sharding): dp > 1 is the Megatron
layout on mesh dp x mp = tp; fsdp > 1 is the FSDP layout on mesh dp = fsdp, mp = tp.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import tomllib

from bench.analysis import flops
from bench.hardware.topology import TopologyError, parse_topology
from model.config import Activation, ConfigError, Dtype, Remat, Residual

# The committed runs: one TOML file each (README.md there is the format).
RUNS_DIR = Path(__file__).resolve().parents[2] / "reports" / "published-runs"
RUN_SUFFIX = ".toml"


class RunFileError(ConfigError):
    """A run file that cannot be used: the message names the file, the key and what is valid."""


class SourceAttention(str, enum.Enum):
    """The attention kernel a source ran. The projection compiles the suite's reference kernel for every run; a
    record whose source ran another says so (bench.tpu_aot.validate)."""

    REFERENCE = "reference"  # softmax(Q K^T) V written out, as the suite's reference kernel
    FLASH = "flash"  # a fused, blockwise kernel (MaxText's Pallas flash attention)


class Convention(str, enum.Enum):
    """The FLOPs per token a source multiplied its tokens/s by (bench.analysis.flops)."""

    SIX_N = "6N"
    SIX_N_ATTN = "6N+attn"  # plus non-causal attention, 12 L H Q T per token
    SIX_N_ATTN_CAUSAL = "6N+attn_causal"  # half that attention term
    MAXTEXT_CALC = "maxtext_calc"  # MaxText's calculate_tflops_training_per_device


class Figure(str, enum.Enum):
    """What a source published: exactly one per run file."""

    TOKENS_PER_S = "tokens_per_s"
    TOKENS_PER_S_PER_CHIP = "tokens_per_s_per_chip"
    STEP_S = "step_s"
    TFLOPS_PER_CHIP = "tflops_per_chip"
    MFU = "mfu"

    @property
    def needs_convention(self) -> bool:
        return self in (Figure.TFLOPS_PER_CHIP, Figure.MFU)

    @property
    def needs_peak(self) -> bool:
        return self is Figure.MFU


# The names sources give their recomputation, each mapped to the suite's closest policy (model.config.Remat).
SOURCE_REMATS: Mapping[str, Remat] = {
    # MaxText layers: remat_policy 'minimal' is jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims, the
    # suite's dots policy
    "minimal": Remat.DOTS,
    # GPT-Neo's (Mesh TensorFlow) recompute_grad and Levanter's gradient_checkpointing: each block rerun whole
    "recompute_grad": Remat.FULL,
    "gradient_checkpointing": Remat.FULL,
}


def remat_names() -> list[str]:
    return [r.value for r in Remat] + list(SOURCE_REMATS)


def remat_policy(name: str) -> Remat:
    """The suite's policy for a run file's ``remat`` (its own name, or a source's, SOURCE_REMATS)."""
    return SOURCE_REMATS.get(name) or Remat(name)


@dataclass(frozen=True)
class RunModel:
    """``[model]``: the architecture."""

    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    d_head: int
    vocab: int
    seq: int
    residual: Residual
    activation: Activation
    tied_embeddings: bool
    rotary_dim: int  # 0: no rotary embedding
    local_attention_window: int | None = None  # tokens a local layer attends back over
    local_attention_every: int | None = None  # every k-th layer local (2: alternate layers)
    attention_kernel: SourceAttention = SourceAttention.REFERENCE  # what the source ran

    @property
    def attention_width(self) -> int:
        """n_heads x d_head: independent of d_model (MaxText's 256-wide heads)."""
        return self.n_heads * self.d_head

    @property
    def n_params(self) -> int:
        """Weight-matrix parameters (bench.analysis.flops.decoder_param_count)."""
        return flops.decoder_param_count(
            self.n_layers, self.d_model, self.d_ff, self.attention_width, self.vocab, self.tied_embeddings
        )


@dataclass(frozen=True)
class RunTrain:
    """``[train]``: batch, mesh and recomputation."""

    global_batch: int  # sequences per optimizer step
    grad_accum: int  # micro-steps per optimizer step
    fsdp: int
    tp: int
    remat: str  # as the source names it; remat_policy() maps it
    compute_dtype: Dtype
    dp: int = 1

    @property
    def devices(self) -> int:
        return self.dp * self.fsdp * self.tp

    @property
    def remat_policy(self) -> Remat:
        return remat_policy(self.remat)


@dataclass(frozen=True)
class RunPublished:
    """``[published]``: the one figure, and what it depends on."""

    figure: Figure
    value: float
    convention: Convention | None = None
    peak_tflops_per_chip: float | None = None


@dataclass(frozen=True)
class PublishedRun:
    id: str
    source: str  # repository, path and commit, or page
    quote: str  # the figure as the source wrote it
    topology: str  # the suite's grammar ("v3:8x16")
    model: RunModel
    train: RunTrain
    published: RunPublished
    path: Path

    @property
    def chips(self) -> int:
        return parse_topology(self.topology).chips

    @property
    def tokens_per_step(self) -> int:
        return self.train.global_batch * self.model.seq


# --- reading -----------------------------------------------------------------------------------------------------

TOP_KEYS = ("id", "source", "quote", "topology")
SECTIONS = ("model", "train", "published")
PUBLISHED_KEYS = ("convention", "peak_tflops_per_chip")
# TOML's types as a reader names them
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _fail(path: Path, key: str, problem: str) -> RunFileError:
    return RunFileError(f"{path}: {key}: {problem}")


def _typed(path: Path, key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``; an integer is a number, a bool is never an integer."""
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise _fail(path, key, f"expected {_TYPE_NAMES[kind]}, got {value!r}")
    return value


def _choice(path: Path, key: str, value: Any, choice: type[enum.Enum]) -> Any:
    text = _typed(path, key, value, str)
    valid = [m.value for m in choice]
    if text not in valid:
        raise _fail(path, key, f"{text!r} is not one of {', '.join(valid)}")
    return choice(text)


def _keys(path: Path, table: Mapping[str, Any], where: str, required: Sequence[str], optional: Sequence[str]) -> None:
    prefix = f"[{where}] " if where else ""
    missing = [k for k in required if k not in table]
    if missing:
        raise _fail(path, f"{prefix}{missing[0]}", f"missing; {prefix or 'the top level '}needs {', '.join(required)}")
    unknown = [k for k in table if k not in (*required, *optional)]
    if unknown:
        valid = ", ".join((*required, *optional))
        raise _fail(path, f"{prefix}{unknown[0]}", f"unknown key; valid keys: {valid}")


def _section(path: Path, table: Mapping[str, Any], name: str, cls: type, converters: Mapping[str, Callable]) -> Any:
    """A frozen dataclass of one TOML table: every field typed by its converter, optional fields may be absent."""
    required = [f.name for f in fields(cls) if f.default is MISSING and f.name in converters]
    optional = [f.name for f in fields(cls) if f.name in converters and f.name not in required]
    _keys(path, table, name, required, optional)
    return cls(**{key: converters[key](path, f"[{name}] {key}", value) for key, value in table.items()})


def _int(path: Path, key: str, value: Any) -> int:
    number = _typed(path, key, value, int)
    if number < 1:
        raise _fail(path, key, f"must be a positive integer, got {number}")
    return number


def _non_negative_int(path: Path, key: str, value: Any) -> int:
    number = _typed(path, key, value, int)
    if number < 0:
        raise _fail(path, key, f"must be 0 or a positive integer, got {number}")
    return number


def _positive(path: Path, key: str, value: Any) -> float:
    number = _typed(path, key, value, float)
    if not number > 0:
        raise _fail(path, key, f"must be a positive number, got {number}")
    return number


def _remat(path: Path, key: str, value: Any) -> str:
    text = _typed(path, key, value, str)
    if text not in remat_names():
        raise _fail(path, key, f"{text!r} is not a remat policy; valid: {', '.join(remat_names())}")
    return text


MODEL_CONVERTERS: Mapping[str, Callable] = {
    **{k: _int for k in ("n_layers", "d_model", "d_ff", "n_heads", "d_head", "vocab", "seq")},
    "residual": lambda p, k, v: _choice(p, k, v, Residual),
    "activation": lambda p, k, v: _choice(p, k, v, Activation),
    "tied_embeddings": lambda p, k, v: _typed(p, k, v, bool),
    "rotary_dim": _non_negative_int,
    "local_attention_window": _int,
    "local_attention_every": _int,
    "attention_kernel": lambda p, k, v: _choice(p, k, v, SourceAttention),
}
TRAIN_CONVERTERS: Mapping[str, Callable] = {
    **{k: _int for k in ("global_batch", "grad_accum", "dp", "fsdp", "tp")},
    "remat": _remat,
    "compute_dtype": lambda p, k, v: _choice(p, k, v, Dtype),
}


def _published(path: Path, table: Mapping[str, Any]) -> RunPublished:
    figures = [f for f in Figure if f.value in table]
    names = ", ".join(f.value for f in Figure)
    if len(figures) != 1:
        found = ", ".join(f.value for f in figures) or "none"
        raise _fail(path, "[published]", f"needs exactly one figure of {names}; found {found}")
    figure = figures[0]
    _keys(path, table, "published", [figure.value], PUBLISHED_KEYS)
    value = _positive(path, f"[published] {figure.value}", table[figure.value])
    if figure is Figure.MFU and value >= 1:
        raise _fail(path, "[published] mfu", f"a fraction below 1 (0.567 for 56.7%), got {value}")
    convention = table.get("convention")
    if convention is not None:
        convention = _choice(path, "[published] convention", convention, Convention)
    elif figure.needs_convention:
        valid = ", ".join(c.value for c in Convention)
        raise _fail(path, "[published] convention", f"missing; {figure.value} needs the source's FLOP count: {valid}")
    peak = table.get("peak_tflops_per_chip")
    if peak is not None:
        peak = _positive(path, "[published] peak_tflops_per_chip", peak)
    elif figure.needs_peak:
        raise _fail(path, "[published] peak_tflops_per_chip", "missing; an mfu needs the peak it was taken against")
    return RunPublished(figure, value, convention, peak)


def _check_mesh(path: Path, run: PublishedRun) -> None:
    train, model = run.train, run.model
    if train.dp > 1 and train.fsdp > 1:
        raise _fail(
            path,
            "[train] dp, fsdp",
            f"dp={train.dp} and fsdp={train.fsdp}: the suite's mesh has two axes, so a run shards its batch over "
            "replicated parameters (dp, the Megatron layout) or over sharded ones (fsdp), with tp beside either; "
            "set one of them to 1",
        )
    try:
        devices = parse_topology(run.topology).devices
    except TopologyError as error:
        raise _fail(path, "topology", str(error)) from None
    if train.devices != devices:
        raise _fail(
            path,
            "[train] dp, fsdp, tp",
            f"dp x fsdp x tp = {train.dp} x {train.fsdp} x {train.tp} = {train.devices} devices, but topology "
            f"{run.topology} has {devices} (TensorCores on v3, chips on v4, v5e, v5p, v6e)",
        )
    if train.global_batch % train.grad_accum:
        raise _fail(
            path,
            "[train] global_batch",
            f"{train.global_batch} sequences do not divide into grad_accum={train.grad_accum} micro-steps",
        )
    micro = train.global_batch // train.grad_accum
    replicas = train.dp * train.fsdp
    if micro % replicas:
        raise _fail(
            path,
            "[train] global_batch",
            f"{micro} sequences per micro-step (global_batch {train.global_batch} / grad_accum {train.grad_accum}) do "
            f"not divide over dp x fsdp = {replicas} replicas",
        )
    for key, size in (("n_heads", model.n_heads), ("d_ff", model.d_ff)):
        if size % train.tp:
            raise _fail(path, f"[model] {key}", f"{size} does not divide over tp={train.tp}")
    if (model.local_attention_window is None) != (model.local_attention_every is None):
        raise _fail(path, "[model] local_attention_window", "give local_attention_every with it, or neither")


def load_run(path: Path | str) -> PublishedRun:
    """One run file, checked (RunFileError naming the file and key otherwise)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except OSError as error:
        raise RunFileError(f"{path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise RunFileError(f"{path}: not TOML: {error}") from None
    _keys(path, table, "", (*TOP_KEYS, *SECTIONS), ())
    for name in SECTIONS:
        if not isinstance(table[name], dict):
            raise _fail(path, name, f"expected a table [{name}], got {table[name]!r}")
    top = {key: _typed(path, key, table[key], str) for key in TOP_KEYS}
    run = PublishedRun(
        **top,
        model=_section(path, table["model"], "model", RunModel, MODEL_CONVERTERS),
        train=_section(path, table["train"], "train", RunTrain, TRAIN_CONVERTERS),
        published=_published(path, table["published"]),
        path=path,
    )
    _check_mesh(path, run)
    return run


def committed_runs(directory: Path = RUNS_DIR) -> list[Path]:
    return sorted(directory.glob(f"*{RUN_SUFFIX}"))


def load_runs(paths: Sequence[Path | str]) -> list[PublishedRun]:
    """Every file, checked before any is used; two runs with one id are refused."""
    runs = [load_run(p) for p in paths]
    seen: dict[str, Path] = {}
    for run in runs:
        if run.id in seen:
            raise _fail(run.path, "id", f"{run.id!r} is also the id of {seen[run.id]}; ids must be unique")
        seen[run.id] = run.path
    return runs


# --- the published figure in tokens/s ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One line of a conversion, for a report to show: what was done, and the number it gave."""

    text: str
    value: float


@dataclass(frozen=True)
class Conversion:
    tokens_per_s: float
    steps: tuple[Step, ...]


def flops_per_token(run: PublishedRun) -> tuple[float, str]:
    """The source's FLOPs per token (its convention, bench.analysis.flops) and how they were counted."""
    m, convention = run.model, run.published.convention
    n = m.n_params
    attn = (m.n_layers, m.n_heads, m.d_head, m.seq)
    if convention is Convention.SIX_N:
        return flops.flops_per_token_6n(n), f"6N, N = {n:,} weight-matrix parameters"
    if convention is Convention.SIX_N_ATTN:
        return flops.flops_per_token_6n_attn(n, *attn), f"6N + 12 L H Q T, N = {n:,}, L H Q T = {_times(attn)}"
    if convention is Convention.SIX_N_ATTN_CAUSAL:
        return flops.flops_per_token_6n_attn_causal(n, *attn), f"6N + 6 L H Q T, N = {n:,}, L H Q T = {_times(attn)}"
    if convention is Convention.MAXTEXT_CALC:
        mlp_matrices = 2  # one activation: MaxText's len(mlp_activations) + 1
        value = flops.flops_per_token_maxtext_calc(
            m.n_layers, m.d_model, m.d_ff, m.n_heads, m.d_head, m.vocab, m.seq, mlp_matrices
        )
        return value, "MaxText calculate_tflops_training_per_device (matmuls x 3, causal attention)"
    raise RunFileError(f"{run.path}: [published] convention: needed for {run.published.figure.value}")


def _times(values: Sequence[int]) -> str:
    return " x ".join(str(v) for v in values)


def published_tokens_per_s(run: PublishedRun) -> Conversion:
    """The published figure as tokens/s, by the source's own convention, each step kept."""
    p, chips = run.published, run.chips
    steps: list[Step] = [Step(f"published {p.figure.value}: {run.quote}", p.value)]
    if p.figure is Figure.TOKENS_PER_S:
        tokens = p.value
    elif p.figure is Figure.TOKENS_PER_S_PER_CHIP:
        tokens = p.value * chips
        steps.append(Step(f"x {chips} chips", tokens))
    elif p.figure is Figure.STEP_S:
        tokens = run.tokens_per_step / p.value
        steps.append(
            Step(
                f"{run.tokens_per_step:,} tokens per step ({run.train.global_batch} x {run.model.seq}) / {p.value} s",
                tokens,
            )
        )
    else:
        per_chip = p.value * 1e12 if p.figure is Figure.TFLOPS_PER_CHIP else None
        if p.figure is Figure.MFU:
            assert p.peak_tflops_per_chip is not None  # load_run requires it
            per_chip = p.value * p.peak_tflops_per_chip * 1e12
            steps.append(Step(f"x peak {p.peak_tflops_per_chip:g} TFLOP/s per chip = FLOP/s per chip", per_chip))
        assert per_chip is not None
        total = per_chip * chips
        steps.append(Step(f"x {chips} chips = FLOP/s", total))
        per_token, how = flops_per_token(run)
        steps.append(Step(f"FLOPs per token ({how})", per_token))
        tokens = total / per_token
        steps.append(Step("FLOP/s / FLOPs per token", tokens))
    steps.append(Step("tokens/s", tokens))
    if not math.isfinite(tokens) or tokens <= 0:
        raise RunFileError(f"{run.path}: [published]: converts to {tokens} tokens/s")
    return Conversion(tokens, tuple(steps))
