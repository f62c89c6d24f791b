"""The records a report covers: a run directory's, the tpu-aot records of its --aot directories, and what was left out.

Input that cannot be used (a corrupt line, another schema version, a record of another preset or mesh than the
run's main one, a record of the wrong backend in an --aot directory) is named, one sentence each, and left out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gpu.plan import DEVICE_FILE  # the one-GPU run's probe: its device, peaks and budget
from bench.projection import throughput as projection
from bench.records.store import RESULTS, load_records
from model.config import PRESETS, ConfigError

# Measured records of one run are compared only when these agree (a different preset, mesh or batch is another
# workload); the most frequent combination is reported, the others are named as skipped.
CONFIG_FIELDS = ("preset", "scope", "mesh_dp", "mesh_mp", "batch", "seq", "dtype")


class ReportError(ConfigError):
    """Nothing to report, or a directory that is not a run directory; the message says what is expected."""


@dataclass(frozen=True)
class RunRecords:
    run_dir: Path
    measured: tuple[dict[str, Any], ...]  # ok and failed, all of one configuration
    aot: tuple[dict[str, Any], ...]  # backend "tpu-aot": projection inputs, never ranked with measured runs
    skipped: tuple[str, ...]  # one sentence per line or record left out
    config: Mapping[str, Any] | None  # what the measured records share (CONFIG_FIELDS)
    aot_from: tuple[Path, ...] = ()  # the directory of each aot record
    # tpu-aot records of the design-space search (``search_point`` set): its own section, never section 4's ranking
    search: tuple[dict[str, Any], ...] = ()
    aot_dirs: tuple[Path, ...] = ()  # the --aot directories, as given
    device: Mapping[str, Any] | None = None  # RUN_DIR/DEVICE_FILE where the run has one (a one-GPU run)
    # tpu-aot records of published runs (``validation_id`` set, ``python -m bench validate``): their own section
    validation: tuple[dict[str, Any], ...] = ()
    # tpu-aot records of a preset's model resized by --set (``is_resized``): what fits a slice at which size (the
    # claims table), never ranked with the preset's own variants
    resized: tuple[dict[str, Any], ...] = ()


def row_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """A report row: one variant in one JAX environment (xmap exists only on jax 0.4.30)."""
    if record.get("jax"):
        return record["variant"], str(record["jax"])
    return record["variant"], "unknown"  # a placeholder whose environment could not say its JAX version


def latest_ok(records: Iterable[Mapping[str, Any]], *fields: str, having: str | None = None) -> list[Mapping[str, Any]]:
    """The last ok record of each row (``row_key``) and value of ``fields``, in the order the keys first appear.

    With ``having``, only records where that field is set count (a profile summary, say).
    """
    latest: dict[tuple, Mapping[str, Any]] = {}
    for record in records:
        if record["status"] == "ok" and (having is None or record.get(having) is not None):
            latest[(*row_key(record), *(record.get(f) for f in fields))] = record
    return list(latest.values())


def config_text(config: Mapping[str, Any] | None, missing: str = "empty") -> str:
    if not config:
        return missing
    return (
        f"preset {config['preset']!r}, scope {config['scope']}, mesh dp={config['mesh_dp']},mp={config['mesh_mp']}, "
        f"batch {config['batch']}, seq {config['seq']}, {config['dtype']}"
    )


def _describe(record: Mapping[str, Any]) -> str:
    return f"record {record.get('variant')!r} repeat {record.get('repeat', 0)} ({record.get('timestamp_utc')})"


def _load_dir(directory: Path, label: str) -> tuple[list[dict[str, Any]], list[str]]:
    if not directory.is_dir():
        raise ReportError(
            f"{directory} is not a directory; expected a run directory holding {RESULTS} "
            f"(written by `python -m bench run --out DIR`)"
        )
    loaded = load_records(directory)
    skipped = [f"{label}{message}" for message in loaded.skipped]
    records = []
    for record in loaded.records:
        if not isinstance(record.get("variant"), str) or record.get("status") not in ("ok", "failed"):
            skipped.append(f"{label}{_describe(record)}: needs a variant name and status ok or failed")
        else:
            records.append(record)
    return records, skipped


def _is_aot(record: Mapping[str, Any]) -> bool:
    return record.get("kind") == projection.AOT_KIND


# The sizes a record of a resized model differs from its preset in (Head fields; model.config.ModelConfig's names)
RESIZE_FIELDS = ("n_layers", "d_model", "d_ff", "vocab")


def is_resized(record: Mapping[str, Any]) -> bool:
    """A compile of its preset's model with other sizes (``--set n_layers=...``): the variant's name is the same, the
    model is not, so it is never ranked beside the preset's own compiles."""
    preset = PRESETS.get(str(record.get("preset")))
    if preset is None or record.get("search_point") or record.get("validation_id"):
        return False
    return any(record.get(f) is not None and record[f] != getattr(preset.model, f) for f in RESIZE_FIELDS)


