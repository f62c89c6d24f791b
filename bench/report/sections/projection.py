"""Section 4's PROJECTION: each variant at 6B scale from its TPU ahead-of-time compile, with the compiler's
resources, the roofline times, the hardware numbers used and the variants that do not fit.

Projections, not measurements: every table and sentence here says so (bench/hardware/projection.py computes them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.hardware import baseline, projection
from bench.hardware import table as hardware
from bench.hardware.table import GiB, PeakBasis
from bench.report.analyse import Analysis
from bench.report.format import figure, fmt, fmt_ratio, markdown_table, number
from bench.report.load import latest_ok, row_key

FITS = {True: "yes", False: "NO", None: "n/a"}


def projection_headline(projections: Sequence[projection.Projection]) -> list[str]:
    """The headline's line: the fastest projection among the variants that fit in HBM."""
    if not projections:
        return []
    fitting = [p for p in projections if p.fits_hbm is not False]
    too_big = sorted({p.variant for p in projections if p.fits_hbm is False})
    excluded = f" ({', '.join(too_big)} left out: its peak memory exceeds HBM)" if too_big else ""
    if not fitting:
        return [f"- PROJECTION (not a measurement): no compiled variant fits in HBM{excluded}."]
    best = max(fitting, key=lambda p: p.tokens_per_s_overlap)
    return [
        f"- PROJECTION (not a measurement), 6B scale on {best.topology or best.accelerator}: the highest "
        f"perfect-overlap bound among variants that fit in HBM is {best.variant} (jax {best.jax}) at "
        f"{fmt(best.tokens_per_s_overlap)} projected tokens/s ({best.basis.value} peak; no-overlap bound "
        f"{fmt(best.tokens_per_s_serial)}), against GPT-J's measured {fmt(baseline.TOKENS_PER_S.value)}{excluded}."
    ]


def does_not_fit_table(aot: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Variants the TPU compiler refused because one step's memory exceeds a device's HBM, with its figures."""
    rows = [
        {
            "variant": r["variant"],
            "jax": r.get("jax"),
            "topology": r.get("topology"),
            "required per device GiB": fmt(r["oom_required_bytes"] / GiB) if r.get("oom_required_bytes") else "n/a",
            "available per device GiB": fmt(r["oom_available_hbm_bytes"] / GiB)
            if r.get("oom_available_hbm_bytes")
            else "n/a",
        }
        for r in aot
        if r["status"] == "failed" and r.get("fits_hbm") is False
    ]
    return pd.DataFrame(rows)


def _projected_record(aot: Sequence[Mapping[str, Any]], p: projection.Projection) -> Mapping[str, Any]:
    """The compile record a projection was made from (the latest ok one of its variant, JAX, topology, preset)."""
    for record in latest_ok(aot, "topology", "preset"):
        same_compile = str(record.get("topology") or "") == p.topology and str(record.get("preset")) == p.preset
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
                "mp wire GiB/step": fmt(number(r.get("comm_mp_wire_bytes")) / GiB),
                "dp wire GiB/step": fmt(number(r.get("comm_dp_wire_bytes")) / GiB),
                "dp+mp wire GiB/step": fmt(number(r.get("comm_dpmp_wire_bytes")) / GiB),
                "all-reduces/step": fmt(r.get("comm_allreduce_count")),
                "HBM bytes accessed per device GB/step": fmt(
                    number(r.get("xla_bytes_accessed_per_step")) / p.devices / 1e9
                ),
            }
        )
    return pd.DataFrame(rows)


def projection_table(a: Analysis) -> pd.DataFrame:
    reference = baseline.TOKENS_PER_S.value
    rows = []
    for p in a.projections:
        ici = dict(p.ici_s_by_axis)
        rows.append(
            {
                "variant": p.variant,
                "jax": p.jax,
                "peak basis": p.basis.value,
                "fits HBM": FITS[p.fits_hbm],
                "peak TFLOP/s per device": fmt(p.peak_flops_per_device / 1e12),
                "FLOPs counted": p.flops_counted,
                "compute ms": fmt(p.compute_s * 1e3),
                "ICI ms (mp + dp + dp+mp)": f"{fmt(p.ici_s * 1e3)} ({' + '.join(fmt(ici[k] * 1e3) for k in ici)})",
                "HBM ms": fmt(p.hbm_s * 1e3) if p.hbm_s is not None else "n/a",
                "projected tokens/s, perfect overlap": fmt(p.tokens_per_s_overlap),
                "projected tokens/s, no overlap": fmt(p.tokens_per_s_serial),
                f"perfect overlap / {fmt(reference)}": fmt_ratio(p.tokens_per_s_overlap / reference),
                f"no overlap / {fmt(reference)}": fmt_ratio(p.tokens_per_s_serial / reference),
            }
        )
    return pd.DataFrame(rows)


def projection_frame(projections: Sequence[projection.Projection]) -> pd.DataFrame:
    """The projection plot's input: both bounds of each variant and basis, and whether it fits."""
    return pd.DataFrame(
        [
            {
                "variant": p.variant,
                "jax": p.jax,
                "basis": p.basis.value,
                "tokens_per_s_overlap": p.tokens_per_s_overlap,
                "tokens_per_s_serial": p.tokens_per_s_serial,
                "fits": p.fits_hbm is not False,
            }
            for p in projections
        ],
        columns=["variant", "jax", "basis", "tokens_per_s_overlap", "tokens_per_s_serial", "fits"],
    )


def hardware_lines(projections: Sequence[projection.Projection]) -> list[str]:
    """Every hardware number a projection used, with the table row's source."""
    lines = []
    for name in dict.fromkeys(p.accelerator for p in projections):
        acc = next(a for a in hardware.ACCELERATORS if a.name == name)
        lines.append(_accelerator_line(acc))
        if PeakBasis.GPTJ in projection.bases_for(acc):
            peak, source = hardware.peak_flops_per_device(acc.device_kind_patterns[0], PeakBasis.GPTJ)
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
        f"{acc.ici_links_per_chip} links per chip, so {ici}. Source: {acc.source}"
    )


