"""The one place that knows JAX versions apart: current JAX and jax 0.4.30 (the last release with xmap).

Everything else in the suite uses current spellings and calls through here where the two differ, and asks here
whether a version string is one that a known difference applies to. JAX is imported inside the functions that need
it, so the version predicates can be asked before JAX starts (the TPU compile environment must be set first).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jax

HAS_XMAP_MESSAGE = (
    "xmap was removed in JAX 0.4.31; this JAX is {version}. Run xmap variants in the jax 0.4.30 environment: "
    'nox -s "bench(<variant>)" picks it for you, or `nox -s tests_xmap` for the tests'
)
LAST_XMAP_JAX = (0, 4, 30)


# --- versions -------------------------------------------------------------------------------------------------------


def version_tuple(version: str) -> tuple[int, ...]:
    """The release numbers a version string starts with: "0.4.30" -> (0, 4, 30), "0.10.2.dev20250101" -> (0, 10, 2).

    Pre-release and local parts ("rc1", ".dev…", "+cuda12") are dropped; comparisons are between releases.
    """
    release = re.match(r"\s*(\d+(?:\.\d+)*)", version) if isinstance(version, str) else None
    if release is None:
        raise ValueError(f"cannot read a release number from version {version!r}; expected e.g. '0.4.30'")
    return tuple(int(part) for part in release.group(1).split("."))


def installed_version(package: str) -> str:
    """A package's version from its metadata, without importing it (jax must not start before its environment)."""
    return importlib.metadata.version(package)


def jax_needs_pjrt_compatibility(jax_version: str) -> bool:
    """Whether this jax's PJRT C API is older than the libtpu it is paired with (bench.tpu_aot.env says why).

    The jax 0.4.30 environment pairs its PJRT C API 0.54 with the oldest libtpu on PyPI (0.0.1, API 0.55); jax
    0.10.2 and its pinned libtpu 0.0.42.1 match. Every 0.4.x counts as the old side, as it always has here.
    """
    return version_tuple(jax_version)[:2] < (0, 5)


def jaxlib_cpu_collectives_deadlock(jaxlib_version: str) -> bool:
    """Whether this jaxlib's gloo CPU collectives can deadlock (bench.measure.session.check_cpu_collectives says how).

    Measured in jaxlib 0.4.30 and not in 0.10.2; the releases in between are untested and taken as fixed.
    """
    return version_tuple(jaxlib_version)[:3] <= LAST_XMAP_JAX


# --- API differences ------------------------------------------------------------------------------------------------


def compiler_errors() -> tuple[type[Exception], ...]:
    """What XLA raises when it fails or refuses a program (compile errors, RESOURCE_EXHAUSTED, an unsupported op):
    jaxlib's XlaRuntimeError (jax.errors.JaxRuntimeError in current JAX; xla_client names it in both); and
    Pallas's re-raise of a Mosaic compile error with the kernel's Python frames, in JAXes that have one (jax 0.4.30
    lets XLA's own error through)."""
    from jaxlib import xla_client

    try:
        from jax._src.pallas.mosaic.error_handling import MosaicError
    except ImportError:
        return (xla_client.XlaRuntimeError,)
    return (xla_client.XlaRuntimeError, MosaicError)


def has_xmap() -> bool:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from jax.experimental.maps import xmap  # noqa: F401
    except ImportError:
        return False
    return True


def xmap(fun: Callable, **kwargs: Any) -> Callable:
    import jax

    if not has_xmap():
        raise RuntimeError(HAS_XMAP_MESSAGE.format(version=jax.__version__))
    import warnings

    from jax.experimental.maps import xmap as _xmap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _xmap(fun, **kwargs)


def shard_map(fun: Callable, *, mesh: jax.sharding.Mesh, in_specs: Any, out_specs: Any) -> Callable:
    """shard_map without replication checking: the model's collectives are custom-VJP Megatron f/g functions
    whose gradients are exact by construction (see model.sharding)."""
    import jax

    if hasattr(jax, "shard_map"):  # jax >= 0.6
        return jax.shard_map(fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as _shard_map

    return _shard_map(fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


CostAnalysis = Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None


def cost_dict(costs: CostAnalysis) -> dict[str, Any] | None:
    """One program's cost analysis as a dict, from what ``cost_analysis()`` returns on either jax version.

    Current JAX returns a dict; jax 0.4.30's ``Compiled.cost_analysis()`` returns a list with one dict per program
    (one, for a jitted function; its ``Lowered.cost_analysis()`` returns a dict). Nothing (None, [] or [None])
    gives None. Several entries are refused rather than summed: summing could double count replicated programs.
    """
    if costs is None or isinstance(costs, Mapping):
        return None if costs is None else dict(costs)
    entries = list(costs)
    if len(entries) > 1:
        raise ValueError(
            f"cost analysis has {len(entries)} entries (one per program); summing them could double count "
            f"replicated programs, so pass one entry"
        )
    return dict(entries[0]) if entries and entries[0] is not None else None


def cost_analysis(stage: Any) -> dict[str, Any] | None:
    """``stage.cost_analysis()`` of a ``jax.stages.Compiled`` or ``Lowered`` as one dict (see ``cost_dict``)."""
    return cost_dict(stage.cost_analysis())


def lowered_text(lowered: Any, debug_info: bool = False) -> str:
    """A ``jax.stages.Lowered`` as StableHLO text, with or without its locations (op names, source lines).

    Current JAX takes ``as_text(debug_info=...)``; jax 0.4.30's ``as_text`` has no such argument and prints none,
    so the locations come from its MLIR module's own printer.
    """
    if "debug_info" in inspect.signature(lowered.as_text).parameters:
        return lowered.as_text(debug_info=debug_info)
    if not debug_info:
        return lowered.as_text()
    return lowered.compiler_ir().operation.get_asm(enable_debug_info=True)
