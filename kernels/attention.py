"""Causal multi-head attention: the reference and the kernels that replace it, one closed choice
(``kernels.choice.AttentionKernel``; a variant name's ``+kernel`` suffix picks one, see ``model.config``).

Every kernel takes q, k, v [B, T, H, K] and returns [B, T, H, K] with the reference's semantics: scores scaled
by 1/sqrt(K), softmax in float32 whatever the compute dtype, position t attends to positions 0..t.

- ``reference``: einsum, float32 softmax, masked positions set to the float32 minimum (as Hugging Face
  ``modeling_gptj.py`` ``_attn``). Materialises the [B, H, T, T] scores, and keeps them for the backward.
- ``xla`` / ``cudnn``: ``jax.nn.dot_product_attention(..., is_causal=True, implementation=...)``.
- ``blockwise``: FlashAttention in plain JAX (``kernels.flash``), memory linear in T, forward and backward.
- ``pallas``: the same algorithm's forward as a Pallas kernel (``kernels.flash_pallas``), blockwise backward.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels import flash, flash_pallas
from kernels.choice import AttentionKernel

DEFAULT_BLOCK_Q = 128
DEFAULT_BLOCK_K = 128


def causal_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """q, k, v: [B, T, H, K] -> [B, T, H, K]."""
    seq, d_head = q.shape[1], q.shape[-1]
    scores = jnp.einsum("bthk,bshk->bhts", q, k, preferred_element_type=jnp.float32)  # [B, H, T, T]
    scores = scores / np.sqrt(d_head).astype(np.float32)
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshk->bthk", weights, v)


def cached_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, pos: jnp.ndarray) -> jnp.ndarray:
    """Decoding's attention: q [B, T, H, K] of positions pos .. pos+T-1 over a cache k, v [B, C, H, K] whose
    positions 0 .. pos+T-1 are filled; query t sees keys 0 .. pos+t. The reference's arithmetic (f32 scores, the
    same masking value), so each position's output equals the full sequence's."""
    d_head = q.shape[-1]
    scores = jnp.einsum("bthk,bshk->bhts", q, k, preferred_element_type=jnp.float32)  # [B, H, T, C]
    scores = scores / np.sqrt(d_head).astype(np.float32)
    visible = jnp.arange(k.shape[1])[None, :] <= pos + jnp.arange(q.shape[1])[:, None]  # [T, C]
    scores = jnp.where(visible, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhts,bshk->bthk", weights, v)


def dot_product_attention_has_implementation() -> bool:
    """Whether this JAX's ``jax.nn.dot_product_attention`` takes ``implementation`` (absent from jax 0.4.30)."""
    dpa = getattr(jax.nn, "dot_product_attention", None)
    return dpa is not None and "implementation" in inspect.signature(dpa).parameters


def _platform_family(platform: str) -> str:
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def check_kernel_supported(
    kernel: AttentionKernel, platform: str, jax_has_dpa_implementation: bool, *, interpret: bool = False
) -> str | None:
    """None if ``kernel`` runs on ``platform`` ("cpu", "gpu", "tpu") with this JAX, else a one-line refusal.

    ``interpret`` says a Pallas kernel will run in Pallas's interpreter (correctness tests on CPU).
    """
    platform = _platform_family(platform)
    # the platform first: off GPU, cudnn is refused on every JAX, and the message says where it runs
    if kernel is AttentionKernel.cudnn and platform != "gpu":
        return f"attention kernel 'cudnn' runs on GPU only (through cuDNN), not on {platform}"
    if kernel in (AttentionKernel.xla, AttentionKernel.cudnn) and not jax_has_dpa_implementation:
        return (
            f"attention kernel {kernel.value!r} needs jax.nn.dot_product_attention(implementation=...), "
            f"which this JAX ({jax.__version__}) lacks"
        )
    if kernel is AttentionKernel.pallas and platform not in ("gpu", "tpu") and not interpret:
        return f"attention kernel 'pallas' runs on GPU and TPU; on {platform} only with interpret=True (tests)"
    return None


def _dot_product_attention(implementation: str) -> Callable[..., jnp.ndarray]:
    def run(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
        if not dot_product_attention_has_implementation():
            raise NotImplementedError(check_kernel_supported(AttentionKernel(implementation), "gpu", False))
        # layout [B, T, N, H] in JAX's letters is our [B, T, H, K]; scale defaults to 1/sqrt(head dim)
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)

    return run


xla_attention = _dot_product_attention("xla")
cudnn_attention = _dot_product_attention("cudnn")


def attention(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    kernel: AttentionKernel,
    *,
    block_q: int = DEFAULT_BLOCK_Q,
    block_k: int = DEFAULT_BLOCK_K,
    interpret: bool = False,
    unroll_blocks: bool = False,
) -> jnp.ndarray:
    """Causal attention by ``kernel``. q, k, v: [B, T, H, K] -> [B, T, H, K].

    Blocks apply to ``blockwise`` and ``pallas`` (clipped to the sequence; T need not be a multiple of them), and so
    does ``unroll_blocks``: the same computation with its block loops written out, for XLA's cost analysis
    (kernels.flash); ``interpret`` to ``pallas`` only. Check the kernel with ``check_kernel_supported`` before tracing.
    """
    match kernel:
        case AttentionKernel.reference:
            return causal_attention(q, k, v)
        case AttentionKernel.xla:
            return xla_attention(q, k, v)
        case AttentionKernel.cudnn:
            return cudnn_attention(q, k, v)
        case AttentionKernel.blockwise:
            return flash.blockwise_attention(q, k, v, block_q=block_q, block_k=block_k, unroll=unroll_blocks)
        case AttentionKernel.pallas:
            return flash_pallas.pallas_attention(
                q, k, v, block_q=block_q, block_k=block_k, interpret=interpret, unroll=unroll_blocks
            )
    raise AssertionError(kernel)
