"""The GPT-J article's claims, checked: each claim quoted with its source, the suite's verdict, whether the verdict
rests on a PROJECTION (TPU compile-only) or on a count of the compiled program, and the number.

A claim the records cannot decide says which record would decide it and how to make it; it never gets a number of
its own. Self-contained: ``claims_rows`` is a function of the report's projections and records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.analysis import flops
from bench.hardware import baseline
from bench.hardware.table import PeakBasis
from bench.projection import published
from bench.projection import throughput as projection
from bench.records.schema import comm_key
from bench.report.format import fmt, fmt_ratio, markdown_table, pct
from model.config import get_preset

TITLE = "## The GPT-J article's claims, checked"
# The article (Komatsuzaki 2021). Its sentences as found in stored copies: the article page itself (the local
# attention sentence, cut off there, so quoted up to the cut), the author's thread quoting it (head width, parallel
# block), kingoflolz/mesh-transformer-jax#235 (throughput). The rest is a paraphrase and says so.
ARTICLE_URL = "https://arankomatsuzaki.wordpress.com/2021/06/04/gpt-j/"
THREAD_URL = "the article as quoted in https://www.reddit.com/r/MachineLearning/comments/nvkowg/p_gptj_6b_jaxbased_transformer_lm/"
TOPOLOGY = "v3:8x16"  # the article's TPU v3-256
PRESET = projection.GPTJ_PRESET
# The decision a ratio must clear to count as "significant": the calibration's leave-one-out error would be the
# honest bar; without it, a change under 5% is within what the compiler's estimate and the roofline disagree by.
SIGNIFICANT = 0.05  # stated in the section, so a reader can apply another


@dataclass(frozen=True)
class Claim:
    claim: str  # the article's words, quoted, or "paraphrase: ..."
    source: str
    verdict: str  # holds / does not hold / not decided
    basis: str  # PROJECTION, HLO count, or published figures
    number: str


def _spec(projections: Sequence[projection.Projection], variant: str, preset: str = PRESET):
    found = [
        p
        for p in projections
        if p.variant == variant and p.preset == preset and p.topology == TOPOLOGY and p.basis is PeakBasis.SPEC
    ]
    return found[-1] if found else None


def _verdict(ratio: float, want_above: bool = True) -> str:
    if abs(ratio - 1) < SIGNIFICANT:
        return "not significant"
    return "holds" if (ratio > 1) == want_above else "does not hold"


def head_width(projections: Sequence[projection.Projection]) -> Claim:
    quote = (
        '"The dimension of each attention head is set to 256, which is twice larger than that of GPT-3 of comparable '
        'size. This noticeably improved the throughput with minimal performance degradation."'
    )
    wide, narrow = (
        _spec(projections, "parallel-h256-shard_map-full"),
        _spec(projections, "parallel-h128-shard_map-full"),
    )
    if wide is None or narrow is None:
        return Claim(
            quote, THREAD_URL, "not decided", "PROJECTION", "needs parallel-h256/h128-shard_map-full on v3-256"
        )
    ratio = wide.tokens_per_s_overlap / narrow.tokens_per_s_overlap
    return Claim(
        quote,
        THREAD_URL,
        _verdict(ratio),
        f"PROJECTION ({wide.model.value})",
        f"h256 {fmt(wide.tokens_per_s_overlap)} vs h128 {fmt(narrow.tokens_per_s_overlap)} tokens/s: "
        f"{fmt_ratio(ratio)}",
    )


def _wire_bytes(record: Mapping[str, Any]) -> float:
    return sum(record.get(comm_key(axis, None, "wire_bytes")) or 0.0 for axis in projection.TORUS_DIMS_PER_AXIS)


def parallel_block(records: Sequence[Mapping[str, Any]]) -> Claim:
    quote = '"Placing the attention layer and the feedforward layer in parallel for decreased communication."'
    by_variant = {
        r["variant"]: r
        for r in records
        if r.get("preset") == PRESET and r.get("topology") == TOPOLOGY and r.get("status") == "ok"
    }
    parallel, serial = by_variant.get("parallel-h256-shard_map-full"), by_variant.get("serial-h256-shard_map-full")
    if parallel is None or serial is None:
        return Claim(quote, THREAD_URL, "not decided", "HLO count", "needs parallel- and serial-h256-shard_map-full")
    ratio = _wire_bytes(serial) / _wire_bytes(parallel)
    return Claim(
        quote,
        THREAD_URL,
        _verdict(ratio),
        "HLO count of the v3-256 compile",
        f"wire bytes per device per step: serial {fmt(_wire_bytes(serial) / 1e9)} GB vs parallel "
        f"{fmt(_wire_bytes(parallel) / 1e9)} GB, serial sends {fmt_ratio(ratio)}",
    )


def against_gpt_neo(projections: Sequence[projection.Projection]) -> Claim:
    quote = (
        '"Throughput of the 6B GPT-J for training (151k tokens/s) is faster than the 2.7B GPT-Neo (148k tokens/s) on '
        'the same hardware (TPU v3-256 pod)"; paraphrase: about 125% efficiency'
    )
    source = f"{ARTICLE_URL} (sentence as quoted in kingoflolz/mesh-transformer-jax#235)"
    gptj = _spec(projections, projection.GPTJ_STAND_IN)
    neo = next(
        (
            p
            for p in projections
            if p.preset == projection.GPT_NEO_PRESET
            and p.basis is PeakBasis.SPEC
            and p.variant.startswith(projection.GPT_NEO_VARIANT_PREFIX)
            and p.model is (gptj.model if gptj else None)
        ),
        None,
    )
    if gptj is None or neo is None:
        return Claim(quote, source, "not decided", "PROJECTION", "needs GPT-J and GPT-Neo 2.7B compiles on v3-256")
    gptj_eff = baseline.TOKENS_PER_S.value / gptj.tokens_per_s_overlap
    neo_eff = baseline.GPT_NEO_2_7B_TOKENS_PER_S.value / neo.tokens_per_s_overlap
    ratio = gptj_eff / neo_eff
    return Claim(
        quote,
        source,
        "holds" if ratio > 1 + SIGNIFICANT else "does not hold",
        f"PROJECTION ({gptj.model.value})",
        f"published over projected: GPT-J {pct(gptj_eff, 3)}, GPT-Neo {pct(neo_eff, 3)} ({neo.variant}): "
        f"GPT-J's efficiency {pct(ratio, 3)} of GPT-Neo's",
    )


def theoretical_share() -> Claim:
    share = baseline.utilisation(baseline.hardware_flops_per_s_total(as_benchmark_py=True))
    return Claim(
        f"{baseline.HARDWARE_PFLOPS.wording}; of {baseline.THEORETICAL_PFLOPS.value:g} PFLOP/s theoretical",
        ARTICLE_URL,
        "holds" if abs(share - 0.6) < SIGNIFICANT else "does not hold",
        "published figures, the suite's FLOP count",
        f"(8N + attention) x 151k tokens/s, benchmark.py's attention constants: {pct(share, 3)} of 13.4 PFLOP/s",
    )


# The local attention the claim is priced with: GPT-Neo 2.7B's, the published run that had it (window 256 in
# alternate layers).
LOCAL_RUN = "gpt-neo-2.7b-v3-256.toml"
ATTENTION_DOTS = ("attn_scores", "attn_values")  # bench.analysis.components' labels of the QK^T and PV dots


def local_attention(records: Sequence[Mapping[str, Any]], projections: Sequence[projection.Projection]) -> Claim:
    """Priced from GPT-J's own compile: the QK^T and PV dots' share of its projected work, of which a kernel that
    computes only each local layer's band would skip ``flops.local_attention_saved_frac`` (the reference kernel the
    suite compiles masks the band inside the whole [T, T] and saves nothing)."""
    quote = (
        '"Efficient attention (linear, local/sliding window, etc) was not used for simplicity, as it would not have '
        'si[...]" (the stored page cuts off here; the claim: not significantly improved throughput at this scale)'
    )
    plain = _spec(projections, projection.GPTJ_STAND_IN)
    parts = dict(plain.components_s) if plain else {}
    if plain is None or not all(label in parts for label in ATTENTION_DOTS):
        return Claim(
            quote,
            ARTICLE_URL,
            "not decided",
            "PROJECTION",
            f"no {projection.GPTJ_STAND_IN} compile of {PRESET} on {TOPOLOGY} with a component breakdown among the "
            "records (`nox -s tpu_aot` makes one)",
        )
    model = get_preset(PRESET).model
    local = published.load_run(published.RUNS_DIR / LOCAL_RUN).model
    window, every = local.local_attention_window or 0, local.local_attention_every or 1
    saved_frac = flops.local_attention_saved_frac(model.context, window, model.n_layers, model.n_layers // every)
    dots_s = sum(parts[label] for label in ATTENTION_DOTS)
    faster = projection.with_less_work(plain, saved_frac * dots_s)
    ratio = faster.tokens_per_s_overlap / plain.tokens_per_s_overlap
    return Claim(
        quote,
        ARTICLE_URL,
        "holds" if ratio < 1 + SIGNIFICANT else "does not hold",
        f"PROJECTION ({plain.model.value})",
        f"window {window} in {model.n_layers // every} of {model.n_layers} layers at context {model.context}, with a "
        f"kernel that computes only the band: {pct(saved_frac, 3)} of the attention dots' work skipped, which are "
        f"{pct(dots_s / sum(plain.work_s), 3)} of {projection.GPTJ_STAND_IN}'s work: {fmt(faster.tokens_per_s_overlap)}"
        f" against {fmt(plain.tokens_per_s_overlap)} tokens/s, {fmt_ratio(ratio)} (a lower bound: the [T, T] softmax "
        "sits under 'elementwise' and is not counted)",
    )


def _mesh(r: Mapping[str, Any]) -> str:
    return f"dp={r.get('mesh_dp')},mp={r.get('mesh_mp')}"


def largest_model(records: Sequence[Mapping[str, Any]]) -> Claim:
    """Per parameter layout, the largest model compiled for the v3-256 that fits its HBM (with its PROJECTED
    tokens/s) and the next size up that does not (with what the compiler said it needs). The codebase's own layout is
    Megatron's: the verdict is its largest fit."""
    quote = "paraphrase: the codebase scales to about 20B parameters on TPU v3"
    mine = [r for r in records if r.get("topology") == TOPOLOGY and r.get("n_params")]
    compiled = sorted({int(r["n_params"]) for r in mine})
    sizes = ", ".join(dict.fromkeys(f"{n / 1e9:.1f}B" for n in compiled))
    fits: dict[str, Mapping[str, Any]] = {}
    for r in mine:
        layout = r.get("layout") or "megatron"
        if r.get("status") == "ok" and r.get("fits_hbm"):
            if layout not in fits or r["n_params"] > fits[layout]["n_params"]:
                fits[layout] = r
    refused: dict[str, Mapping[str, Any]] = {}  # the smallest model above the largest fit that does not fit
    for r in mine:
        layout = r.get("layout") or "megatron"
        above = layout not in fits or r["n_params"] > fits[layout]["n_params"]
        if (
            r.get("fits_hbm") is False
            and above
            and (layout not in refused or r["n_params"] < refused[layout]["n_params"])
        ):
            refused[layout] = r
    if not compiled or compiled[-1] < 10e9:
        return Claim(
            quote,
            ARTICLE_URL,
            "not decided",
            "compile-only fit",
            f"only models of {sizes or 'no size'} were compiled for v3-256; deciding needs compiles of "
            "larger GPT-J shapes (more layers and d_model) under each layout, whose fits_hbm bound the size",
        )
    said = []
    for layout in sorted({*fits, *refused}):
        parts = []
        if layout in fits:
            r = fits[layout]
            try:
                tokens = f", PROJECTED {fmt(projection.project(r).tokens_per_s_overlap)} tokens/s"
            except ValueError:  # a compile with no work model priced
                tokens = ""
            parts.append(f"{r['n_params'] / 1e9:.1f}B fits ({_mesh(r)}{tokens})")
        if layout in refused:
            r = refused[layout]
            need = r.get("oom_required_bytes_per_device") or r.get("mem_peak_estimate_bytes_per_device")
            have = r.get("oom_available_hbm_bytes_per_device") or r.get("hbm_bytes_per_device")
            why = f": needs {need / 2**30:.1f} of {have / 2**30:.1f} GiB per core" if need and have else ""
            parts.append(f"{r['n_params'] / 1e9:.1f}B does not ({_mesh(r)}{why})")
        said.append(f"{layout}: {', '.join(parts)}")
    megatron = fits.get("megatron")
    verdict = "not decided" if megatron is None else "holds" if megatron["n_params"] >= 18e9 else "does not hold"
    return Claim(quote, ARTICLE_URL, verdict, "compile-only fit", f"{'; '.join(said)} (compiled: {sizes})")


def claims_rows(projections: Sequence[projection.Projection], records: Sequence[Mapping[str, Any]]) -> list[Claim]:
    return [
        head_width(projections),
        parallel_block(records),
        against_gpt_neo(projections),
        theoretical_share(),
        local_attention(records, projections),
        largest_model(records),
    ]


def section_claims_records(
    projections: Sequence[projection.Projection], records: Sequence[Mapping[str, Any]]
) -> list[str]:
    rows = claims_rows(projections, records)
    frame = pd.DataFrame([vars(c) for c in rows])
    return [
        TITLE,
        "",
        f'Komatsuzaki, "GPT-J-6B: 6B JAX-Based Transformer", 2021 ({ARTICLE_URL}). A PROJECTION is of the TPU '
        f"v3-256 compiles of this report; a change under {pct(SIGNIFICANT, 2)} is called not significant.",
        "",
        markdown_table(frame),
    ]


def section_claims(a: Any) -> list[str]:
    """The report's hook."""
    return section_claims_records(a.projections, [*a.run.aot, *a.run.search, *a.run.resized])
