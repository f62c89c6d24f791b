"""Section 4's PROJECTION: each variant at 6B scale from its TPU ahead-of-time compile, with the compiler's
resources, the projected times and bounds, the published runs against the projections of their own configurations,
the hardware numbers used and the variants that do not fit; and the headline's TPU ranking.

Projections, not measurements: every table and sentence here says so (bench/projection/throughput.py computes them).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.hardware import baseline
from bench.hardware import table as hardware
from bench.hardware.table import GiB, PeakBasis
from bench.projection import calibrate
from bench.projection import throughput as projection
from bench.report.analyse import Analysis
from bench.report.format import constant_columns, figure, fmt, fmt_ratio, markdown_table, number, source, span
from bench.report.load import latest_ok, row_key
from bench.report.sections import validation
from bench.report.sections.kernels_tpu import NOT_COMPARABLE_MARK, loops_priced_once
from bench.report.stats import axis_values

FITS = {True: "yes", False: "NO", None: "n/a"}


def ranked(projections: Sequence[projection.Projection], *, too_big: bool = False) -> list[projection.Projection]:
    """One projection per compile (the spec basis), fastest full-overlap bound first, then no-overlap; the GPT-J
    preset's alone where it is present, since the ranking answers GPT-J's question. Variants whose peak memory exceeds
    HBM only with ``too_big``. The reference attention kernel's only: the others are set against it in
    sections/kernels_tpu, never ranked with the variants."""
    spec = [p for p in projections if p.basis is PeakBasis.SPEC and (too_big or p.fits_hbm is not False)]
    spec = [p for p in spec if (axis_values(p.variant, p.jax) or {}).get("kernel", "reference") == "reference"]
    gptj = [p for p in spec if p.preset == projection.GPTJ_PRESET]
    return sorted(gptj or spec, key=lambda p: (p.tokens_per_s_overlap, p.tokens_per_s_serial), reverse=True)


def _at_gptj(calibration: projection.Calibration | None, p: projection.Projection) -> tuple[float, float] | None:
    """``p`` at GPT-J's efficiency, low bound first; None without a calibration or on another peak basis."""
    if calibration is None or p.basis is not calibration.projection.basis:
        return None
    low, high = sorted(calibration.at_efficiency(p))
    return low, high


def calibrations(projections: Sequence[projection.Projection]) -> list[projection.Calibration]:
    """GPT-J's and GPT-Neo's published throughputs against the projections of their own configurations."""
    found = [
        projection.calibrate_gptj(projections, baseline.TOKENS_PER_S, int(baseline.GRAD_ACCUM.value)),
        projection.calibrate_gpt_neo(projections, baseline.GPT_NEO_2_7B_TOKENS_PER_S),
    ]
    return [c for c in found if c is not None]


def gptj_calibration(projections: Sequence[projection.Projection]) -> projection.Calibration | None:
    return projection.calibrate_gptj(projections, baseline.TOKENS_PER_S, int(baseline.GRAD_ACCUM.value))


def _band(low: float, high: float) -> str:
    return span(low, high)


def ranking_table(projections: Sequence[projection.Projection]) -> pd.DataFrame:
    """The headline's TPU ranking: both bounds, what sets them, and each variant at GPT-J's efficiency."""
    calibration = gptj_calibration(projections)
    summary = calibrate.committed_summary()
    rows = []
    for rank, p in enumerate(ranked(projections), start=1):
        at_gptj = _band(*_at_gptj(calibration, p)) if _at_gptj(calibration, p) else "n/a"
        rows.append(
            {
                "TPU rank (projection)": str(rank),
                "variant": p.variant,
                "jax": p.jax,
                "accumulation": str(p.grad_accum),
                "model": p.model.value,
                "projected tokens/s, no overlap to full overlap": _band(p.tokens_per_s_serial, p.tokens_per_s_overlap),
                "band %": fmt(p.band * 100, 3),
                "bound by": p.bound_by,
                "ICI % of step": fmt(p.ici_share * 100, 3),
                "projected tokens/s at GPT-J's efficiency": at_gptj,
                "CALIBRATED tokens/s (leave-one-out interval)": validation.calibrated_cell(p, summary),
            }
        )
    return pd.DataFrame(rows)


