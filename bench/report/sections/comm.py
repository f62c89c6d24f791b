"""Section 5: the collectives in each variant's compiled HLO against the Megatron expectation, each mismatch
explained from the record's ``comm_*`` and ``expected_*`` fields."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench.analysis import expected
from bench.records.collectives import AXIS_LABELS, CollectiveKind
from bench.records.schema import comm_key
from bench.report.analyse import Analysis
from bench.report.format import figure, fmt, markdown_table, number, source
from bench.report.load import latest_ok, row_key

# the kinds the Megatron expectation does not have (it counts all-reduces only)
OTHER_KINDS = tuple(k for k in CollectiveKind if k is not CollectiveKind.ALL_REDUCE)


def _int(record: Mapping[str, Any], key: str) -> int | None:
    value = number(record.get(key))
    return None if math.isnan(value) else int(value)


def _sum_ints(record: Mapping[str, Any], *keys: str) -> int | None:
    values = [_int(record, k) for k in keys]
    return None if None in values else sum(values)


def _expected_mp(record: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Arrays and bytes the Megatron expectation all-reduces over mp per step: the layers' plus the rest."""
    count = _sum_ints(record, "expected_mp_layer_allreduce_count", "expected_mp_other_allreduce_count")
    nbytes = _sum_ints(
        record, "expected_mp_layer_allreduce_bytes_per_device", "expected_mp_other_allreduce_bytes_per_device"
    )
    return count, nbytes


def _difference(found: int, expected: int, unit: str) -> str:
    delta = found - expected
    word = "more" if delta > 0 else "fewer" if unit == "op" else "less"
    plural = "s" if abs(delta) != 1 else ""
    return f"{abs(delta):,} {unit}{plural} {word}"


def explain_comm(record: Mapping[str, Any]) -> list[str]:
    """Sentences saying where the HLO's collectives differ from the Megatron expectation, from the record's fields.

    The expectation counts arrays reduced; XLA's all-reduce combiner may carry several in one tuple-shaped op, so
    arrays are compared through ``comm_mp_allreduce_tensors`` where the record has it, ops otherwise.
    """
    ops, nbytes = _int(record, "comm_mp_allreduce_count"), _int(record, "comm_mp_allreduce_bytes_per_device")
    want_count, want_bytes = _expected_mp(record)
    if None in (ops, nbytes, want_count, want_bytes):
        recorded = [*(record.get("comm_differences") or []), *(record.get("comm_notes") or [])]
        return recorded or ["no expected_* or comm_* fields: nothing to compare"]
    notes = _mp_notes(record, ops, nbytes, want_count, want_bytes)
    dp, want_dp = (
        _int(record, "comm_dp_allreduce_bytes_per_device"),
        _int(record, "expected_dp_grad_allreduce_bytes_per_device"),
    )
    if dp is not None and want_dp is not None and dp != want_dp:
        notes.append(
            f"dp all-reduce: {dp:,} bytes in the HLO against {want_dp:,} bytes of gradients "
            f"({_difference(dp, want_dp, 'byte')})."
        )
    notes += _other_kind_notes(record)
    for wide in record.get("comm_wider_than_compute") or []:
        notes.append(f"{wide}: a collective wider than the compute dtype {record.get('dtype')}.")
    if record.get("comm_trip_counts_known") is False:
        notes.append("some loop trip count was not found in the HLO, so counts may be low.")
    return notes


def _mp_notes(record: Mapping[str, Any], ops: int, nbytes: int, want_count: int, want_bytes: int) -> list[str]:
    tensors = _int(record, "comm_mp_allreduce_tensors")
    found, unit = (tensors, "array") if tensors is not None else (ops, "op")
    notes = []
    if found != want_count or nbytes != want_bytes:
        parts = [_difference(found, want_count, unit)] if found != want_count else []
        parts += [_difference(nbytes, want_bytes, "byte")] if nbytes != want_bytes else []
        text = (
            f"mp all-reduce: {found:,} {unit}s carrying {nbytes:,} bytes in the HLO, {want_count:,} and "
            f"{want_bytes:,} expected ({', '.join(parts)})"
        )
        if unit == "op" and nbytes == want_bytes:
            text += "; the same bytes in a different number of ops, as when XLA combines or splits all-reduces"
        notes.append(text + ".")
    if tensors is not None and ops < tensors:
        notes.append(
            f"mp all-reduce: XLA's combiner carried {tensors:,} arrays in {ops:,} ops ({tensors - ops:,} "
            f"fewer ops than arrays)."
        )
    return notes


