"""The context every record carries: where runs go, the environment, the head fields of a record.

``failed_record`` is the one builder of a record's head: a measurement starts from it (failed until it succeeds),
and so does every placeholder written for a run that died before writing its own.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.records.schema import SCHEMA_VERSION, RecordKind, Status, variant_fields
from model.config import Mesh, Preset, Scope, Variant

REPO = Path(__file__).resolve().parents[2]


def new_run_dir(root: Path = REPO / "reports" / "runs") -> Path:
    """A fresh directory per run; earlier runs are never overwritten."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for suffix in [""] + [f"-{i}" for i in range(1, 1000)]:
        path = root / f"{stamp}{suffix}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not make a new run directory under {root}")


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo), for cache keys and records."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, host and JAX platform of this process (a tpu-aot record then names the TPU it compiled for)."""
    import haiku
    import jax
    import jaxlib

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "haiku": haiku.__version__,
        "libtpu": _installed_version("libtpu"),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "process_count": jax.process_count(),
        "hostname": platform.node(),
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        **_git(),
    }


def _jax_version() -> str:
    import jax

    return jax.__version__


def failed_record(
    variant: Variant,
    preset: Preset,
    mesh: Mesh,
    scope: Scope,
    repeat: int,
    jax_version: str | None,
    error: str | None,
    kind: RecordKind = RecordKind.FAILED_PLACEHOLDER,
) -> dict[str, Any]:
    """A record's head, marked failed with ``error``. ``jax_version``: of the process that ran (or would have run)
    the variant; None where it could not be asked."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind.value,
        "timestamp_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **variant_fields(variant),
        "preset": preset.name,
        "scope": scope.value,
        "mesh_dp": mesh.dp,
        "mesh_mp": mesh.mp,
        "devices": mesh.devices,
        "batch": preset.batch,
        "seq": preset.seq,
        "grad_accum": preset.grad_accum,
        "grad_accum_dtype": preset.grad_accum_dtype.value,
        "dtype": preset.model.compute_dtype.value,
        "n_layers": preset.model.n_layers,
        "d_model": preset.model.d_model,
        "d_ff": preset.model.d_ff,
        "vocab": preset.model.vocab,
        "flat_tokens": preset.model.flat_tokens,
        "repeat": repeat,
        "jax": jax_version,
        "status": Status.FAILED.value,
        "error": error,
    }


def base_record(
    variant: Variant, preset: Preset, mesh: Mesh, scope: Scope, repeat: int, kind: RecordKind = RecordKind.MEASURED
) -> dict[str, Any]:
    """The head of a record this process is about to produce: failed (with no error yet) until it succeeds."""
    return failed_record(variant, preset, mesh, scope, repeat, _jax_version(), None, kind)
