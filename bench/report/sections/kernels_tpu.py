"""PROJECTION: each attention kernel on TPU against the reference kernel, from the same TPU ahead-of-time compiles
as section 4 (a variant's ``+kernel`` twin, model.config), and the kernels the TPU compiler refused.

Projections, not measurements (bench/projection/throughput.py). The headline's ranking holds the reference kernel
only (sections/projection.ranked); a kernel is only ever set against its reference twin here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.hardware.table import GiB, PeakBasis
from bench.projection import throughput as projection
from bench.report.analyse import Analysis
from bench.report.format import fmt, fmt_ratio, markdown_table, number, span
from bench.report.stats import axis_values
from kernels.choice import BLOCK_LOOP_KERNELS, AttentionKernel

REFERENCE = "reference"


def kernel_of(variant: str) -> str:
    """The attention kernel a variant name carries: its ``+kernel`` suffix, the reference without one."""
    return (axis_values(variant, "") or {}).get("kernel", REFERENCE)


def _same_compile(p: projection.Projection) -> tuple[str, str, str, str, int]:
    """What a kernel and its reference twin share: the variant without its kernel, JAX, topology, preset and
    accumulation."""
    return p.variant.partition("+")[0], p.jax, p.topology, p.preset, p.grad_accum


def kernel_pairs(
    projections: Sequence[projection.Projection],
) -> list[tuple[projection.Projection, projection.Projection | None]]:
    """(kernel, its reference twin or None) for every non-reference projection on the spec basis, by kernel, then
    topology and variant."""
    spec = [p for p in projections if p.basis is PeakBasis.SPEC]
    references = {_same_compile(p): p for p in spec if kernel_of(p.variant) == REFERENCE}
    kernels = [p for p in spec if kernel_of(p.variant) != REFERENCE]
    kernels.sort(key=lambda p: (kernel_of(p.variant), p.topology, p.variant, p.jax))
    return [(p, references.get(_same_compile(p))) for p in kernels]


def _band(p: projection.Projection) -> str:
    return span(p.tokens_per_s_serial, p.tokens_per_s_overlap)


def loops_priced_once(p: projection.Projection) -> bool:
    """Whether the projection's kernel loops over blocks and its estimate priced each loop once: a compile whose
    cost-analysis compiles kept the loops (a record from before they were written out, kernels.choice)."""
    return _kernel_loops(kernel_of(p.variant)) and not p.attention_blocks_unrolled


def _kernel_loops(kernel: str) -> bool:
    return AttentionKernel.parse(kernel) in BLOCK_LOOP_KERNELS


NOT_COMPARABLE = "not comparable: block loops priced once"
NOT_COMPARABLE_MARK = " (NOT COMPARABLE: block loops priced once; see the kernels on TPU)"


def _xla_flops(aot: Sequence[Mapping[str, Any]]) -> dict[tuple, float]:
    """The compiler's FLOPs per step of each compile, by what a projection names it by."""
    return {
        (r["variant"], r.get("jax"), r.get("topology"), r.get("preset"), r.get("grad_accum", 1)): r[
            "xla_flops_per_step_total"
        ]
        for r in aot
        if r.get("xla_flops_per_step_total")
    }


def _key(p: projection.Projection) -> tuple:
    return p.variant, p.jax, p.topology, p.preset, p.grad_accum


def _cross_check(aot: Sequence[Mapping[str, Any]], p: projection.Projection, ref: projection.Projection | None) -> str:
    """The kernel over its reference twin under the cross-check model (the compiler's estimate, whose compiles write
    a kernel's block loops out), full-overlap bound: the comparison the headline cannot make for a looping kernel."""
    records = {(r["variant"], r.get("jax"), r.get("topology"), r.get("preset"), r.get("grad_accum", 1)): r for r in aot}
    mine, theirs = records.get(_key(p)), records.get(_key(ref)) if ref else None
    if mine is None or theirs is None:
        return "n/a"
    try:
        a, b = (projection.project(r, model=projection.CROSS_CHECK) for r in (mine, theirs))
    except projection.ProjectionError:
        return "n/a"
    return NOT_COMPARABLE if loops_priced_once(a) else fmt_ratio(a.tokens_per_s_overlap / b.tokens_per_s_overlap)


def _flops_cell(flops: Mapping[tuple, float], p: projection.Projection | None) -> str:
    found = flops.get((p.variant, p.jax, p.topology, p.preset, p.grad_accum)) if p else None
    return f"{found:.3e}" if found else "n/a"