def projection_headline(projections: Sequence[projection.Projection], reasons: Sequence[str] = ()) -> list[str]:
    """The headline's lead: the TPU ranking (a projection) and its reasons (``reasons``: the component sentences of
    sections/components, placed after the paired effects they explain)."""
    if not projections:
        return []
    too_big = sorted({p.variant for p in projections if p.fits_hbm is False})
    excluded = f" ({', '.join(too_big)} left out: its peak memory exceeds HBM)" if too_big else ""
    order = ranked(projections)
    if not order:
        return [f"- PROJECTION (not a measurement): no compiled variant fits in HBM{excluded}.", ""]
    best = order[0]
    lines = [
        f"**TPU ranking, a PROJECTION (not a measurement)**: {best.preset} on {best.topology or best.accelerator}, "
        f"gradient accumulation {best.grad_accum}, from TPU ahead-of-time compiles (section 4){excluded}.",
        "",
        *_constant_said(ranking_table(projections)),
        f"- PROJECTION (not a measurement): the highest full-overlap bound among variants that fit in HBM is "
        f"{best.variant} (jax {best.jax}) at {fmt(best.tokens_per_s_overlap)} projected tokens/s (no-overlap bound "
        f"{fmt(best.tokens_per_s_serial)}; {best.model.value}), against GPT-J's measured "
        f"{fmt(baseline.TOKENS_PER_S.value)}. It is bound by {best.bound_by}; ICI is "
        f"{fmt(best.ici_share * 100, 3)}% of its no-overlap step ({fmt(best.ici_exposed_s * 1e3)} ms of it exposed).",
    ]
    ties, second = runner_up(order)
    if ties:
        lines.append(
            f"- PROJECTION: {', '.join(f'{p.variant} (jax {p.jax})' for p in ties)} projects the same "
            f"{fmt(best.tokens_per_s_overlap)} tokens/s as {best.variant}."
        )
    if second is not None:
        lines.append(
            f"- PROJECTION: {best.variant} leads {second.variant} by {lead_pct(best, second)} on the full-overlap "
            f"bound and by {fmt((best.tokens_per_s_serial / second.tokens_per_s_serial - 1) * 100, 3)}% on the "
            f"no-overlap bound."
        )
    lines += projected_effect_lines(projections)
    lines += reasons
    calibration = gptj_calibration(projections)
    if calibration is not None:
        lines.append(f"- {calibration_sentence(calibration)}")
    return lines + [""]


# Design choices whose projected effect the headline states: (position in the variant name, the two values).
PROJECTED_EFFECTS = ((0, "parallel", "serial"), (1, "h256", "h128"))


def runner_up(
    order: Sequence[projection.Projection],
) -> tuple[list[projection.Projection], projection.Projection | None]:
    """The variants tied with the first of ``order`` (projected at its printed figure: xmap priced by its shard_map
    twin's estimate, say), and the first one behind it."""
    best = order[0]
    ties = [p for p in order[1:] if fmt(p.tokens_per_s_overlap) == fmt(best.tokens_per_s_overlap)]
    rest = order[len(ties) + 1 :]
    return ties, (rest[0] if rest else None)


def lead_pct(best: projection.Projection, second: projection.Projection) -> str:
    return f"{fmt((best.tokens_per_s_overlap / second.tokens_per_s_overlap - 1) * 100, 3)}%"


def _constant_said(table: pd.DataFrame) -> list[str]:
    said, shown = constant_columns(table, keep=("TPU rank (projection)", "variant"))
    return [*([said, ""] if said else []), markdown_table(shown), ""]


def paired_ratios(order: Sequence[projection.Projection], position: int, a: str, b: str) -> list[float]:
    """Projected full-overlap tokens/s of ``a`` over ``b``, sorted, over pairs that differ only in that choice."""
    pairs = [(p, q) for p in order for q in order if _differ_only_at(p, q, position, a, b)]
    return sorted(p.tokens_per_s_overlap / q.tokens_per_s_overlap for p, q in pairs)


