"""FlashAttention in plain JAX: causal attention whose memory grows linearly in T, forward and backward.

The forward walks query blocks (``lax.scan``) and, for each, the key blocks at or below the diagonal
(``lax.fori_loop`` with a bound that depends on the query block, so blocks entirely above the diagonal are never
computed), keeping a running max and sum in float32 (the online softmax of FlashAttention, Dao et al. 2022,
arXiv:2205.14135). It saves only the output and the logsumexp per row.

The backward is FlashAttention-2's (Dao 2023, arXiv:2307.08691, Algorithm 2): it recomputes each block's scores
from q, k and the saved logsumexp: one pass over key blocks (``lax.scan``), each walking the query blocks that
see it (again skipping those entirely above the diagonal).

With ``unroll`` the same loops run in Python instead (block indices are then Python ints, each query block visiting
exactly its causal key blocks): the program holds every block pair once, which XLA's cost analysis needs, since it
prices a loop body once whatever its trip count. It is the same computation, block for block and in the same order,
for the compiles whose cost analysis is read (bench.tpu_aot.compile.unrolled); every other program keeps the loops.

T is padded to a multiple of both blocks. Causality masks the padding for free: padded keys sit after every
real query, and padded queries get a zero cotangent, so they add nothing to any gradient.

Inside, arrays are [B, H, T, K], each head's sequence contiguous, so every block product is a plain batched
matmul. Shapes: B batch, T sequence (padded: Tp), H heads, K head dim; Q and S the query and key block sizes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

MASK_VALUE = float(jnp.finfo(jnp.float32).min)  # as the reference: a masked score's weight is exactly 0
# Named scopes of the two halves of attention, as bench.analysis.components reads them from the HLO's op names:
# the scores with their mask, softmax and gradients, and the weights-times-values product with its gradients.
SCORES, VALUES = "attn_scores", "attn_values"


def pad_to_blocks(x: jnp.ndarray, multiple: int) -> jnp.ndarray:
    """x: [B, H, T, K] -> [B, H, Tp, K] with zeros after T, Tp the next multiple of ``multiple``."""
    extra = -x.shape[2] % multiple
    return jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0))) if extra else x


def _block(x: jnp.ndarray, index: jnp.ndarray, size: int) -> jnp.ndarray:
    """Block ``index`` of ``size`` positions along T: [B, H, Tp, ...] -> [B, H, size, ...]."""
    return lax.dynamic_slice_in_dim(x, index * size, size, axis=2)


def _scores(q_blk: jnp.ndarray, k_blk: jnp.ndarray, i: jnp.ndarray, j: jnp.ndarray) -> jnp.ndarray:
    """Scaled, causally masked scores of query block i against key block j: [B, H, Q, S] float32."""
    block_q, block_k, d_head = q_blk.shape[2], k_blk.shape[2], q_blk.shape[-1]
    with jax.named_scope(SCORES):
        s = jnp.einsum("bhqk,bhsk->bhqs", q_blk, k_blk, preferred_element_type=jnp.float32) / math.sqrt(d_head)
        q_pos = i * block_q + jnp.arange(block_q)
        k_pos = j * block_k + jnp.arange(block_k)
        return jnp.where(q_pos[:, None] >= k_pos[None, :], s, MASK_VALUE)


def _key_blocks_seen(i: jnp.ndarray, block_q: int, block_k: int) -> jnp.ndarray:
    """How many key blocks query block i sees: those holding a position <= its last row."""
    return ((i + 1) * block_q + block_k - 1) // block_k


def _fori_loop(lower, upper, body: Callable, init, unroll: bool):
    """``lax.fori_loop``, or with ``unroll`` (Python int bounds) the same iterations written out in Python."""
    if not unroll:
        return lax.fori_loop(lower, upper, body, init)
    carry = init
    for index in range(lower, upper):
        carry = body(index, carry)
    return carry


def _scan_blocks(body: Callable, init, length: int, unroll: bool):
    """``lax.scan`` of ``body`` over block indices 0..length-1, or with ``unroll`` the same in Python, the outputs
    stacked as a scan stacks them."""
    if not unroll:
        return lax.scan(body, init, jnp.arange(length))
    carry, outputs = init, []
    for index in range(length):
        carry, output = body(carry, index)
        outputs.append(output)
    return carry, jax.tree.map(lambda *blocks: jnp.stack(blocks), *outputs)


def _unblock(blocks: jnp.ndarray, dtype) -> jnp.ndarray:
    """Blocks stacked by a scan, [n, B, H, blk, ...] -> [B, H, n * blk, ...]."""
    n, batch, heads, size, *rest = blocks.shape
    return jnp.moveaxis(blocks, 0, 2).reshape(batch, heads, n * size, *rest).astype(dtype)


def blockwise_forward(
    q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, block_q: int, block_k: int, unroll: bool = False
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Padded q, k, v [B, H, Tp, K] -> (out [B, H, Tp, K], logsumexp [B, H, Tp] float32); ``unroll``: the block
    loops in Python (module docstring)."""
    batch, heads, seq, d_head = q.shape

    def query_block(_, i):
        q_blk = _block(q, i, block_q)

        def key_block(j, carry):
            acc, row_max, row_sum = carry
            s = _scores(q_blk, _block(k, j, block_k), i, j)
            with jax.named_scope(SCORES):  # the online softmax
                new_max = jnp.maximum(row_max, s.max(axis=-1))
                correction = jnp.exp(row_max - new_max)
                p = jnp.exp(s - new_max[..., None])
            with jax.named_scope(VALUES):
                v_blk = _block(v, j, block_k)
                pv = jnp.einsum("bhqs,bhsk->bhqk", p.astype(v.dtype), v_blk, preferred_element_type=jnp.float32)
                return acc * correction[..., None] + pv, new_max, row_sum * correction + p.sum(axis=-1)

        init = (
            jnp.zeros((batch, heads, block_q, d_head), jnp.float32),
            jnp.full((batch, heads, block_q), -jnp.inf, jnp.float32),  # key block 0 is seen by every row
            jnp.zeros((batch, heads, block_q), jnp.float32),
        )
        acc, row_max, row_sum = _fori_loop(0, _key_blocks_seen(i, block_q, block_k), key_block, init, unroll)
        return None, (acc / row_sum[..., None], row_max + jnp.log(row_sum))

    _, (out, lse) = _scan_blocks(query_block, None, seq // block_q, unroll)  # [nQ, B, H, Q, K], [nQ, B, H, Q]
    return _unblock(out, q.dtype), _unblock(lse, jnp.float32)


def blockwise_backward(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    out: jnp.ndarray,
    lse: jnp.ndarray,
    d_out: jnp.ndarray,
    block_q: int,
    block_k: int,
    unroll: bool = False,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Gradients of padded q, k, v [B, H, Tp, K] from the output, its logsumexp and the output's cotangent;
    ``unroll``: the block loops in Python (module docstring).

    One pass over key blocks: each accumulates its own dk and dv over the query blocks that see it, and adds its
    share of dq into a [B, H, Tp, K] float32 carry (FlashAttention-2's Algorithm 2, dq kept in memory, not atomics).
    """
    seq, d_head = q.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(d_head)
    # D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the softmax backward's subtrahend
    with jax.named_scope(SCORES):
        delta = jnp.einsum("bhtk,bhtk->bht", d_out, out, preferred_element_type=jnp.float32)

    def key_block(dq, j):
        k_blk, v_blk = _block(k, j, block_k), _block(v, j, block_k)

        def query_block(i, carry):
            dk, dv, dq = carry
            q_blk, do_blk = _block(q, i, block_q), _block(d_out, i, block_q)
            with jax.named_scope(SCORES):
                p = jnp.exp(_scores(q_blk, k_blk, i, j) - _block(lse, i, block_q)[..., None])  # [B, H, Q, S]
            with jax.named_scope(VALUES):  # the backward of the weights-times-values product
                dp = jnp.einsum("bhqk,bhsk->bhqs", do_blk, v_blk, preferred_element_type=jnp.float32)
                dv = dv + jnp.einsum("bhqs,bhqk->bhsk", p, do_blk.astype(jnp.float32))
            with jax.named_scope(SCORES):  # the softmax's backward and the scores' q, k gradients
                ds = p * (dp - _block(delta, i, block_q)[..., None]) * scale
                dq_blk = _dq_block(dq, i, block_q) + jnp.einsum("bhqs,bhsk->bhqk", ds, k_blk.astype(jnp.float32))
                dq = _with_dq_block(dq, i, dq_blk, block_q)
                dk = dk + jnp.einsum("bhqs,bhqk->bhsk", ds, q_blk.astype(jnp.float32))
            return dk, dv, dq

        zeros = jnp.zeros(k_blk.shape, jnp.float32)
        first = (j * block_k) // block_q  # query blocks before it lie entirely above the diagonal
        dk, dv, dq = _fori_loop(first, seq // block_q, query_block, (zeros, zeros, dq), unroll)
        return dq, (dk, dv)

    if unroll:  # a block apiece, as a loop updates its carry in place (an update of the whole carry costs it whole)
        dq = tuple(jnp.zeros((*q.shape[:2], block_q, d_head), jnp.float32) for _ in range(seq // block_q))
    else:
        dq = jnp.zeros(q.shape, jnp.float32)
    dq, (dk, dv) = _scan_blocks(key_block, dq, seq // block_k, unroll)
    dq = jnp.concatenate(dq, axis=2) if unroll else dq
    return dq.astype(q.dtype), _unblock(dk, k.dtype), _unblock(dv, v.dtype)


def _dq_block(dq: jnp.ndarray | tuple[jnp.ndarray, ...], i, block_q: int) -> jnp.ndarray:
    """Query block i's running dq: a block of the [B, H, Tp, K] carry, or with unrolled loops its own [B, H, Q, K]."""
    return dq[i] if isinstance(dq, tuple) else _block(dq, i, block_q)


def _with_dq_block(dq: jnp.ndarray | tuple[jnp.ndarray, ...], i, block: jnp.ndarray, block_q: int):
    """dq with query block i's running sum replaced by ``block``."""
    if isinstance(dq, tuple):
        return (*dq[:i], block, *dq[i + 1 :])
    return lax.dynamic_update_slice_in_dim(dq, block, i * block_q, axis=2)


# (q, k, v, block_q, block_k, unroll) -> (out, logsumexp), as blockwise_forward
Forward = Callable[[jnp.ndarray, jnp.ndarray, jnp.ndarray, int, int, bool], tuple[jnp.ndarray, jnp.ndarray]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def flash_attention(
    q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, block_q: int, block_k: int, forward: Forward, unroll: bool
) -> jnp.ndarray:
    """Padded q, k, v [B, H, Tp, K] -> [B, H, Tp, K] by ``forward``, with the blockwise backward; ``unroll``: the
    block loops in Python (module docstring)."""
    return forward(q, k, v, block_q, block_k, unroll)[0]


def _flash_fwd(q, k, v, block_q, block_k, forward, unroll):
    out, lse = forward(q, k, v, block_q, block_k, unroll)
    return out, (q, k, v, out, lse)


def _flash_bwd(block_q, block_k, forward, unroll, residuals, d_out):
    return blockwise_backward(*residuals, d_out, block_q, block_k, unroll)


flash_attention.defvjp(_flash_fwd, _flash_bwd)


def by_head(x: jnp.ndarray) -> jnp.ndarray:
    """[B, T, H, K] <-> [B, H, T, K]: the kernels keep each head's sequence contiguous."""
    return x.transpose(0, 2, 1, 3)


def blockwise_attention(
    q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, *, block_q: int, block_k: int, unroll: bool = False
) -> jnp.ndarray:
    """q, k, v: [B, T, H, K] -> [B, T, H, K]; blocks are clipped to T, and T padded to a multiple of both;
    ``unroll``: the block loops in Python (module docstring)."""
    seq = q.shape[1]
    block_q, block_k = min(block_q, seq), min(block_k, seq)
    q, k, v = (pad_to_blocks(by_head(x), math.lcm(block_q, block_k)) for x in (q, k, v))
    return by_head(flash_attention(q, k, v, block_q, block_k, blockwise_forward, unroll)[:, :, :seq])