def kernel_table(projections: Sequence[projection.Projection], aot: Sequence[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """One row per kernel compile: both projected bounds, and each over the reference twin's same bound (not for a
    kernel whose block loops the estimate priced once: ``loops_priced_once``), and the compiler's FLOPs of both (from
    the compile records ``aot``)."""
    flops = _xla_flops(aot)
    rows = []
    for p, ref in kernel_pairs(projections):
        once = loops_priced_once(p)
        rows.append(
            {
                "kernel": kernel_of(p.variant),
                "topology": p.topology or p.accelerator,
                "variant": p.variant,
                "jax": p.jax,
                "preset": p.preset,
                "accumulation": str(p.grad_accum),
                "model": p.model.value,
                "projected tokens/s, no overlap to full overlap": _band(p),
                "reference's projected tokens/s": _band(ref) if ref else "no reference compile",
                "ratio to reference, no overlap": NOT_COMPARABLE if once else fmt_ratio(_ratio(p, ref, serial=True)),
                "ratio to reference, full overlap": NOT_COMPARABLE if once else fmt_ratio(_ratio(p, ref, serial=False)),
                f"cross-check ({projection.CROSS_CHECK.value}), full overlap": _cross_check(aot, p, ref),
                "compiler's FLOPs per step (reference)": f"{_flops_cell(flops, p)} ({_flops_cell(flops, ref)})",
                "peak HBM per device GiB (reference)": f"{fmt(number(p.mem_peak_bytes_per_device) / GiB)} "
                f"({fmt(number(ref.mem_peak_bytes_per_device) / GiB) if ref else 'n/a'})",
                "block loops": _block_loops(p),
            }
        )
    return pd.DataFrame(rows)


def _block_loops(p: projection.Projection) -> str:
    if not _kernel_loops(kernel_of(p.variant)):
        return "none"
    return "priced once" if loops_priced_once(p) else "every block pair priced"


def _ratio(p: projection.Projection, ref: projection.Projection | None, *, serial: bool) -> float:
    if ref is None:
        return float("nan")
    if serial:
        return p.tokens_per_s_serial / ref.tokens_per_s_serial
    return p.tokens_per_s_overlap / ref.tokens_per_s_overlap


def refusals(aot: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last compile the TPU compiler refused (``refused_by_compiler``) of each variant, JAX, topology and
    preset."""
    latest: dict[tuple, Mapping[str, Any]] = {}
    for r in aot:
        if r.get("refused_by_compiler"):
            latest[r["variant"], r.get("jax"), r.get("topology"), r.get("preset")] = r
    return list(latest.values())


def refusal_table(aot: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [
        {
            "kernel": kernel_of(r["variant"]),
            "topology": r.get("topology"),
            "device": r.get("device_kind"),
            "variant": r["variant"],
            "jax": r.get("jax"),
            "libtpu": r.get("libtpu") or "n/a",
            "preset": r.get("preset"),
            "the compiler's words": r.get("compiler_refusal"),
        }
        for r in refusals(aot)
    ]
    return pd.DataFrame(rows)


def section_kernels_tpu(a: Analysis) -> list[str]:
    """Empty unless the tpu-aot records hold a non-reference kernel (projected or refused)."""
    table, refused = kernel_table(a.projections, a.run.aot), refusal_table(a.run.aot)
    if table.empty and refused.empty:
        return []
    lines = ["### PROJECTION: attention kernels on TPU, against the reference kernel", ""]
    if not table.empty:
        lines += [
            "PROJECTIONS from TPU ahead-of-time compiles, not measurements, made as section 4's are "
            "(bench/projection/throughput.py): each kernel's compile of a variant against the reference kernel's "
            "compile of the same variant, JAX, topology, preset and accumulation (ratio > 1: the kernel is projected "
            "faster). The headline's ranking holds the reference kernel only.",
            "",
            markdown_table(table),
            "",
            "- The component map (section 4's breakdown) splits each kernel's attention into attn_scores and "
            "attn_values: blockwise by the scopes kernels/flash.py names, xla by its attention-times-values einsum "
            "(bench/analysis/components.py).",
        ]
        once = sorted(set(table["kernel"][table["block loops"] == "priced once"]))
        priced = sorted(set(table["kernel"][table["block loops"] == "every block pair priced"]))
        if priced:
            lines.append(
                f"- {', '.join(priced)}: ranked against the reference, a PROJECTION. Their attention runs in loops "
                "over query and key blocks whose trip counts depend on the block index, which the compiler's "
                "estimate would price once per loop; the compiles it is extrapolated from write those loops out, "
                "each query block with exactly its causal key blocks (model.config.ModelConfig"
                ".unroll_attention_blocks, the same computation), so every block pair is priced. The whole-step "
                "compile (memory, collectives) keeps the loops."
            )
        if once:
            lines.append(
                f"- {', '.join(once)}: NOT COMPARABLE with the reference here. These compiles kept the block loops, "
                "whose trip counts depend on the block index, and the compiler's estimate prices a loop body once, "
                "so it counts about one block pair of attention per loop: the compiler's FLOPs column shows the "
                "attention missing (kernels.choice.BLOCK_LOOP_KERNELS gives the measured gap). Their PROJECTION of "
                "tokens/s are shown, not ranked; a compile of this code writes the loops out."
            )
        if (table["kernel"] == "pallas").any():
            lines.append(
                "- pallas: its forward is a Mosaic custom call, whose inside the compiler's cost analysis does not "
                "see. Where its block loops are priced, the call states its work to the compiler "
                "(kernels.flash_pallas.forward_cost: the causal block pairs' matmul FLOPs and exponentials, every "
                "input and output moved once), so its forward is priced from that count, not from the compiled "
                "kernel; its backward is blockwise's, priced op by op."
            )
        lines.append("")
    if not refused.empty:
        lines += [
            "Kernels the TPU compiler refused for the topology: a finding about the target, recorded in a failed "
            "record (refused_by_compiler) with the compiler's own words; nothing to project:",
            "",
            markdown_table(refused),
            "",
        ]
    return lines