def projected_effect_lines(projections: Sequence[projection.Projection]) -> list[str]:
    """For each design choice, the paired ratio of projected tokens/s (pairs differ only in that choice and share
    the preset and accumulation) and where the step time goes: work (compiler estimate or roofline) against ICI."""
    order = ranked(projections)
    lines = []
    for position, a, b in PROJECTED_EFFECTS:
        pairs = [(p, q) for p in order for q in order if _differ_only_at(p, q, position, a, b)]
        if not pairs:
            continue
        overlap = paired_ratios(order, position, a, b)
        serial = statistics.median(p.tokens_per_s_serial / q.tokens_per_s_serial for p, q in pairs)
        work_ms = statistics.median((sum(q.work_s) - sum(p.work_s)) * 1e3 for p, q in pairs)
        ici_ms = statistics.median((q.ici_s - p.ici_s) * 1e3 for p, q in pairs)
        lines.append(
            f"- PROJECTION: {a} runs at {fmt_ratio(statistics.median(overlap))} the projected tokens/s of {b} on the "
            f"full-overlap bound (median of {len(pairs)} pair(s), {span(overlap[0], overlap[-1], fmt_ratio)}; "
            f"{fmt_ratio(serial)} on the no-overlap bound). Per step {a} saves "
            f"{fmt(work_ms)} ms of work and {fmt(ici_ms)} ms of ICI (medians; negative: it costs more)."
        )
    return lines


def _differ_only_at(p: projection.Projection, q: projection.Projection, position: int, a: str, b: str) -> bool:
    mine, theirs = p.variant.split("-"), q.variant.split("-")
    if len(mine) != len(theirs) or p.preset != q.preset or p.grad_accum != q.grad_accum:
        return False
    others = all(x == y for i, (x, y) in enumerate(zip(mine, theirs)) if i != position)
    return others and mine[position] == a and theirs[position] == b


def _pct3(value: float) -> str:
    return fmt(value, 3)


def calibration_sentence(c: projection.Calibration) -> str:
    p = c.projection
    notes = f" ({'; '.join(c.notes)})" if c.notes else ""
    return (
        f"{c.name}'s measured {fmt(c.measured.value)} tokens/s is "
        f"{span(c.efficiency_overlap * 100, c.efficiency_serial * 100, _pct3, '%')} of the PROJECTION of its own "
        f"configuration ({p.variant}, jax {p.jax}, {p.preset}, accumulation {p.grad_accum}: "
        f"{_band(p.tokens_per_s_serial, p.tokens_per_s_overlap)} projected tokens/s){notes}."
    )


