"""Rotary position embedding, GPT-J's "rotate every two" form (reference implementation).

GPT-J rotates the first ``rotary_dim`` (64) dims of each head, pairing (0,1), (2,3), ...; pair i turns by
angle ``position * inv_freq[i]`` with ``inv_freq[i] = 1 / 10000^(2i / rotary_dim)``. The remaining dims pass
through. Source: mesh-transformer-jax ``fixed_pos_embedding`` / ``apply_rotary_pos_emb`` and Hugging Face
``modeling_gptj.py`` (``rotate_every_two``, ``repeat_interleave`` of sin and cos).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def sin_cos(seq: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Angles per position and pair, each repeated for both members of its pair: two [T, rotary_dim] arrays."""
    inv_freq = 1.0 / (10000 ** (np.arange(0, rotary_dim, 2) / rotary_dim))  # [rotary_dim/2]
    angles = np.arange(seq)[:, None] * inv_freq[None, :]  # [T, rotary_dim/2]
    angles = np.repeat(angles, 2, axis=-1)  # [T, rotary_dim]: (a0, a0, a1, a1, ...)
    return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def rotate_every_two(x: jnp.ndarray) -> jnp.ndarray:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) along the last axis."""
    evens, odds = x[..., ::2], x[..., 1::2]
    return jnp.stack((-odds, evens), axis=-1).reshape(x.shape)


def apply_rotary(x: jnp.ndarray, rotary_dim: int) -> jnp.ndarray:
    """Rotate the first ``rotary_dim`` dims of every head. x: [B, T, H, K]."""
    seq = x.shape[1]
    sin, cos = sin_cos(seq, rotary_dim)
    sin = jnp.asarray(sin, x.dtype)[None, :, None, :]  # [1, T, 1, R]
    cos = jnp.asarray(cos, x.dtype)[None, :, None, :]
    rot, passthrough = x[..., :rotary_dim], x[..., rotary_dim:]
    rot = rot * cos + rotate_every_two(rot) * sin
    return jnp.concatenate((rot, passthrough), axis=-1)
