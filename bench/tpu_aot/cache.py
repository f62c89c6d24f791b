"""Compile results reused across runs, keyed by the program and the compiler, never by a name.

A gptj-6b variant on v3:8x16 costs four unrolled compiles (bench.tpu_aot.compile.extrapolation_grid) of one to two
minutes each on 2 cores, plus the whole-step compile. What the records need of them is kept here, one JSON file per
compile, and reused only when everything that could change the compiler's output is the same:

- the lowered program: its StableHLO text without locations, and the set of op names its locations carry (the
  name scopes the component map reads; source files, lines and Python frames are left out, so a refactor that
  compiles to the same program with the same scopes keeps its entries);
- the compiler: jax, jaxlib and libtpu versions, XLA_FLAGS, and the topology compiled for.

An entry keeps the compiler's raw outputs, never only figures derived from them, so a fix in the analysis code
needs no recompile:

- a whole-step compile (memory, collectives, fit): its optimized HLO (gzip, base64), the memory analysis and how
  long the compile took;
- an unrolled compile (the extrapolation points): its optimized HLO (xz, base64: an unrolled program repeats its
  layers, which xz's long window folds away) and its cost analysis. The component breakdown derived from that HLO
  is memoised in the entry beside the digest of the code and prices it came from (``ANALYSIS_SOURCES``, the peak
  and HBM bandwidth); a different digest recomputes it from the kept HLO and rewrites the entry.

Nothing is timed, so a reused entry gives the figures a fresh compile would; each record says what was reused
(``xla_cost_points_from_cache``, ``compile_from_cache``, and then ``compile_s`` is the original compile's time).
Entries are written atomically, and each carries the SHA-256 of its contents (``entry_checksum``): an entry that
does not parse, or whose contents no longer match its checksum (truncated, edited, or written before entries had
one), is reported in one line naming its file, then compiled again and rewritten. ``--compile-cache none`` turns
the cache off. A change to how a key or an entry is made bumps the version of its kind (``KEY_VERSION``,
``POINT_KEY_VERSION``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import lzma
import os
import re
import sys
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

KEY_VERSION = 1
# Unrolled compiles' entries: 2 keeps their optimized HLO (1 kept only figures derived from it).
POINT_KEY_VERSION = 2
ROOT = Path(__file__).resolve().parents[2]
# The code between optimized HLO and the breakdown memoised from it.
ANALYSIS_SOURCES = ("bench/analysis/components.py", "bench/analysis/hlo.py", "bench/records/collectives.py")
# An op-name location of lowered StableHLO: loc("jit(step)/.../dot_general"(#loc12)).
_OP_NAME = re.compile(r'loc\("((?:jit|pjit|xmap|shard_map)\([^"]*)"')
DISABLED = "none"
# The memory analysis a cached main compile keeps (jax.stages.Compiled.memory_analysis(), as bench.compile.step
# reads it).
MEMORY_STATS = (
    "argument_size_in_bytes",
    "output_size_in_bytes",
    "alias_size_in_bytes",
    "temp_size_in_bytes",
    "generated_code_size_in_bytes",
)


def pack_text(text: str) -> str:
    """Text as base64 of its gzip, to keep a compile's optimized HLO in a JSON entry."""
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def unpack_text(packed: str) -> str:
    return gzip.decompress(base64.b64decode(packed)).decode()


def pack_text_xz(text: str) -> str:
    """Text as base64 of its xz (an unrolled program's HLO: xz is several times smaller than gzip there)."""
    return base64.b64encode(lzma.compress(text.encode(), preset=9)).decode()


def unpack_text_xz(packed: str) -> str:
    return lzma.decompress(base64.b64decode(packed)).decode()


def point_compile_entry(costs: Mapping[str, Any], hlo_text: str) -> dict[str, Any]:
    """The cache value of an unrolled compile: its cost analysis and optimized HLO (the breakdown is memoised
    beside them by ``with_components``)."""
    return {**dict(costs), "hlo_xz_b64": pack_text_xz(hlo_text)}


def memo_key(analysis: str, priced_at: Any) -> str:
    """What a memoised breakdown was derived with: the analysis digest and the prices, as one string."""
    return hashlib.sha256(f"{analysis}\0{json.dumps(priced_at)}".encode()).hexdigest()


