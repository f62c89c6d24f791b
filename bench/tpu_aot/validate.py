"""``python -m bench validate``: compile each published run (bench/projection/published.py) for its topology,
compile-only, and set the projection beside the published figure.

Planning is pure (no JAX at module level): ``compile_plan`` maps a run file to the suite's preset, variant and mesh,
and every check that can fail runs before the first compile. ``run_topology`` then compiles one topology's runs in
this process (libtpu's compile-only environment is per topology and set before JAX starts, so the CLI runs one
process per topology) through bench.tpu_aot.compile.compile_record, the same record and compile cache as every
tpu-aot record, and adds what the validation knows (bench.records.schema.Validation).

Every run is priced by every model the record supports (bench.projection.throughput.ProjectionModel): the compiler's
own estimate where libtpu has one, the whole-step HLO roofline, the plain roofline, each plus ICI. libtpu reports a
negative ``optimal_seconds`` for v4, v5e and v5p (README.md, "TPU compile-only"), so the four unrolled compiles of
the compiler's estimate are made on v3 topologies only (``extrapolates``): elsewhere they would cost two to four
compiles of a large model for no number.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hardware.topology import TpuGeneration, parse_topology
from bench.projection.published import PublishedRun, SourceAttention, published_tokens_per_s
from model.config import (
    Activation,
    ConfigError,
    Dtype,
    Head,
    Layout,
    Mesh,
    ModelConfig,
    Preset,
    Strategy,
    Variant,
    validate_run,
)

# The driver every run compiles under: it runs both layouts (model.config.FSDP_STRATEGIES), and it is the search's.
STRATEGY = Strategy.SHARD_MAP
# Where libtpu gives the compiler's own estimate (the module docstring).
ESTIMATE_GENERATIONS = (TpuGeneration.V2, TpuGeneration.V3)
# A vocabulary that does not split over tp is padded to a multiple of this and tp (GPT-Neo's 50,257 to 50,304, as the
# gpt-neo-2.7b preset pads it; GPT-J padded 50,257 to 50,400 itself).
VOCAB_PAD = 128
# The run files have no key for the dtype of the gradient sum across micro-steps: bf16, as GPT-J summed (model.config
# Preset.grad_accum_dtype); only runs with grad_accum > 1 have the sum.
GRAD_ACCUM_DTYPE = Dtype.BFLOAT16

# run-file [model] keys -> the ModelConfig field that expresses each, where the value is not what ModelConfig does
# without it (attention width d_model, GELU, untied embeddings, global attention everywhere).
MODEL_OPTIONS: Mapping[str, str] = {
    "n_heads": "attention_heads",
    "activation": "activation",
    "tied_embeddings": "tied_embeddings",
    "local_attention_window": "local_attention_window",
    "local_attention_every": "local_attention_every",
}


@dataclass(frozen=True)
class CompilePlan:
    """What the suite compiles for one run."""

    run: PublishedRun
    preset: Preset
    variant: Variant
    mesh: Mesh
    notes: tuple[str, ...]  # where the compile differs from what the source ran

    @property
    def extrapolates(self) -> bool:
        return parse_topology(self.run.topology).generation in ESTIMATE_GENERATIONS


def _head(run: PublishedRun) -> Head:
    try:
        return Head.parse(f"h{run.model.d_head}", "head")
    except ConfigError:
        valid = ", ".join(str(h.d_head) for h in Head)
        raise ConfigError(
            f"{run.path}: [model] d_head: {run.model.d_head}; the suite's heads are {valid} wide"
        ) from None


def _model_options(run: PublishedRun) -> dict[str, Any]:
    """ModelConfig fields for what the run needs beyond GPT-J's block; ConfigError where this build lacks one."""
    m = run.model
    wanted: dict[str, Any] = {}
    if m.n_heads * m.d_head != m.d_model:
        wanted["n_heads"] = m.n_heads
    if m.activation is not Activation.GELU:
        wanted["activation"] = m.activation
    if m.tied_embeddings:
        wanted["tied_embeddings"] = True
    if m.local_attention_window is not None:
        wanted["local_attention_window"] = m.local_attention_window
        wanted["local_attention_every"] = m.local_attention_every
    have = {f.name: f for f in dataclasses.fields(ModelConfig)}
    missing = [key for key in wanted if MODEL_OPTIONS[key] not in have]
    if missing:
        raise ConfigError(
            f"{run.path}: [model] {', '.join(missing)}: the model has no option for "
            f"{', '.join(f'{k} = {wanted[k]!r}' for k in missing)} in this build (model/config.py ModelConfig)"
        )
    options = {}
    for key, value in wanted.items():
        field = have[MODEL_OPTIONS[key]]
        current = field.default
        options[field.name] = type(current)(value) if isinstance(current, enum.Enum) else value
    return options


