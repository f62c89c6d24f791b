"""The KV cache a decode step reads and appends to: every layer's keys and values, and the next position.

Shapes (model.gptj's letters; C the cache length, the longest context it can hold): k, v are tuples of L arrays
[B, C, H, K], one per layer, [B, C, H, K] alone in one layer's view as the block sees it; ``pos`` a scalar int32, the
position the next token takes. A layer's own arrays, not slices of one [L, ...] array: a decode step donates the
cache and each layer writes its position in place (``jax.lax.dynamic_update_slice``), and attention reads the array
itself, where a slice of a stacked cache is copied out for every layer at every step. In the local view (shard_map,
xmap) B and H are the shard's, as the attention's heads already are: ``model.sharding.CACHE_AXES`` names the dims,
``MESH_RULES`` maps them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class KVCache:
    k: Any  # L x [B, C, H, K] (one layer's: [B, C, H, K])
    v: Any
    pos: jnp.ndarray  # [] int32: positions 0 .. pos-1 are filled

    @classmethod
    def zeros(cls, layers: int, shape: tuple[int, ...], dtype: Any) -> KVCache:
        """An empty cache of ``layers`` layers, each k and v of ``shape``."""
        zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(layers))  # noqa: E731
        return cls(zeros(), zeros(), jnp.zeros((), jnp.int32))

    def of_layer(self, layer: int) -> KVCache:
        """One layer's view: its k and v, the shared position."""
        return KVCache(self.k[layer], self.v[layer], self.pos)

    def with_layers(self, layers: Sequence[KVCache]) -> KVCache:
        """The whole cache from every layer's view, in layer order."""
        return self.replace(k=tuple(c.k for c in layers), v=tuple(c.v for c in layers))

    def write(self, k: jnp.ndarray, v: jnp.ndarray) -> KVCache:
        """One layer's cache with ``k``, ``v`` [B, T, H, K] written at positions pos .. pos+T-1."""
        at = (0, self.pos, 0, 0)
        return self.replace(
            k=jax.lax.dynamic_update_slice(self.k, k.astype(self.k.dtype), at),
            v=jax.lax.dynamic_update_slice(self.v, v.astype(self.v.dtype), at),
        )

    def advance(self, tokens: int) -> KVCache:
        return self.replace(pos=self.pos + tokens)

    def replace(self, **changes: Any) -> KVCache:
        return dataclasses.replace(self, **changes)


jax.tree_util.register_pytree_node(KVCache, lambda c: ((c.k, c.v, c.pos), None), lambda _, children: KVCache(*children))