def components_of(entry: Mapping[str, Any], memo: str) -> dict[str, float] | None:
    """The entry's memoised breakdown if it was derived with ``memo`` (``memo_key``), else None."""
    held = entry.get("components")
    return dict(held) if entry.get("components_memo") == memo and isinstance(held, Mapping) else None


def with_components(entry: Mapping[str, Any], components: Mapping[str, float], memo: str) -> dict[str, Any]:
    return {**dict(entry), "components": dict(components), "components_memo": memo}


class CachedCompile:
    """What the record reads from a compile, kept: ``memory_analysis()`` as jax.stages.Compiled gives it."""

    def __init__(self, memory: Mapping[str, int]):
        self._memory = types.SimpleNamespace(**{name: int(memory[name]) for name in MEMORY_STATS})

    def memory_analysis(self) -> Any:
        return self._memory


def main_compile_entry(compiled: Any, hlo_text: str, compile_s: float) -> dict[str, Any]:
    """The cache value of a whole-step compile: its optimized HLO, memory analysis and compile time, not figures
    derived from them (those are recomputed from the HLO by the current code)."""
    stats = compiled.memory_analysis()
    return {
        "hlo_gz_b64": pack_text(hlo_text),
        "memory": {name: int(getattr(stats, name)) for name in MEMORY_STATS},
        "compile_s": compile_s,
    }


def analysis_digest(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for relative in ANALYSIS_SOURCES:
        digest.update(relative.encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    return digest.hexdigest()


def program_key(
    text: str, text_with_locations: str, compiler: Mapping[str, Any], analysis: str, version: int = KEY_VERSION
) -> str:
    """The cache key of one compile (pure): see the module docstring for what goes in. ``analysis`` names what
    the entry holds (bench.tpu_aot.compile's MAIN_COMPILE, POINT_COMPILE)."""
    digest = hashlib.sha256(f"gptj-bench tpu-aot cache {version}\0".encode())
    digest.update(text.encode() + b"\0")
    digest.update("\n".join(sorted(set(_OP_NAME.findall(text_with_locations)))).encode() + b"\0")
    digest.update(json.dumps(dict(compiler), sort_keys=True).encode() + b"\0")
    digest.update(analysis.encode())
    return digest.hexdigest()


def entry_checksum(entry: Mapping[str, Any]) -> str:
    """SHA-256 of an entry's key, description and value, as canonical JSON (its ``checksum`` field left out)."""
    contents = {name: entry.get(name) for name in ("key", "about", "value")}
    return hashlib.sha256(json.dumps(contents, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CompileCache:
    """One JSON file per key under ``directory``; ``directory`` None: nothing is read or written."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.hits = 0

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry's value; None when there is none, or when it is broken (said in one line on stderr)."""
        if self.directory is None:
            return None
        path = self.directory / f"{key}.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            return self._broken(path, f"cannot be read ({error})")
        try:
            entry = json.loads(text)
        except ValueError as error:
            return self._broken(path, f"is not JSON ({error}; truncated?)")
        if not isinstance(entry, dict) or entry.get("checksum") != entry_checksum(entry):
            return self._broken(path, "does not match its checksum (altered, or written without one)")
        if entry.get("key") != key or not isinstance(entry.get("value"), dict):
            return self._broken(path, "holds another key's entry, or no value")
        self.hits += 1
        return entry["value"]

    @staticmethod
    def _broken(path: Path, why: str) -> None:
        print(f"compile cache: entry {path} {why}: compiling again, then rewriting it", file=sys.stderr)
        return None

    def put(self, key: str, value: Mapping[str, Any], about: Mapping[str, Any]) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "about": dict(about), "value": dict(value)}
        entry["checksum"] = entry_checksum(entry)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".entry-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(entry, out, indent=1, sort_keys=True)
                out.write("\n")
            os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep a shared or committed cache from its readers
            os.replace(temporary, self.directory / f"{key}.json")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def cache_from_flag(value: str | None, default: Path) -> CompileCache:
    """``--compile-cache DIR``; ``none`` disables it; absent: ``default``."""
    if value == DISABLED:
        return CompileCache(None)
    return CompileCache(Path(value) if value else default)