def _other_kind_notes(record: Mapping[str, Any]) -> list[str]:
    notes = []
    for axis, axis_label in AXIS_LABELS.items():
        for kind in OTHER_KINDS:
            n = _int(record, comm_key(axis, kind, "count"))
            if n:
                size = _int(record, comm_key(axis, kind, "bytes")) or 0
                notes.append(
                    f"{n:,} {kind.label} op(s) on {axis_label} ({size:,} bytes), which the Megatron "
                    f"expectation (all-reduces only) does not have."
                )
    return notes


def comm_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in records:
        want_count, want_bytes = _expected_mp(r)
        other = sum(_int(r, comm_key(a, k, "count")) or 0 for a in AXIS_LABELS for k in OTHER_KINDS)
        rows.append(
            {
                "variant": r["variant"],
                "jax": row_key(r)[1],
                "mp all-reduce ops (arrays) HLO / expected arrays": (
                    f"{fmt(r.get('comm_mp_allreduce_count'))} ({fmt(r.get('comm_mp_allreduce_tensors'))}) / "
                    f"{fmt(want_count)}"
                ),
                "mp all-reduce bytes HLO / expected": (
                    f"{fmt(r.get('comm_mp_allreduce_bytes_per_device'))} / {fmt(want_bytes)}"
                ),
                "dp all-reduce bytes HLO / gradients": (
                    f"{fmt(r.get('comm_dp_allreduce_bytes_per_device'))} / "
                    f"{fmt(r.get('expected_dp_grad_allreduce_bytes_per_device'))}"
                ),
                "other collectives": str(other),
                "mismatches": str(len(explain_comm(r))),
            }
        )
    return pd.DataFrame(rows)


def comm_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The wire-bytes plot's input: bytes on the wire per device per step of each collective kind."""
    columns = ["variant", "jax"] + [comm_key(None, k, "wire_bytes") for k in CollectiveKind]
    return pd.DataFrame(
        [
            {"variant": r["variant"], "jax": row_key(r)[1], **{c: number(r.get(c)) for c in columns[2:]}}
            for r in records
        ],
        columns=columns,
    )


def section_comm(a: Analysis) -> list[str]:
    lines = [
        "## 5. Communication: HLO against the analytic expectation",
        "",
        "Collectives parsed from each variant's compiled HLO (latest ok record), per step and per device, against "
        f"the Megatron expectation of {source(expected)}. Each mismatch is explained below from the record's fields.",
        "",
    ]
    for title, records in (
        ("Measured runs", latest_ok(a.run.measured, "topology")),
        ("TPU ahead-of-time compiles (6B scale)", latest_ok(a.run.aot, "topology")),
    ):
        if records:
            lines += [f"### {title}", "", markdown_table(comm_table(records)), ""]
            lines += _mismatch_lines(records) + [""]
    if len(lines) == 5:
        lines.append("No ok record carries communication fields.")
    lines += figure(a.figures, "wire", "Bytes on the wire per device per step by collective kind")
    return lines


def _mismatch_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for r in records:
        notes = explain_comm(r)
        where = f" on {r['topology']}" if r.get("topology") else ""
        if notes:
            lines.append(f"- {r['variant']} (jax {row_key(r)[1]}{where}): " + " ".join(notes))
        verdict = r.get("comm_matches_model")
        if verdict is not None:
            differences = "; ".join(r.get("comm_differences") or [])
            lines.append(
                f"  - recorded verdict: {'matches' if verdict else 'differs from'} the analytic model"
                + (f" ({differences})" if differences else "")
            )
        if r.get("comm_notes"):
            lines.append(f"  - recorded notes: {'; '.join(r['comm_notes'])}")
    return lines
