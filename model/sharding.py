"""The sharding layout, in one table, and the Megatron tensor-parallel collectives.

Layers name what a dimension means (``heads``, ``ff``, ``vocab``); ``MESH_RULES`` maps those names to mesh axes
(Megatron-LM, Shoeybi et al. 2019: q/k/v and FF-in column-parallel by whole heads, output projection and FF-out
row-parallel; embedding and LM head vocab-parallel). ``PARAM_AXES`` names the dimensions of every parameter.
Everything else (partition specs, local shapes, xmap axes, weight-decay masks) is derived from these two tables.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

DP, MP = "dp", "mp"
MESH_AXES = (DP, MP)

# Logical dimension name -> mesh axis (None: replicated).
MESH_RULES: dict[str, str | None] = {
    "batch": DP,
    "seq": None,
    "embed": None,
    "heads": MP,  # the flattened H*K projection dim: split by whole heads
    "head_dim": None,
    "ff": MP,
    "vocab": MP,
    "layers": None,  # the leading dim of parameters stacked by hk.layer_stack
}

# Parameter leaf name -> logical names of its dims (without the leading "layers" dim of stacked block params).
PARAM_AXES: dict[str, tuple[str, ...]] = {
    "table": ("vocab", "embed"),  # input embedding [V, D]
    "scale": ("embed",),  # LayerNorm
    "offset": ("embed",),
    "w_q": ("embed", "heads"),  # [D, H*K]
    "w_k": ("embed", "heads"),
    "w_v": ("embed", "heads"),
    "w_o": ("heads", "embed"),  # [H*K, D]
    "w_in": ("embed", "ff"),  # [D, F]
    "b_in": ("ff",),
    "w_out": ("ff", "embed"),  # [F, D]
    "b_out": ("embed",),
    "w": ("embed", "vocab"),  # LM head [D, V]
    "b": ("vocab",),
}


def param_axes(leaf_name: str, ndim: int) -> tuple[str, ...]:
    axes = PARAM_AXES[leaf_name]
    if ndim == len(axes) + 1:
        return ("layers", *axes)
    if ndim != len(axes):
        raise ValueError(f"parameter {leaf_name!r} has {ndim} dims; its table entry names {axes}")
    return axes


def spec_for(axes: tuple[str, ...]) -> PartitionSpec:
    return PartitionSpec(*(MESH_RULES[a] for a in axes))


def _leaf_name(path: tuple[Any, ...]) -> str:
    return path[-1].key


def param_specs(params: Any) -> Any:
    """A PartitionSpec per parameter leaf, from the tables (works on arrays or ShapeDtypeStructs)."""
    return jax.tree_util.tree_map_with_path(lambda p, x: spec_for(param_axes(_leaf_name(p), x.ndim)), params)


def decay_mask(params: Any) -> Any:
    """GPT-J decays matrices only: True where a parameter has two or more non-layer dims."""

    def is_matrix(path: tuple[Any, ...], x: Any) -> bool:
        return len([a for a in param_axes(_leaf_name(path), x.ndim) if a != "layers"]) >= 2

    return jax.tree_util.tree_map_with_path(is_matrix, params)


# Megatron's f and g (Shoeybi et al. 2019, section 3; mesh-transformer-jax ``f_psum`` / ``g_psum``):
# f enters a tensor-parallel region (identity forward, all-reduce of the gradient backward),
# g leaves it (all-reduce forward, identity backward). Custom VJPs keep the backward collectives exactly where
# Megatron puts them, independent of how a JAX version transposes psum.
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def f_psum(x: jnp.ndarray, axis: str) -> jnp.ndarray:
    return x


def _f_fwd(x: jnp.ndarray, axis: str) -> tuple[jnp.ndarray, None]:
    return x, None


def _f_bwd(axis: str, _: None, g: jnp.ndarray) -> tuple[jnp.ndarray]:
    return (jax.lax.psum(g, axis),)


f_psum.defvjp(_f_fwd, _f_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def g_psum(x: jnp.ndarray, axis: str) -> jnp.ndarray:
    return jax.lax.psum(x, axis)


def _g_fwd(x: jnp.ndarray, axis: str) -> tuple[jnp.ndarray, None]:
    return jax.lax.psum(x, axis), None


def _g_bwd(axis: str, _: None, g: jnp.ndarray) -> tuple[jnp.ndarray]:
    return (g,)


g_psum.defvjp(_g_fwd, _g_bwd)


@dataclass(frozen=True)
class TensorParallel:
    """How the block sees tensor parallelism.

    Local view (shard_map, xmap): ``axis`` names the mesh axis for explicit collectives and parameters hold
    1/``size`` of every ``mp`` dimension. Global view (single, pjit): ``axis`` is None, parameters are whole,
    collectives are the identity, and under pjit ``mesh`` turns ``constrain`` into sharding constraints.
    """

    axis: str | None = None
    size: int = 1
    mesh: jax.sharding.Mesh | None = None

    def local_shape(self, axes: tuple[str, ...], global_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(n // self.size if MESH_RULES[a] == MP else n for a, n in zip(axes, global_shape))

    def enter(self, x: jnp.ndarray) -> jnp.ndarray:
        return f_psum(x, self.axis) if self.axis else x

    def exit(self, x: jnp.ndarray) -> jnp.ndarray:
        return g_psum(x, self.axis) if self.axis else x

    def pmax(self, x: jnp.ndarray) -> jnp.ndarray:
        """Max over shards; only ever applied to stop-gradient values."""
        return jax.lax.pmax(x, self.axis) if self.axis else x

    def index(self) -> jnp.ndarray | int:
        return jax.lax.axis_index(self.axis) if self.axis else 0

    def constrain(self, x: jnp.ndarray, axes: tuple[str, ...]) -> jnp.ndarray:
        if self.mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec_for(axes)))
