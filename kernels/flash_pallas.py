"""FlashAttention's forward as a Pallas kernel; the backward is the blockwise one (``kernels.flash``).

One program per (batch x head, query block): it holds its query block, walks the key blocks at or below the
diagonal with an online softmax in float32, and writes its output block and the rows' logsumexp, which the
blockwise backward reads. BlockSpecs are built by keyword: jax 0.4.30 takes ``BlockSpec(index_map, block_shape)``,
current JAX ``BlockSpec(block_shape, index_map)``. Meant for GPU (Triton) and TPU (Mosaic); on CPU it runs in
Pallas's interpreter, for tests.

Shapes: B batch, T sequence (padded: Tp), H heads, K head dim; Q and S the query and key block sizes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import flash


def _forward_kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, *, block_k: int):
    """q_ref, o_ref: [Q, K]; k_ref, v_ref: [Tp, K] (the whole head); lse_ref: [Q, 1]."""
    block_q, d_head = q_ref.shape
    i = pl.program_id(1)
    q = q_ref[...]

    def key_block(j, carry):
        acc, row_max, row_sum = carry
        k = k_ref[pl.ds(j * block_k, block_k), :]
        s = jnp.dot(q, k.T, preferred_element_type=jnp.float32) / math.sqrt(d_head)  # [Q, S]
        # 2-D iotas, the form JAX's own TPU kernels use
        q_pos = i * block_q + lax.broadcasted_iota(jnp.int32, s.shape, 0)
        k_pos = j * block_k + lax.broadcasted_iota(jnp.int32, s.shape, 1)
        s = jnp.where(q_pos >= k_pos, s, flash.MASK_VALUE)
        new_max = jnp.maximum(row_max, s.max(axis=-1))
        correction = jnp.exp(row_max - new_max)
        p = jnp.exp(s - new_max[:, None])
        v = v_ref[pl.ds(j * block_k, block_k), :]
        pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc * correction[:, None] + pv, new_max, row_sum * correction + p.sum(axis=-1)

    init = (
        jnp.zeros((block_q, d_head), jnp.float32),
        jnp.full((block_q,), -jnp.inf, jnp.float32),  # key block 0 is seen by every row
        jnp.zeros((block_q,), jnp.float32),
    )
    seen = ((i + 1) * block_q + block_k - 1) // block_k  # key blocks above the diagonal are never loaded
    acc, row_max, row_sum = lax.fori_loop(0, seen, key_block, init)
    o_ref[...] = (acc / row_sum[:, None]).astype(o_ref.dtype)
    lse_ref[...] = (row_max + jnp.log(row_sum))[:, None]


def block_pairs(seq: int, block_q: int, block_k: int) -> int:
    """(query block, key block) pairs the causal loops visit over a padded sequence of ``seq``: each query block i
    its key blocks at or below the diagonal."""
    return sum(((i + 1) * block_q + block_k - 1) // block_k for i in range(seq // block_q))


def forward_cost(q: jnp.ndarray, block_q: int, block_k: int):
    """The kernel's work, for the TPU compiler's cost analysis (which cannot see inside a Mosaic call): per block
    pair two [Q, K] x [K, S] products and Q x S exponentials, and every input and output read or written once (a
    head's k and v stay resident over its query blocks). None where this Pallas has no CostEstimate (jax 0.4.30,
    where the kernel runs interpreted only)."""
    if not hasattr(pl, "CostEstimate"):
        return None
    batch, heads, seq, d_head = q.shape
    pairs = block_pairs(seq, block_q, block_k) * batch * heads
    io_bytes = 4 * q.size * q.dtype.itemsize + batch * heads * seq * 4  # q, k, v, out; the f32 logsumexp
    return pl.CostEstimate(
        flops=pairs * 4 * block_q * block_k * d_head,
        transcendentals=pairs * (block_q * block_k + block_q),
        bytes_accessed=io_bytes,
    )


def pallas_forward(
    q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, block_q: int, block_k: int, unroll: bool, *, interpret: bool
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Padded q, k, v [B, H, Tp, K] -> (out [B, H, Tp, K], logsumexp [B, H, Tp] float32), as ``flash``'s.

    ``unroll`` (the compiles whose cost analysis is read, kernels.flash): the kernel's loop is Mosaic's, which XLA
    never sees, so instead the call states its work (``forward_cost``); its program is otherwise the same."""
    batch, heads, seq, d_head = q.shape
    cost = {"cost_estimate": forward_cost(q, block_q, block_k)} if unroll and not interpret else {}

    def flat(x):  # [B, H, Tp, K] -> [B*H, Tp, K]
        return x.reshape(batch * heads, seq, d_head)

    query_spec = pl.BlockSpec(block_shape=(None, block_q, d_head), index_map=lambda bh, i: (bh, i, 0))
    head_spec = pl.BlockSpec(block_shape=(None, seq, d_head), index_map=lambda bh, i: (bh, 0, 0))
    out, lse = pl.pallas_call(
        functools.partial(_forward_kernel, block_k=block_k),
        out_shape=(
            jax.ShapeDtypeStruct((batch * heads, seq, d_head), q.dtype),
            # [B*H, Tp, 1]: Mosaic (TPU) takes a block whose last two dimensions are multiples of (8, 128) or the
            # array's own; a [B*H, Tp] array's (squeezed B*H, Q) block is neither, (Q, 1) of [Tp, 1] is. A column:
            # the rows' statistics are one per sublane already (a [1, Q] row needs a sublane gather, which v3 lacks)
            jax.ShapeDtypeStruct((batch * heads, seq, 1), jnp.float32),
        ),
        grid=(batch * heads, seq // block_q),
        in_specs=[query_spec, head_spec, head_spec],
        out_specs=[query_spec, pl.BlockSpec(block_shape=(None, block_q, 1), index_map=lambda bh, i: (bh, i, 0))],
        interpret=interpret,
        name="gptj_flash_forward",
        **cost,
    )(flat(q), flat(k), flat(v))
    return out.reshape(q.shape), lse.reshape(batch, heads, seq)


_interpreted_forward = functools.partial(pallas_forward, interpret=True)
_compiled_forward = functools.partial(pallas_forward, interpret=False)


def pallas_attention(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    *,
    block_q: int,
    block_k: int,
    interpret: bool = False,
    unroll: bool = False,
) -> jnp.ndarray:
    """q, k, v: [B, T, H, K] -> [B, T, H, K]. Blocks are clipped to T rounded up to a power of two (Triton's
    block shapes must be powers of two); T is padded to a multiple of both. ``unroll``: the backward's block loops
    in Python and the forward's cost stated (``pallas_forward``), for cost analysis."""
    seq = q.shape[1]
    block_q, block_k = (min(b, pl.next_power_of_2(seq)) for b in (block_q, block_k))
    q, k, v = (flash.pad_to_blocks(flash.by_head(x), math.lcm(block_q, block_k)) for x in (q, k, v))
    forward = _interpreted_forward if interpret else _compiled_forward
    return flash.by_head(flash.flash_attention(q, k, v, block_q, block_k, forward, unroll)[:, :, :seq])
