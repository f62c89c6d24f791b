"""The inference section: decode records (``bench decode``, kind ``decode``) to markdown.

Measured CPU figures first (per-token latency, tokens/s, MBU against this machine's measured bandwidth, all-reduces
against the analytic model), then the TPU PROJECTION (compile-only steps priced by bench.projection.decode), and
the article's claim checked: whether GPT-J's choices (the parallel block, 256-wide heads) decode fastest, and where
the answer flips with batch or slice. Nothing without decode records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.records.schema import RecordKind, Status
from bench.records.store import load_records

DECODE_DIR = "decode"  # RUN_DIR/decode/: the decode records of a run, apart from its training-step records
DECODE_REPORT = "DECODE.md"
GPTJ_CHOICE = ("parallel", 256)  # residual, d_head
MIN_COMPONENT_SHARE = 0.01


def decode_records(directory: Path) -> list[dict[str, Any]]:
    """The decode records of a directory's results.jsonl (a run's are in RUN_DIR/decode); none where it has none."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}  # a rerun (--resume retries failed points) replaces a point
    for r in load_records(directory).records:
        if r.get("kind") == RecordKind.DECODE.value:
            keys = ("variant", "batch", "seq", "preset", "jax", "backend", "topology")
            latest[tuple(r.get(k) for k in keys)] = r
    return list(latest.values())


def write_decode_report(directory: Path) -> Path | None:
    """DIRECTORY/DECODE.md from its decode records (``bench decode`` writes it after each run); None without."""
    records = decode_records(directory)
    lines = section_decode(records)
    if not lines:
        return None
    path = Path(directory) / DECODE_REPORT
    head = ["# gptj-bench: decoding", "", *decode_answer(records), "", record_counts(records), ""]
    path.write_text("\n".join([*head, *lines[2:]]).rstrip() + "\n")
    return path


def _fastest_line(at: Sequence[Mapping[str, Any]], step: str, label: str) -> str:
    """``batch B: fastest V at X ms a step, R ahead of W`` over one (slice, context, batch) point's records."""
    ranked = sorted(at, key=lambda r: r[step])
    best = ranked[0]
    said = f"batch {best['batch']}: **{best['variant']}** at {best[step] * 1e3:.3f} ms a step ({label})"
    if len(ranked) > 1:
        said += f", {_ratio(ranked[1][step], best[step])} ahead of {ranked[1]['variant']}"
    return said


def decode_answer(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The first screen: which variant decodes fastest at the smallest and largest batch of each TPU slice
    (PROJECTION) and of this machine (measured), and how often GPT-J's choices win."""
    lines = []
    tpu, cpu = _ok(records, "tpu"), _ok(records, "cpu")
    step = "decode_projected_step_s_per_device"
    for topology, context in sorted({(r["topology"], r["seq"]) for r in tpu}):
        at = [r for r in tpu if (r["topology"], r["seq"]) == (topology, context)]
        first = at[0]
        where = f"{topology}, dp={first['mesh_dp']},mp={first['mesh_mp']}, {first['preset']}, context {context}"
        batches = sorted({r["batch"] for r in at})
        ends = sorted({batches[0], batches[-1]})
        said = [_fastest_line([r for r in at if r["batch"] == b], step, "PROJECTION") for b in ends]
        lines.append(f"- TPU {where}: " + "; ".join(said))
    smallest = min((r["batch"] for r in cpu), default=None)
    for context in sorted({r["seq"] for r in cpu}):
        at = [r for r in cpu if r["seq"] == context and r["batch"] == smallest]
        best = min(at, key=lambda r: r["decode_step_median_s"])
        lines.append(
            f"- Measured here ({best['preset']} preset, context {context}): "
            f"{_fastest_line(at, 'decode_step_median_s', 'measured')}, MBU {best['decode_mbu']:.0%}"
        )
    return lines + ([f"- {_claim_sentence(tpu)}"] if tpu else [])


def record_counts(records: Sequence[Mapping[str, Any]]) -> str:
    """Records by where they come from, with their failures: true for the file the report is written from."""
    parts = []
    for backend, what in (("cpu", "measured on this machine"), ("tpu", "TPU PROJECTION")):
        mine = [r for r in records if r.get("backend") == backend]
        if mine:
            failed = sum(r.get("status") != Status.OK.value for r in mine)
            parts.append(f"{len(mine)} {what} ({len(mine) - failed} ok, {failed} failed)")
    return f"Records: {len(records)} decode points: {'; '.join(parts)}."


def _ok(records: Sequence[Mapping[str, Any]], backend: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("status") == Status.OK.value and r.get("backend") == backend]


def _ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.2f}x"


