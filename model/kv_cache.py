"""The KV cache a decode step reads and appends to: every layer's keys and values, and the next position.

Shapes (model.gptj's letters; C the cache length, the longest context it can hold): k, v [L, B, C, H, K] for the
whole stack, [B, C, H, K] for one layer as the block sees it; ``pos`` a scalar int32, the position the next token
takes. In the local view (shard_map, xmap) B and H are the shard's, as the attention's heads already are:
``model.sharding.CACHE_AXES`` names the dims, ``MESH_RULES`` maps them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class KVCache:
    k: jnp.ndarray  # [L, B, C, H, K] (one layer's: [B, C, H, K])
    v: jnp.ndarray
    pos: jnp.ndarray  # [] int32: positions 0 .. pos-1 are filled

    @classmethod
    def zeros(cls, layers: int, batch: int, length: int, heads: int, d_head: int, dtype: Any) -> KVCache:
        shape = (layers, batch, length, heads, d_head)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.k.shape[-3]

    def of_layer(self, k: jnp.ndarray, v: jnp.ndarray) -> KVCache:
        """One layer's view: its slices of k and v, the shared position."""
        return KVCache(k, v, self.pos)

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