def section_projection(a: Analysis) -> list[str]:
    lines = ["### PROJECTION: each variant at 6B scale, from TPU ahead-of-time compiles", ""]
    if not a.projections:
        lines.append("No tpu-aot records in this run directory or the --aot directories: nothing to project.")
        lines += [f"- not projected: {u}" for u in a.unprojected]
        return lines + [""]
    lines += [
        "These are PROJECTIONS from compiler output, not measurements. Memory, bytes on the wire and HBM bytes "
        "accessed are the compiler's figures for one step; times are rooflines (bench/projection.py): compute = "
        "FLOPs / (devices x peak); ICI = wire bytes per device / ICI bandwidth per device on the collective's mesh "
        "axis (a bidirectional ring per torus dimension, 2 x one-way link bandwidth, one dimension per mesh axis and "
        "two for dp+mp, the chip's links shared by its devices; axes added); HBM = bytes accessed per device / HBM "
        "bandwidth per device. The perfect-overlap bound is the largest of the three, the no-overlap one their sum; "
        "tokens/s = tokens per step / step time. Model: "
        f"{projection.SCALING_BOOK}, roofline.md and sharding.md.",
        "",
        "Resources per device and step (compiler figures):",
        "",
        markdown_table(aot_resources_table(a)),
        "",
        f"Roofline PROJECTION of tokens/s, next to GPT-J's measured {fmt(baseline.TOKENS_PER_S.value)}:",
        "",
        markdown_table(projection_table(a)),
        "",
        "Hardware numbers used (bench/hardware.py):",
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
        lines += [f"- no xla_bytes_accessed_per_step for {', '.join(no_hbm)}: its bounds leave HBM time out", ""]
    lines += [f"- not projected: {u}" for u in a.unprojected]
    lines += figure(a.figures, "projection", "PROJECTION of tokens/s at 6B scale against GPT-J's measured throughput")
    return lines
