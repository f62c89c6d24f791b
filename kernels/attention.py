"""Causal multi-head attention, reference implementation.

Softmax in float32 whatever the compute dtype, scores scaled by 1/sqrt(d_head), masked positions set to the
float32 minimum (as Hugging Face ``modeling_gptj.py`` ``_attn``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def causal_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """q, k, v: [B, T, H, K] -> [B, T, H, K]."""
    seq, d_head = q.shape[1], q.shape[-1]
    scores = jnp.einsum("bthk,bshk->bhts", q, k, preferred_element_type=jnp.float32)  # [B, H, T, T]
    scores = scores / np.sqrt(d_head).astype(np.float32)
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshk->bthk", weights, v)
