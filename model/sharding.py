"""The sharding layout, in one table, and the Megatron tensor-parallel collectives.

Layers name what a dimension means (``heads``, ``ff``, ``vocab``); ``MESH_RULES`` maps those names to mesh axes
(Megatron-LM, Shoeybi et al. 2019: q/k/v and FF-in column-parallel by whole heads, output projection and FF-out
row-parallel; embedding and LM head vocab-parallel). ``PARAM_AXES`` names the dimensions of every parameter.
Everything else (partition specs, local shapes, xmap axes, weight-decay masks) is derived from these two tables.

Parameters follow ``PARAM_RULES`` of the variant's layout (``model.config.Layout``): Megatron's are ``MESH_RULES``;
FSDP's also split every ``embed`` dim over dp. A layer reads each parameter through ``TensorParallel.gather``, which
is the identity for Megatron's layout and, for FSDP's, gathers the dp-split dims where the layer uses them: an
all-gather over dp in the local view (its transpose, the gradient's reduce-scatter, comes from JAX), a sharding
constraint to Megatron's layout in the global view (the compiler inserts both).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from model.config import Layout

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
    "cache_seq": None,  # the KV cache's positions (model.kv_cache): every shard holds all of them
}

# Each layer's k and v in the KV cache (model.kv_cache.KVCache): split over dp by sequence and over mp by whole
# heads, as the attention that reads them is.
CACHE_AXES = ("batch", "cache_seq", "heads", "head_dim")

# Where parameters live, per layout. FSDP: every parameter (and so its optimizer state) also split over dp on its
# embed dim, the one dim every matrix has (ZeRO stage 3, Rajbhandari et al. 2020, arXiv:1910.02054; PyTorch FSDP,
# Zhao et al. 2023, arXiv:2304.11277). Combined with mp > 1, a matrix is split over both axes.
PARAM_RULES: dict[Layout, dict[str, str | None]] = {
    Layout.MEGATRON: MESH_RULES,
    Layout.FSDP: {**MESH_RULES, "embed": DP},
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


def spec_for(axes: tuple[str, ...], rules: dict[str, str | None] = MESH_RULES) -> PartitionSpec:
    return PartitionSpec(*(rules[a] for a in axes))


def _leaf_name(path: tuple[Any, ...]) -> str:
    return path[-1].key


def param_specs(params: Any, layout: Layout = Layout.MEGATRON) -> Any:
    """A PartitionSpec per parameter leaf, from the tables (works on arrays or ShapeDtypeStructs)."""
    rules = PARAM_RULES[layout]
    return jax.tree_util.tree_map_with_path(lambda p, x: spec_for(param_axes(_leaf_name(p), x.ndim), rules), params)


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
    1/``size`` of every ``mp`` dimension (and, in the FSDP layout, 1/``dp_size`` of every dim it splits over dp).
    Global view (single, pjit): ``axis`` is None, parameters are whole, collectives are the identity, and under
    pjit ``mesh`` turns ``constrain`` into sharding constraints.
    """

    axis: str | None = None
    size: int = 1
    mesh: jax.sharding.Mesh | None = None
    layout: Layout = Layout.MEGATRON
    dp_size: int = 1  # local view: the dp axis's size, by which the FSDP layout splits parameters

    def local_shape(self, axes: tuple[str, ...], global_shape: tuple[int, ...]) -> tuple[int, ...]:
        """A parameter's shape as this view holds it."""
        rules, split = PARAM_RULES[self.layout], {MP: self.size, DP: self.dp_size}
        return tuple(n // split.get(rules[a], 1) for a, n in zip(axes, global_shape))

    def gather(self, x: jnp.ndarray, axes: tuple[str, ...]) -> jnp.ndarray:
        """A parameter as a layer reads it: with FSDP's dp-split dims gathered (see the module docstring)."""
        if self.layout is Layout.MEGATRON:
            return x
        if self.axis is None:
            return self.constrain(x, axes)
        for dim, a in enumerate(axes):
            if PARAM_RULES[self.layout][a] == DP:
                x = jax.lax.all_gather(x, DP, axis=dim, tiled=True)
        return x

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
