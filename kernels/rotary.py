"""Rotary position embedding, GPT-J's "rotate every two" form: the reference and two fast forms.

GPT-J rotates the first ``rotary_dim`` (64) dims of each head, pairing (0,1), (2,3), ...; pair i turns by
angle ``position * inv_freq[i]`` with ``inv_freq[i] = 1 / 10000^(2i / rotary_dim)``. The remaining dims pass
through. Source: mesh-transformer-jax ``fixed_pos_embedding`` / ``apply_rotary_pos_emb`` and Hugging Face
``modeling_gptj.py`` (``rotate_every_two``, ``repeat_interleave`` of sin and cos).
"""

from __future__ import annotations

import functools

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


# The fast forms: one multiply-add per element, with the sign of the rotation folded into a sin table built once
# per shape (read-only, cached), so no negation or table work happens per step.
#
# ``apply_rotary_fast`` keeps GPT-J's layout; the partner of dim 2i is 2i+1, reached by a reshape and a flip.
# ``apply_rotary_half_split`` goes further: permuting each head's rotary dims to (0, 2, 4, ..., 1, 3, 5, ...)
# turns GPT-J's pairs into halves, partner one half away, a swap of two contiguous halves with no strided access.
# Attention only sees q . k, unchanged when q and k have their head dims permuted alike, so that permutation is
# applied once, to the columns of the q and k projections, and never at run time.


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=32)
def signed_sin_cos(seq: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """sin with the rotation's sign folded in, and cos, for GPT-J's layout: two [T, rotary_dim] arrays.

    ``rotate_every_two(x) * sin == swap_pairs(x) * signed_sin``: (-x1, x0) * (s, s) == (x1, x0) * (-s, s).
    """
    sin, cos = sin_cos(seq, rotary_dim)
    sin[:, 0::2] *= -1.0
    return _read_only(sin, cos)


def apply_rotary_fast(x: jnp.ndarray, rotary_dim: int) -> jnp.ndarray:
    """``apply_rotary`` with the sign in the table and the pair swap as a flip. x: [B, T, H, K]."""
    sin, cos = signed_sin_cos(x.shape[1], rotary_dim)
    sin = jnp.asarray(sin, x.dtype)[None, :, None, :]  # [1, T, 1, R]
    cos = jnp.asarray(cos, x.dtype)[None, :, None, :]
    rot, passthrough = x[..., :rotary_dim], x[..., rotary_dim:]
    swapped = rot.reshape(*rot.shape[:-1], rotary_dim // 2, 2)[..., ::-1].reshape(rot.shape)  # (x1, x0, x3, x2, ..)
    return jnp.concatenate((rot * cos + swapped * sin, passthrough), axis=-1)


def half_split_permutation(d_head: int, rotary_dim: int) -> np.ndarray:
    """Head-dim order that turns GPT-J's pairs into halves: [d_head] indices, passthrough dims left in place.

    ``x[..., perm]`` of a GPT-J head is the half-split head; apply it to the q and k projection columns per head.
    """
    rotary = np.concatenate((np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2)))
    return np.concatenate((rotary, np.arange(rotary_dim, d_head)))


@functools.lru_cache(maxsize=32)
def half_split_tables(seq: int, rotary_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed sin and cos for the half-split form: two [T, rotary_dim] arrays, the sin's first half negated."""
    sin, cos = sin_cos(seq, rotary_dim)
    perm = half_split_permutation(rotary_dim, rotary_dim)
    sin, cos = sin[:, perm], cos[:, perm]
    sin[:, : rotary_dim // 2] *= -1.0  # out_a = a cos - b sin, out_b = b cos + a sin
    return _read_only(sin, cos)


def apply_rotary_half_split(x: jnp.ndarray, rotary_dim: int) -> jnp.ndarray:
    """GPT-J's rotary on heads already in ``half_split_permutation`` order. x: [B, T, H, K].

    Equals ``apply_rotary(x_gptj, rotary_dim)[..., perm]`` where ``x = x_gptj[..., perm]``.
    """
    sin, cos = half_split_tables(x.shape[1], rotary_dim)
    sin = jnp.asarray(sin, x.dtype)[None, :, None, :]  # [1, T, 1, R]
    cos = jnp.asarray(cos, x.dtype)[None, :, None, :]
    half = rotary_dim // 2
    first, second, passthrough = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
    rot = x[..., :rotary_dim] * cos + jnp.concatenate((second, first), axis=-1) * sin
    return jnp.concatenate((rot, passthrough), axis=-1)


def apply_rotary_at(x: jnp.ndarray, rotary_dim: int, offset: jnp.ndarray | int) -> jnp.ndarray:
    """``apply_rotary`` for positions offset .. offset+T-1 (decoding: ``offset`` is the cache position, traced).
    x: [B, T, H, K]. The angles are computed as ``sin_cos`` computes them, in f32, from traced positions."""
    inv_freq = 1.0 / (10000 ** (np.arange(0, rotary_dim, 2) / rotary_dim))  # [R/2]
    positions = (offset + jnp.arange(x.shape[1])).astype(jnp.float32)  # [T]
    angles = jnp.repeat(positions[:, None] * jnp.asarray(inv_freq, jnp.float32)[None, :], 2, axis=-1)  # [T, R]
    sin = jnp.sin(angles).astype(x.dtype)[None, :, None, :]  # [1, T, 1, R]
    cos = jnp.cos(angles).astype(x.dtype)[None, :, None, :]
    rot, passthrough = x[..., :rotary_dim], x[..., rotary_dim:]
    rot = rot * cos + rotate_every_two(rot) * sin
    return jnp.concatenate((rot, passthrough), axis=-1)