def does_not_fit_table(aot: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Variants the TPU compiler refused because one step's memory exceeds a device's HBM, with its figures."""
    rows = [
        {
            "variant": r["variant"],
            "jax": r.get("jax"),
            "topology": r.get("topology"),
            "required per device GiB": fmt(r["oom_required_bytes_per_device"] / GiB)
            if r.get("oom_required_bytes_per_device")
            else "n/a",
            "available per device GiB": fmt(r["oom_available_hbm_bytes_per_device"] / GiB)
            if r.get("oom_available_hbm_bytes_per_device")
            else "n/a",
        }
        for r in aot
        if r["status"] == "failed" and r.get("fits_hbm") is False
    ]
    return pd.DataFrame(rows)


def _projected_record(aot: Sequence[Mapping[str, Any]], p: projection.Projection) -> Mapping[str, Any]:
    """The compile record a projection was made from (the latest ok one of its variant, JAX, topology, preset and
    accumulation)."""
    for record in latest_ok(aot, "topology", "preset", "grad_accum"):
        same_compile = (
            str(record.get("topology") or "") == p.topology
            and str(record.get("preset")) == p.preset
            and int(record.get("grad_accum") or 1) == p.grad_accum
        )
        if row_key(record) == (p.variant, p.jax) and same_compile:
            return record
    raise KeyError(p.variant)


def aot_resources_table(a: Analysis) -> pd.DataFrame:
    rows = []
    for p in a.projections:
        if p.basis is not PeakBasis.SPEC:
            continue
        r = _projected_record(a.run.aot, p)
        rows.append(
            {
                "variant": p.variant,
                "jax": p.jax,
                "preset": p.preset,
                "topology": p.topology or p.accelerator,
                "mesh": f"dp={r.get('mesh_dp')},mp={r.get('mesh_mp')}",
                "peak HBM per device GiB": fmt(number(p.mem_peak_bytes_per_device) / GiB),
                "HBM per device GiB": fmt(number(p.hbm_capacity_bytes_per_device) / GiB),
                "fits": FITS[p.fits_hbm],
                "mp wire GiB/step": fmt(number(r.get("comm_mp_wire_bytes_per_device")) / GiB),
                "dp wire GiB/step": fmt(number(r.get("comm_dp_wire_bytes_per_device")) / GiB),
                "dp+mp wire GiB/step": fmt(number(r.get("comm_dpmp_wire_bytes_per_device")) / GiB),
                "all-reduces/step": fmt(r.get("comm_allreduce_count")),
                "HBM bytes accessed per device GB/step": fmt(
                    number(r.get("xla_bytes_accessed_per_step_total")) / p.devices / 1e9
                ),
            }
        )
    return pd.DataFrame(rows)


def projection_table(a: Analysis) -> pd.DataFrame:
    reference = baseline.TOKENS_PER_S.value
    calibration = gptj_calibration(a.projections)
    rows = []
    for p in a.projections:
        ici = dict(p.ici_s_by_axis)
        rows.append(
            {
                "variant": p.variant + (NOT_COMPARABLE_MARK if loops_priced_once(p) else ""),
                "jax": p.jax,
                "peak basis": p.basis.value,
                "accumulation": str(p.grad_accum),
                "model": p.model.value,
                "fits HBM": FITS[p.fits_hbm],
                "peak TFLOP/s per device": fmt(p.peak_flops_per_s_per_device / 1e12),
                "FLOPs counted": p.flops_counted,
                "compute ms": fmt(p.compute_s * 1e3),
                "HBM ms": fmt(p.hbm_s * 1e3) if p.hbm_s is not None else "n/a",
                "compiler estimate ms": fmt(p.xla_optimal_s * 1e3) if p.xla_optimal_s is not None else "n/a",
                "ICI ms (mp + dp + dp+mp)": f"{fmt(p.ici_s * 1e3)} ({' + '.join(fmt(ici[k] * 1e3) for k in ici)})",
                "ICI latency ms": fmt(p.ici_latency_s * 1e3),
                "ICI exposed ms": fmt(p.ici_exposed_s * 1e3),
                "projected tokens/s, perfect overlap": fmt(p.tokens_per_s_overlap),
                "projected tokens/s, no overlap": fmt(p.tokens_per_s_serial),
                "band %": fmt(p.band * 100, 3),
                f"perfect overlap / {fmt(reference)}": fmt_ratio(p.tokens_per_s_overlap / reference),
                f"no overlap / {fmt(reference)}": fmt_ratio(p.tokens_per_s_serial / reference),
                "projected tokens/s at GPT-J's efficiency": _band(*sorted(calibration.at_efficiency(p)))
                if calibration
                else "n/a",
            }
        )
    return pd.DataFrame(rows)


def estimate_source_lines(projections: Sequence[projection.Projection]) -> list[str]:
    """How each record obtained its compiler estimate (bench/tpu_aot writes it: extrapolation, stand-ins)."""
    sources = {
        (p.variant, p.jax, p.grad_accum): p.xla_optimal_source for p in projections if p.xla_optimal_source is not None
    }
    lines = [f"- compiler estimate of {v} (jax {j}, accumulation {g}): {src}" for (v, j, g), src in sources.items()]
    return [*lines, ""] if lines else []


def calibration_table(projections: Sequence[projection.Projection]) -> pd.DataFrame:
    """Each published throughput against the projection of its own configuration: the efficiency it implies."""
    rows = [
        {
            "published run (TPU v3-256)": c.name,
            "measured tokens/s": fmt(c.measured.value),
            "source": c.measured.source,
            "projected configuration": f"{c.projection.variant} (jax {c.projection.jax}), {c.projection.preset}, "
            f"accumulation {c.projection.grad_accum}, {c.projection.model.value}",
            "projected tokens/s, no overlap to full overlap": _band(
                c.projection.tokens_per_s_serial, c.projection.tokens_per_s_overlap
            ),
            "efficiency, measured / projected %": span(c.efficiency_overlap * 100, c.efficiency_serial * 100, _pct3),
            "notes": "; ".join(c.notes) or "none",
        }
        for c in calibrations(projections)
    ]
    return pd.DataFrame(rows)


GPT_NEO_CAVEAT = (
    "GPT-Neo's efficiency is a second, independent check of the method: the same projection applied to another "
    "published run on the same pod. It ran Mesh TensorFlow, not this code, so a gap between its efficiency and "
    "GPT-J's can come from either code base (its layout, collectives, kernels and input pipeline), from GPT-Neo's own "
    "configuration (its accumulation and mesh are not known here) or from the projection; it cannot say which. "
    "Efficiencies that agree support the projection's ranking across model shapes; ones that differ bound how far "
    "an efficiency carries from one program to another, not which variant is faster."
)


def section_calibration(projections: Sequence[projection.Projection]) -> list[str]:
    table = calibration_table(projections)
    if table.empty:
        return [
            f"No {projection.GPTJ_PRESET} or {projection.GPT_NEO_PRESET} compile of the published configurations: "
            "no efficiency to state.",
            "",
        ]
    lines = [
        "Published runs against the PROJECTION of their own configurations (efficiency = measured / projected, "
        "one figure per bound; every other variant is shown at GPT-J's efficiency above, a projection too):",
        "",
        markdown_table(table),
        "",
        *[f"- {calibration_sentence(c)}" for c in calibrations(projections)],
    ]
    if any(c.name.startswith("GPT-Neo") for c in calibrations(projections)):
        lines.append(f"- {GPT_NEO_CAVEAT}")
    else:
        lines.append(
            f"- GPT-Neo 2.7B: no {projection.GPT_NEO_PRESET} compile with a serial-h128 variant here, so its "
            f"{fmt(baseline.GPT_NEO_2_7B_TOKENS_PER_S.value)} tokens/s is set against no projection (compile one with "
            f"`python -m bench tpu-aot --preset={projection.GPT_NEO_PRESET}`)."
        )
    return lines + [""]


def projection_frame(projections: Sequence[projection.Projection]) -> pd.DataFrame:
    """The projection plot's input, one row per compile of the ranked preset (spec basis): both bounds, whether it
    fits, and the band at GPT-J's efficiency (NaN where there is no GPT-J calibration)."""
    calibration = gptj_calibration(projections)
    nan = float("nan")
    return pd.DataFrame(
        [
            {
                "variant": p.variant,
                "jax": p.jax,
                "basis": p.basis.value,
                "tokens_per_s_overlap": p.tokens_per_s_overlap,
                "tokens_per_s_serial": p.tokens_per_s_serial,
                "fits": p.fits_hbm is not False,
                "at_gptj_low": (_at_gptj(calibration, p) or (nan, nan))[0],
                "at_gptj_high": (_at_gptj(calibration, p) or (nan, nan))[1],
            }
            for p in ranked(projections, too_big=True)
        ],
        columns=[
            "variant",
            "jax",
            "basis",
            "tokens_per_s_overlap",
            "tokens_per_s_serial",
            "fits",
            "at_gptj_low",
            "at_gptj_high",
        ],
    )


def hardware_lines(projections: Sequence[projection.Projection]) -> list[str]:
    """Every hardware number a projection used, with the table row's source."""
    lines = []
    for name in dict.fromkeys(p.accelerator for p in projections):
        acc = next(a for a in hardware.ACCELERATORS if a.name == name)
        lines.append(_accelerator_line(acc))
        if PeakBasis.GPTJ in projection.bases_for(acc):
            peak, source = hardware.peak_flops_per_s_per_device(acc.device_kind_patterns[0], PeakBasis.GPTJ)
            lines.append(f"- {acc.name}, GPT-J basis: {fmt(peak / 1e12)} TFLOP/s per device. Source: {source}")
    return lines


def _accelerator_line(acc: hardware.Accelerator) -> str:
    link = acc.ici_link_bandwidth_bytes_per_s
    if link:
        one_axis, two_axes = (projection.ici_bandwidth_per_device(link, dims, acc.devices_per_chip) for dims in (1, 2))
        ici = f"{fmt(one_axis / 1e9)} GB/s per device on one mesh axis and {fmt(two_axes / 1e9)} on dp+mp"
    else:
        ici = "no ICI figure"
    hbm_bw = acc.hbm_bandwidth_bytes_per_s
    return (
        f"- {acc.name}: peak {fmt(acc.peak_bf16_flops_per_chip / 1e12)} TFLOP/s bf16 per chip, "
        f"{acc.devices_per_chip} device(s) per chip, so {fmt(acc.peak_bf16_flops_per_device / 1e12)} per device "
        f"(spec basis); HBM {fmt(number(acc.hbm_bytes_per_chip) / GiB)} GiB per chip = "
        f"{fmt(number(acc.hbm_bytes_per_device) / GiB)} GiB per device; HBM bandwidth "
        f"{fmt(number(hbm_bw) / 1e9)} GB/s per chip = "
        f"{fmt(number(hbm_bw) / acc.devices_per_chip / 1e9)} GB/s per device; ICI "
        f"{fmt(number(link) / 1e9)} GB/s one-way per link, "
        f"{acc.ici_links_per_chip} links per chip, so {ici}; about {fmt(hardware.ICI_HOP_LATENCY_S * 1e6)} us per "
        f"hop ({hardware.ICI_HOP_LATENCY_SOURCE}). Source: {acc.source}"
    )


def section_projection(a: Analysis) -> list[str]:
    lines = ["### PROJECTION: each variant at 6B scale, from TPU ahead-of-time compiles", ""]
    if not a.projections:
        lines.append("No tpu-aot records in this run directory or the --aot directories: nothing to project.")
        lines += [f"- not projected: {u}" for u in a.unprojected]
        return lines + [""]
    lines += [
        f"These are PROJECTIONS from compiler output, not measurements ({source(projection)}). Memory, bytes on "
        "the wire and HBM bytes accessed are the compiler's figures for one step (every micro-batch of a "
        "gradient-accumulation step). A device's work is priced by the TPU compiler's own estimate "
        "(xla_optimal_s_per_step_per_device: per op, the larger of FLOPs over the MXU peak and bytes over HBM "
        "bandwidth, summed; model 'compiler estimate + ICI') where the record has it, else by the same per-op sum over "
        "the whole-step program, loop bodies times their trip counts (hlo_roofline_s_per_step_per_device; model "
        "'whole-step HLO roofline + ICI'), else by the roofline (compute = FLOPs / (devices x peak), HBM = bytes "
        "accessed per device / HBM bandwidth per device; model 'roofline + ICI'). ICI = "
        "wire bytes per device / ICI bandwidth per device on the collective's mesh axis (a bidirectional ring, 2 x "
        "one-way link bandwidth per torus dimension, one dimension for mp and dp and two for dp+mp on GPT-J's mesh, "
        "the chip's links shared by its devices; axes added), plus a latency floor of ring steps x ~1 us per hop where "
        "the record counts its collectives. Full overlap = exposed ICI + max(work, overlappable ICI); no overlap = "
        "work + ICI. ICI is exposed where the compiled schedule puts no compute between an async collective's start "
        "and done (or the collective is synchronous), overlappable otherwise; without that split every collective "
        "counts as overlappable. Tokens/s = tokens per step / step time. Model: "
        f"{projection.SCALING_BOOK}, roofline.md, tpus.md and sharding.md.",
        "",
        "Resources per device and step (compiler figures):",
        "",
        markdown_table(aot_resources_table(a)),
        "",
        f"PROJECTION of tokens/s, next to GPT-J's measured {fmt(baseline.TOKENS_PER_S.value)}:",
        "",
        markdown_table(projection_table(a)),
        "",
        *estimate_source_lines(a.projections),
        *section_calibration(a.projections),
        f"Hardware numbers used ({source(hardware)}):",
        "",
        *hardware_lines(a.projections),
        "",
    ]
    refused = does_not_fit_table(a.run.aot)
    if not refused.empty:
        lines += [
            "Variants that do not fit: the TPU compiler refused them, one step needing more HBM per device than a "
            "v3 core has (its own figures; nothing to project):",
            "",
            markdown_table(refused),
            "",
        ]
    no_hbm = sorted({p.variant for p in a.projections if p.hbm_s is None})
    if no_hbm:
        lines += [f"- no xla_bytes_accessed_per_step_total for {', '.join(no_hbm)}: its bounds leave HBM time out", ""]
    lines += [f"- not projected: {u}" for u in a.unprojected]
    lines += figure(
        a.figures,
        "projection",
        "PROJECTION of tokens/s at 6B scale, ranked, with its overlap band, GPT-J's measured throughput and each "
        "variant at GPT-J's efficiency",
    )
    return lines
