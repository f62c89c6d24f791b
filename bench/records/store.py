"""One flat JSON record per run, appended atomically to ``results.jsonl``; loading that tolerates damage.

A record is checked against the schema (bench.records.schema) before it is written, and refused, naming how, where
it departs from it. It is written by rewriting the file to a temporary name and renaming it over the old one under a
lock, so a crash leaves either the old file or the new one, never a half line. Loading skips (and names) lines that
are not JSON objects, carry an unknown schema version or depart from the schema, so a report covers what is valid;
version-1 lines are upgraded to the current version as they are read.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.records.schema import SCHEMA_VERSION, Status, upgrade, validate

RESULTS = "results.jsonl"
UPGRADABLE_VERSIONS = (1, 2)


def results_path(run_dir: Path) -> Path:
    return Path(run_dir) / RESULTS


class RecordNotSaved(OSError):
    """The run directory could not be written; the record was kept elsewhere (``kept_at``), never dropped."""

    def __init__(self, path: Path, error: OSError, kept_at: Path | None):
        where = f"the record is kept at {kept_at}; append it once the directory is writable: cat {kept_at} >> {path}"
        super().__init__(
            f"could not write {path} ({type(error).__name__}: {error}); "
            + (where if kept_at else "and no recovery file could be written either")
        )
        self.kept_at = kept_at


CACHE_ENV = "GPTJ_BENCH_CACHE"  # a directory: the suite's cross-run files (calibration, compile cache, unsaved)


def cache_root() -> Path:
    """``$GPTJ_BENCH_CACHE``, default ``~/.cache/gptj-bench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gptj-bench")


def recovery_dir() -> Path:
    """Where a record goes when its run directory cannot take it: the suite's cache, else the temp directory."""
    return cache_root() / "unsaved"


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one record; raises RecordNotSaved (with where the record was kept instead) if ``run_dir`` refuses."""
    problems = validate(record)
    if problems:
        raise ValueError(f"record {record.get('variant')!r} departs from the schema: " + "; ".join(problems))
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    try:
        _append_line(Path(run_dir), line)
    except OSError as error:
        raise RecordNotSaved(results_path(run_dir), error, _keep(line, record)) from error


def _keep(line: str, record: dict[str, Any]) -> Path | None:
    stem = f"{record.get('timestamp_utc', '')}-{record.get('variant', 'record')}".replace(":", "")
    for directory in (recovery_dir(), Path(tempfile.gettempdir()) / "gptj-bench-unsaved"):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=directory, prefix=stem + "-", suffix=".jsonl")
            with os.fdopen(fd, "w") as out:
                out.write(line)
            return Path(name)
        except OSError:
            continue
    return None


def _append_line(run_dir: Path, line: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        append_line_atomically(results_path(run_dir), line)


def append_line_atomically(path: Path, line: str) -> None:
    """Rewrite ``path`` with ``line`` appended, through a temporary file renamed over it: a crash leaves the old file
    or the new one, never a half line. The caller serialises writers (``_append_line`` holds a lock)."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"  # never glue a new line onto a damaged last line
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes the file private; records are for everyone to read
        with os.fdopen(fd, "wb") as out:
            out.write(old + line.encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Loaded:
    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)  # one line of explanation per skipped line


def load_records(run_dir: Path) -> Loaded:
    path = results_path(run_dir)
    if not path.exists():
        return Loaded([], [f"{path}: no such file"])
    loaded = Loaded([])
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            record = _parse(text)
            if isinstance(record, str):
                loaded.skipped.append(f"{path.name} line {number}: {record}")
            else:
                loaded.records.append(record)
    return loaded


def _parse(text: str) -> dict[str, Any] | str:
    """One line as a current-version record, or why it is not one."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg})"
    if not isinstance(record, dict):
        return "not a JSON object"
    version = record.get("schema_version")
    if version != SCHEMA_VERSION and version not in UPGRADABLE_VERSIONS:
        return f"schema_version {version}, expected {SCHEMA_VERSION}"
    record = upgrade(record)
    problems = validate(record)
    return f"departs from the schema: {'; '.join(problems)}" if problems else record


# What a run's --set and --mesh change without changing the variant's or the preset's name (Head fields): a
# directory may hold one variant at several sizes or meshes (reports/example/tpu-aot-scale), each its own point.
SHAPE_FIELDS = ("mesh_dp", "mesh_mp", "batch", "seq", "grad_accum", "n_layers", "d_model", "d_ff", "vocab")


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """A variant is measured once per repeat per JAX version (pjit runs in both environments of a sweep) per preset
    (a run directory may hold gptj-6b and gpt-neo-2.7b compiles of one variant) per shape (``SHAPE_FIELDS``)."""
    head = record["variant"], int(record.get("repeat", 0)), str(record.get("jax", "")), str(record.get("preset", ""))
    return (*head, *(record.get(f) for f in SHAPE_FIELDS))


def finished_keys(run_dir: Path) -> set[tuple[Any, ...]]:
    """Keys of the records already ``ok``: what ``--resume`` skips."""
    return {record_key(r) for r in load_records(run_dir).records if r.get("status") == Status.OK.value}
