"""The one place that knows JAX versions apart: current JAX and jax 0.4.30 (the last release with xmap).

Everything else in the suite uses current spellings and calls through here where the two differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

HAS_XMAP_MESSAGE = (
    "xmap was removed in JAX 0.4.31; this JAX is {version}. Run xmap variants in the jax 0.4.30 environment: "
    'nox -s "bench(<variant>)" picks it for you, or `nox -s tests_xmap` for the tests'
)


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
    if hasattr(jax, "shard_map"):  # jax >= 0.6
        return jax.shard_map(fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map as _shard_map

    return _shard_map(fun, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def cost_analysis(compiled: Any) -> dict[str, float] | None:
    """Compiled.cost_analysis(): a dict on current JAX, a one-element list on 0.4.30."""
    costs = compiled.cost_analysis()
    if isinstance(costs, list):
        costs = costs[0] if costs else None
    return costs