def _one_configuration(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], dict | None]:
    """Keep the most frequent configuration (first seen wins a tie); name the records of the others.

    A record that lacks some configuration fields (the sweep's record of a process that died before measuring has
    no mesh or batch) belongs to the configuration its other fields agree with.
    """
    if not records:
        return [], [], None
    keys = [tuple(r.get(f) for f in CONFIG_FIELDS) for r in records]
    complete = [k for k in keys if None not in k] or keys
    main = Counter(complete).most_common(1)[0][0]
    config = dict(zip(CONFIG_FIELDS, main))
    matches = [all(v is None or v == m for v, m in zip(k, main)) for k in keys]
    skipped = []
    for other, count in Counter(k for k, match in zip(keys, matches) if not match).items():
        skipped.append(
            f"{count} measured record(s) of {config_text(dict(zip(CONFIG_FIELDS, other)))} left out: this report "
            f"covers {config_text(config)}, the most frequent configuration. Report each configuration from its "
            f"own run directory."
        )
    return [r for r, match in zip(records, matches) if match], skipped, config


def load_run(run_dir: Path, aot_dirs: Sequence[Path] = ()) -> RunRecords:
    """Records of RUN_DIR, plus the tpu-aot records of ``aot_dirs``; raises ReportError when nothing is usable."""
    run_dir = Path(run_dir)
    device_file = run_dir / DEVICE_FILE
    device = json.loads(device_file.read_text()) if device_file.is_file() else None
    if device is not None and not (run_dir / RESULTS).exists():  # the probe failed: its report says why, no records
        return RunRecords(run_dir, (), (), (), None, device=device)
    records, skipped = _load_dir(run_dir, "")
    aot = [r for r in records if _is_aot(r)]
    aot_from = [run_dir] * len(aot)
    for directory in map(Path, aot_dirs):
        extra, extra_skipped = _load_dir(directory, f"{directory}/")
        skipped += extra_skipped
        aot += [r for r in extra if _is_aot(r)]
        aot_from += [directory] * (len(aot) - len(aot_from))
        others = len([r for r in extra if not _is_aot(r)])
        if others:
            skipped.append(f"{directory}: {others} record(s) without backend tpu-aot left out (--aot reads compiles)")
    measured, config_skipped, config = _one_configuration([r for r in records if not _is_aot(r)])
    skipped += config_skipped
    search = [r for r in aot if r.get("search_point")]
    validation = [r for r in aot if r.get("validation_id")]
    flags = [is_resized(r) for r in aot]
    resized = [r for r, flag in zip(aot, flags) if flag]
    ranked = [not (r.get("search_point") or r.get("validation_id") or flag) for r, flag in zip(aot, flags)]
    aot_from = [d for d, keep in zip(aot_from, ranked) if keep]
    aot = [r for r, keep in zip(aot, ranked) if keep]
    if not measured and not aot and not search and not validation and not resized:
        reasons = "; ".join(skipped) or "the file is empty"
        raise ReportError(
            f"no usable records in {run_dir / RESULTS} ({reasons}). A run directory holds one JSON record per line "
            f"with schema_version, variant and status; make one with `python -m bench run --out {run_dir}`"
        )
    return RunRecords(
        run_dir,
        tuple(measured),
        tuple(aot),
        tuple(skipped),
        config,
        tuple(aot_from),
        tuple(search),
        tuple(map(Path, aot_dirs)),
        device,
        tuple(validation),
        tuple(resized),
    )