def _vocab(run: PublishedRun) -> tuple[int, tuple[str, ...]]:
    vocab, tp = run.model.vocab, run.train.tp
    if vocab % tp == 0:
        return vocab, ()
    step = math.lcm(VOCAB_PAD, tp)
    padded = -(-vocab // step) * step
    return padded, (f"vocab {vocab} padded to {padded} (a multiple of {step}) so that the LM head splits over tp={tp}",)


def compile_plan(run: PublishedRun) -> CompilePlan:
    """The preset, variant and mesh of a run (the module docstring of bench/projection/published.py has the layout
    rule), after model.config.validate_run."""
    m, t = run.model, run.train
    layout = Layout.FSDP if t.fsdp > 1 else Layout.MEGATRON
    mesh = Mesh(dp=t.fsdp if layout is Layout.FSDP else t.dp, mp=t.tp)
    variant = Variant(m.residual, _head(run), STRATEGY, t.remat_policy, layout=layout)
    vocab, notes = _vocab(run)
    model = ModelConfig(
        n_layers=m.n_layers,
        d_model=m.d_model,
        d_ff=m.d_ff,
        d_head=m.d_head,
        vocab=vocab,
        context=m.seq,
        rotary_dim=m.rotary_dim,
        residual=m.residual,
        remat=t.remat_policy,
        compute_dtype=t.compute_dtype,
        **_model_options(run),
    )
    preset = Preset(
        run.id,
        model,
        batch=t.global_batch // t.grad_accum,
        seq=m.seq,
        mesh=mesh,
        grad_accum=t.grad_accum,
        grad_accum_dtype=GRAD_ACCUM_DTYPE,
    )
    if m.attention_kernel is not SourceAttention.REFERENCE:
        # the suite's kernels do not reproduce the source's (MaxText's Pallas flash attention loops), so the price is
        # the reference kernel's, and the record says so
        notes += (f"the source ran {m.attention_kernel.value} attention; priced here: the reference attention kernel",)
    if t.remat != t.remat_policy.value:
        notes += (f"remat {t.remat!r} (the source's) compiled as the suite's {t.remat_policy.value!r}",)
    try:
        validate_run(preset, variant, mesh, parse_topology(run.topology).devices)
    except ConfigError as error:
        raise ConfigError(f"{run.path}: {error}") from None
    return CompilePlan(run, preset, variant, mesh, notes)


# The checkout: a run file inside it is recorded relative to it, so records read the same from any clone.
_CHECKOUT = Path(__file__).resolve().parents[2]


def _shown_path(path: Path) -> str:
    """``path`` relative to the checkout where it lies inside it, else absolute (a run file written elsewhere)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(_CHECKOUT)) if resolved.is_relative_to(_CHECKOUT) else str(resolved)


def validation_fields(plan: CompilePlan) -> dict[str, Any]:
    """What a validation adds to a tpu-aot record (bench.records.schema.Validation), before the projection."""
    run, conversion = plan.run, published_tokens_per_s(plan.run)
    return {
        "validation_id": run.id,
        "validation_file": _shown_path(run.path),
        "published_source": run.source,
        "published_quote": run.quote,
        "published_figure": run.published.figure.value,
        "published_value": run.published.value,
        "published_convention": run.published.convention.value if run.published.convention else None,
        "published_tokens_per_s": conversion.tokens_per_s,
        "published_conversion": [[step.text, step.value] for step in conversion.steps],
        "remat_source_name": run.train.remat,
        "remat_policy": run.train.remat_policy.value,
        "validation_notes": list(plan.notes),
    }


def projection_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Every model's projected tokens/s (no overlap, full overlap) and the headline: the default model's
    full-overlap bound (bench.projection.throughput.model_of), as the main report's ranking uses it."""
    from bench.projection.throughput import MODEL_FIELDS, ProjectionError, ProjectionModel, model_of, project

    by_model: dict[str, list[float]] = {}
    for model in ProjectionModel:
        if model is not ProjectionModel.ROOFLINE and record.get(MODEL_FIELDS[model]) is None:
            continue
        try:
            p = project(record, model=model)
        except ProjectionError:
            continue
        by_model[model.value] = [p.tokens_per_s_serial, p.tokens_per_s_overlap]
    headline = model_of(record).value
    projected = by_model.get(headline, [None, None])[1]
    published = record["published_tokens_per_s"]
    return {
        "projected_tokens_per_s_by_model": by_model,
        "projected_model": headline,
        "projected_tokens_per_s": projected,
        "projected_to_published_ratio": projected / published if projected else None,
        "calibrated_tokens_per_s": calibrated(record),
    }


def calibrated(record: Mapping[str, Any]) -> float | None:
    """The calibrated tokens/s from the fit on the committed runs (bench.projection.calibrate), where it exists."""
    try:
        from bench.projection.calibrate import calibrated_tokens_per_s
    except ImportError:  # the fit is a separate module; a record made without it says so by a null
        return None
    return calibrated_tokens_per_s(record)


def line(record: Mapping[str, Any]) -> str:
    """``published, projected, ratio`` for one run."""
    projected = record.get("projected_tokens_per_s")
    fits = {True: "fits", False: "DOES NOT FIT", None: "fit unknown"}[record.get("fits_hbm")]
    if projected is None:
        why = record.get("error") or "no projection"
        return f"{record['validation_id']}: published {record['published_tokens_per_s']:,.0f} tokens/s; {why[:160]}"
    return (
        f"{record['validation_id']}: published {record['published_tokens_per_s']:,.0f} tokens/s, PROJECTED "
        f"{projected:,.0f} ({record['projected_model']}), projected / published "
        f"{record['projected_to_published_ratio']:.2f}x, {fits}"
    )


def run_topology(plans: Sequence[CompilePlan], out: Path, cache: Any, resume: bool = True) -> int:
    """Compile one topology's runs; skip a run ``out`` already has a final record of. Returns failures that are not
    findings (bench.tpu_aot.compile.is_finding: a run the compiler says does not fit is one, and is recorded)."""
    from bench.records.schema import Status
    from bench.records.store import append_record, load_records
    from bench.tpu_aot.compile import compile_record, is_finding
    from bench.tpu_aot.env import topology_devices

    topologies = {p.run.topology for p in plans}
    if len(topologies) != 1:
        raise ConfigError(f"one topology per process, got {sorted(topologies)}")
    devices = topology_devices(plans[0].run.topology)
    failures = 0
    for plan in plans:
        done = [r for r in load_records(out).records if r.get("validation_id") == plan.run.id]
        if resume and any(r.get("status") == Status.OK.value or is_finding(r) for r in done):
            print(f"skip {plan.run.id}: already recorded in {out}", file=sys.stderr)
            continue
        start = time.perf_counter()
        record = compile_record(
            plan.preset, plan.variant, plan.mesh, plan.run.topology, devices, cache, plan.extrapolates
        )
        record.update(validation_fields(plan), validate_s=time.perf_counter() - start)
        if record.get("status") == Status.OK.value:
            record.update(projection_fields(record))
        append_record(out, record)
        status = "recorded" if record["status"] == Status.OK.value else f"failed: {record.get('error', '')[:200]}"
        print(f"{plan.run.id}: {status} ({record['validate_s']:.0f} s)", file=sys.stderr)
        failures += record["status"] != Status.OK.value and not is_finding(record)
    return failures