def section_decode(records: Sequence[Mapping[str, Any]]) -> list[str]:
    if not records:
        return []
    lines = ["## Inference: prefill and KV-cache decode", ""]
    lines += _cpu(_ok(records, "cpu"))
    lines += _tpu(_ok(records, "tpu"), [r for r in records if r.get("backend") == "tpu"])
    failed = [r for r in records if r.get("status") != Status.OK.value and r.get("backend") == "cpu"]
    if failed:
        lines += ["Failed CPU points: " + "; ".join(f"{r['variant']} B={r['batch']}: {r['error']}" for r in failed), ""]
    return lines


def _cpu(ok: Sequence[Mapping[str, Any]]) -> list[str]:
    if not ok:
        return []
    first = ok[0]
    lines = [
        f"### Measured on CPU ({first['preset']} preset, {first['dtype']}, {first['device_kind']})",
        "",
        f"Each point: a prefill of {first['decode_prompt_tokens']} tokens per sequence, then "
        f"{first['decode_new_tokens']} decode steps, each synchronised; per-token latency is one step. Copy bandwidth "
        f"{first['copy_bandwidth_bytes_per_s'] / 1e9:.2f} GB/s measured in the same process "
        f"({first['copy_bandwidth_source']}; load average {first['copy_bandwidth_load_avg_before']:.2f} -> "
        f"{first['copy_bandwidth_load_avg_after']:.2f}). MBU = (weights + KV cache) bytes per step / that bandwidth "
        f"/ the median step. The machine is shared: timings are noisy, the load average is beside each point.",
        "",
    ]
    for context in sorted({r["seq"] for r in ok}):
        at = [r for r in ok if r["seq"] == context]
        lines += _cpu_winners(at, context)
        lines += [
            "| variant | mesh | batch | prefill (ms) | step median (ms) | p90 (ms) | tokens/s | MBU | mp all-reduces "
            "per step (model) | load |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sorted(at, key=lambda r: (r["batch"], r["decode_step_median_s"])):
            lines.append(
                f"| {r['variant']} | {r['mesh_dp']}x{r['mesh_mp']} | {r['batch']} | {r['prefill_s'] * 1e3:.1f} | "
                f"{r['decode_step_median_s'] * 1e3:.2f} | {r['decode_step_p90_s'] * 1e3:.2f} | "
                f"{r['decode_tokens_per_s']:.0f} | {r['decode_mbu']:.0%} | {r.get('comm_mp_allreduce_tensors', 0)} "
                f"({r['expected_decode_mp_layer_allreduce_count'] + r['expected_decode_mp_other_allreduce_count']}"
                f"{'' if r['decode_comm_matches_model'] else ', differs'}) | {r['decode_load_avg_before']:.1f} |"
            )
        lines.append("")
    return lines


def _cpu_winners(at: Sequence[Mapping[str, Any]], context: int) -> list[str]:
    lines = [f"Context {context}:", ""]
    for batch in sorted({r["batch"] for r in at}):
        ranked = sorted((r for r in at if r["batch"] == batch), key=lambda r: r["decode_step_median_s"])
        if len(ranked) > 1:
            best, second = ranked[0], ranked[1]
            lines.append(
                f"- batch {batch}: **{best['variant']}** decodes fastest, {best['decode_step_median_s'] * 1e3:.2f} ms "
                f"a step, {_ratio(second['decode_step_median_s'], best['decode_step_median_s'])} ahead of "
                f"{second['variant']} (measured)"
            )
    return lines + [""]


def _tpu(ok: Sequence[Mapping[str, Any]], every: Sequence[Mapping[str, Any]]) -> list[str]:
    if not every:
        return []
    lines = ["### TPU decode: PROJECTION from compile-only steps", ""]
    lines += [
        "PROJECTION, nothing timed: each decode step compiled by libtpu for the slice; its optimized HLO priced op by "
        "op at max(FLOPs / peak, bytes / HBM bandwidth) (work), plus each collective at max(ring steps x 1 us per "
        "hop, wire bytes / ICI bandwidth) (ICI), added since each layer waits for its all-reduce. The HBM floor is "
        "weights + KV cache per device over HBM bandwidth.",
        "",
    ]
    for topology, context in sorted({(r["topology"], r["seq"]) for r in every}):
        here = [r for r in ok if (r["topology"], r["seq"]) == (topology, context)]
        lines += _tpu_topology(here, topology)
        refused = [
            r for r in every if (r["topology"], r["seq"]) == (topology, context) and r.get("status") != Status.OK.value
        ]
        for r in refused:
            lines.append(f"- not projected: {r['variant']} batch {r['batch']} context {r['seq']}: {r['error']}")
        lines.append("")
    lines += _claim(ok)
    return lines


def _tpu_topology(ok: Sequence[Mapping[str, Any]], topology: str) -> list[str]:
    if not ok:
        return [f"#### {topology}: no point compiled", ""]
    mesh = f"dp={ok[0]['mesh_dp']},mp={ok[0]['mesh_mp']}"
    lines = [
        f"#### {topology} ({mesh}, {ok[0]['preset']}, context {ok[0]['seq']}) — PROJECTION",
        "",
        "| batch | variant | step (ms) | work (ms) | ICI (ms) | of which latency (ms) | HBM floor (ms) | tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for batch in sorted({r["batch"] for r in ok}):
        for r in sorted((r for r in ok if r["batch"] == batch), key=lambda r: r["decode_projected_step_s_per_device"]):
            parts = ("step", "work", "ici", "ici_latency", "hbm_floor")
            ms = " | ".join(f"{r[f'decode_projected_{part}_s_per_device'] * 1e3:.3f}" for part in parts)
            lines.append(f"| {batch} | {r['variant']} | {ms} | {r['decode_projected_tokens_per_s']:.0f} |")
    lines.append("")
    batches = sorted({r["batch"] for r in ok})
    for batch in batches:
        lines += _lead(
            sorted((r for r in ok if r["batch"] == batch), key=lambda r: r["decode_projected_step_s_per_device"])
        )
    lines.append("")
    for batch in sorted({batches[0], batches[-1]}):
        lines += _components([r for r in ok if r["batch"] == batch], topology, batch)
    return lines + [""]


def _components(at: Sequence[Mapping[str, Any]], topology: str, batch: int) -> list[str]:
    """Projected microseconds per step by component (bench.analysis.components' labels, plus ICI), a column per
    variant: where the designs differ."""
    at = sorted(at, key=lambda r: r["decode_projected_step_s_per_device"])
    labels = sorted({k for r in at for k in r["decode_projected_component_s_per_device"]})
    parts = [{k: r["decode_projected_component_s_per_device"].get(k, 0.0) for k in labels} for r in at]
    floor = MIN_COMPONENT_SHARE * min(r["decode_projected_step_s_per_device"] for r in at)
    labels = [k for k in labels if max(p[k] for p in parts) >= floor]
    lines = [
        f"{topology}, batch {batch}: projected us per step by component (PROJECTION; components under "
        f"{MIN_COMPONENT_SHARE:.0%} of the step left out)",
        "",
        "| component | " + " | ".join(r["variant"] for r in at) + " |",
        "| --- |" + " --- |" * len(at),
    ]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{p[label] * 1e6:.0f}" for p in parts) + " |")
    return lines + [""]


def _lead(ranked: Sequence[Mapping[str, Any]]) -> list[str]:
    """The winner, and the parallel block's lead over the serial one at the same head size split by component."""
    best = ranked[0]
    lines = [f"- batch {best['batch']}: **{best['variant']}** fastest (PROJECTION)"]
    if len(ranked) > 1:
        second = ranked[1]
        ratio = _ratio(second["decode_projected_step_s_per_device"], best["decode_projected_step_s_per_device"])
        lines[0] += f", {ratio} ahead of {second['variant']}"
    for d_head in sorted({r["d_head"] for r in ranked}):
        pair = {r["residual"]: r for r in ranked if r["d_head"] == d_head}
        if {"parallel", "serial"} <= pair.keys():
            p, s = pair["parallel"], pair["serial"]
            lead = s["decode_projected_step_s_per_device"] - p["decode_projected_step_s_per_device"]
            ici = s["decode_projected_ici_s_per_device"] - p["decode_projected_ici_s_per_device"]
            latency = s["decode_projected_ici_latency_s_per_device"] - p["decode_projected_ici_latency_s_per_device"]
            share = f"{latency / lead:.0%} of it collective latency" if lead > 0 else "parallel is not ahead"
            lines.append(
                f"  - h{d_head}: parallel leads serial by {lead * 1e6:.0f} us a step "
                f"({_ratio(s['decode_projected_step_s_per_device'], p['decode_projected_step_s_per_device'])}); "
                f"ICI {ici * 1e6:.0f} us of it, {share}; work {(lead - ici) * 1e6:.0f} us"
            )
    return lines


def _claim(ok: Sequence[Mapping[str, Any]]) -> list[str]:
    """Whether GPT-J's design is the fastest decoder at every (slice, batch), and where not."""
    if not ok:
        return []
    return ["### The article's claim, checked (PROJECTION)", "", _claim_sentence(ok), ""]


def _claim_sentence(ok: Sequence[Mapping[str, Any]]) -> str:
    flips = []
    wins = 0
    cells = sorted({(r["topology"], r["seq"], r["batch"]) for r in ok})
    for topology, context, batch in cells:
        at = [r for r in ok if (r["topology"], r["seq"], r["batch"]) == (topology, context, batch)]
        at.sort(key=lambda r: r["decode_projected_step_s_per_device"])
        if (at[0]["residual"], at[0]["d_head"]) == GPTJ_CHOICE:
            wins += 1
        else:
            flips.append(f"{topology} context {context} batch {batch}: {at[0]['variant']} fastest")
    return (
        f"GPT-J's choices (parallel block, 256-wide heads) decode fastest in {wins} of {len(cells)} projected "
        f"(slice, context, batch) points" + (f"; elsewhere: {'; '.join(flips)}." if flips else ".")
    )
