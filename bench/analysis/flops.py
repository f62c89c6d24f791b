"""FLOP counts for a GPT-J training step, and utilisation against a peak.

Every formula is one function that cites its source and is tested against a hand count (tests/test_flops.py).
Each takes ``tokens`` and returns FLOPs for that many tokens; pass tokens per second to get FLOP/s. With gradient
accumulation a step's tokens are those of every micro-batch (``Preset.tokens_per_step``): each micro-batch runs its
own forward and backward, so the per-token formulas hold unchanged.

Parameter count convention: N is used exactly as the caller passes it, and callers pass the TOTAL parameter count
(input embedding and LM head included). That is GPT-J's convention: its "effective flops" multiply the full
parameter-tree size by 6 (mesh-transformer-jax benchmark.py, ``param_count * 6``), which is how the article's
5.4 PFLOP/s was obtained. PaLM (Chowdhery et al. 2022, appendix B) uses non-embedding N; for GPT-J-6B the embedding
and LM head are about 7% of N, so an MFU quoted on the other convention differs by that much.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class UtilisationError(ValueError):
    """A utilisation above 1.0: the suite miscounted, the hardware did not beat its own peak."""


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def _require_non_negative(**values: float) -> None:
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")


def flops_6n(n_params: int, tokens: float) -> float:
    """GPT-J's "effective flops (not including attn)": 6 N per token.

    Source: mesh-transformer-jax benchmark.py / device_train.py, ``weight_flops * 6`` with
    ``weight_flops = tokens * param_count``; the basis of the GPT-J article's 5.4 PFLOP/s (Komatsuzaki, 2021).
    6 = 2 (forward multiply-add) + 4 (backward: gradients wrt activations and wrt weights), Kaplan et al. 2020 sec 2.1.
    """
    _require_positive(n_params=n_params)
    _require_non_negative(tokens=tokens)
    return 6.0 * n_params * tokens


def attention_forward_flops_per_token(
    n_layers: int, attn_width: int, seq: int, *, local_layers: int = 0, local_window: int = 0
) -> float:
    """Forward attention-score FLOPs per token, full (not causally halved) attention: 4 L (H K) seq.

    Per layer and token, Q K^T is a [H K] x [H K, seq] product (2 H K seq FLOPs) and so is softmax(.) V; the
    heads split the attention width H K between them without changing the total. PaLM appendix B counts the same
    2 x 2 L H Q T forward before multiplying by 3 for training. ``attn_width`` is H K, d_model in GPT-J (and in
    GPT-J's formulas below); MaxText's attention is wider than its d_model (32 x 256 at d_model 5120).

    ``local_layers`` of the L attend over ``local_window`` keys instead of seq (GPT-Neo's local attention, every
    second layer): their products are [H K] x [H K, window], counted in full as the global ones are.
    """
    _require_positive(n_layers=n_layers, attn_width=attn_width, seq=seq)
    _require_non_negative(local_layers=local_layers, local_window=local_window)
    if local_layers > n_layers or (local_layers and not local_window):
        raise ValueError(f"{local_layers} local layers of {n_layers} with window {local_window}")
    keys_per_layer = (n_layers - local_layers) * seq + local_layers * min(local_window, seq)
    return 4.0 * attn_width * keys_per_layer


def model_flops(
    n_params: int,
    n_layers: int,
    attn_width: int,
    seq: int,
    tokens: float,
    *,
    local_layers: int = 0,
    local_window: int = 0,
) -> float:
    """Model FLOPs of training: (6 N + 12 L (H K) seq) per token.

    Source: Chowdhery et al. 2022 (PaLM), appendix B, "6N + 12LHQT" with H Q = ``attn_width`` and T = seq;
    attention is counted in full, not halved for the causal mask. Recomputation is excluded by definition (that is
    HFU). With tied embeddings N counts the one table once, as MaxText's 6N does (its calculate_tflops counts the
    embedding's 2 d_model V per token once, as the LM head's product). Local layers: see
    ``attention_forward_flops_per_token``.
    """
    _require_positive(n_params=n_params)
    _require_non_negative(tokens=tokens)
    local = dict(local_layers=local_layers, local_window=local_window)
    # forward 1x + backward 2x of the attention products, as of the weight products (2N + 4N)
    per_token = 6.0 * n_params + 3.0 * attention_forward_flops_per_token(n_layers, attn_width, seq, **local)
    return per_token * tokens


def hardware_flops(
    n_params: int,
    n_layers: int,
    attn_width: int,
    seq: int,
    tokens: float,
    remat: bool,
    *,
    local_layers: int = 0,
    local_window: int = 0,
) -> float:
    """Hardware FLOPs of training: model FLOPs plus what rematerialisation recomputes.

    Full remat (``jax.checkpoint`` around every block, GPT-J's setting) reruns one forward pass in the backward
    pass: + (2 N + 4 L d_model seq) per token, so (8 N + 16 L d_model seq) in all. That is the formula of
    mesh-transformer-jax benchmark.py's "MXU flops" (``weight_flops * 8 + attn_flops``, ``attn_flops`` =
    16 L d_model seq per token); GPT-J's article quotes 8.1 PFLOP/s on this basis, a figure reproduced only with
    that script's hard-coded L=32, d_model=5120 rather than GPT-J's 28 x 4096 (bench/baseline.py). Without remat
    this equals ``model_flops``. d_model here is ``attn_width`` (H K), as in ``model_flops``.
    """
    local = dict(local_layers=local_layers, local_window=local_window)
    total = model_flops(n_params, n_layers, attn_width, seq, tokens, **local)
    if remat:
        total += (2.0 * n_params + attention_forward_flops_per_token(n_layers, attn_width, seq, **local)) * tokens
    return total


def gptj_param_count(
    n_layers: int,
    d_model: int,
    d_ff: int,
    n_vocab: int,
    *,
    attn_width: int | None = None,
    tied_embeddings: bool = False,
) -> int:
    """Parameters of GPT-J in the Hugging Face layout (transformers ``GPTJForCausalLM``).

    Per block: ln_1 scale+bias (2 d), q/k/v/out projections without bias (4 d^2), fc_in d x d_ff + bias d_ff,
    fc_out d_ff x d + bias d. Plus the input embedding V x d, ln_f (2 d) and the LM head d x V with bias V.
    GPT-J-6B (28, 4096, 16384, 50400) gives 6,050,882,784; the GPT-J README states 6,053,381,344 for its own layout.

    ``attn_width`` (H K, default d_model): the projections are then 4 d H K. ``tied_embeddings``: no LM head of its
    own, neither weight nor bias (the table serves both ends, MaxText's logits_via_embedding), so the table is
    counted once.
    """
    attn_width = d_model if attn_width is None else attn_width
    _require_positive(n_layers=n_layers, d_model=d_model, d_ff=d_ff, n_vocab=n_vocab, attn_width=attn_width)
    per_block = 2 * d_model + 4 * d_model * attn_width + (d_model * d_ff + d_ff) + (d_ff * d_model + d_model)
    embedding = n_vocab * d_model
    final_norm = 2 * d_model
    lm_head = 0 if tied_embeddings else d_model * n_vocab + n_vocab
    return n_layers * per_block + embedding + final_norm + lm_head


def _utilisation(
    kind: str, flops_per_s: float, devices: int, peak_flops_per_s_per_device: float | None, peak_source: str | None
) -> float | None:
    if peak_flops_per_s_per_device is None:
        return None  # no known peak (unknown device kind): the caller warns, we never invent one
    _require_positive(devices=devices, peak_flops_per_s_per_device=peak_flops_per_s_per_device)
    _require_non_negative(flops_per_s=flops_per_s)
    utilisation = flops_per_s / (devices * peak_flops_per_s_per_device)
    if utilisation > 1.0:
        source = f" (peak source: {peak_source})" if peak_source else ""
        raise UtilisationError(
            f"{kind} = {utilisation:.3f} > 1: {flops_per_s:.4g} FLOP/s exceeds {devices} devices x "
            f"{peak_flops_per_s_per_device:.4g} FLOP/s{source}. This is a bug in the suite, not a result: tokens were "
            f"counted more than once (e.g. a global batch counted per device) or the peak is wrong for this device."
        )
    return utilisation


def mfu(
    model_flops_per_s_total: float,
    devices: int,
    peak_flops_per_s_per_device: float | None,
    *,
    peak_source: str | None = None,
) -> float | None:
    """Model FLOPs utilisation (PaLM appendix B): model FLOP/s over the devices' summed peak.

    None when the peak is unknown. Raises ``UtilisationError`` above 1.0.
    """
    return _utilisation("MFU", model_flops_per_s_total, devices, peak_flops_per_s_per_device, peak_source)


def hfu(
    hardware_flops_per_s_total: float,
    devices: int,
    peak_flops_per_s_per_device: float | None,
    *,
    peak_source: str | None = None,
) -> float | None:
    """Hardware FLOPs utilisation: like ``mfu`` but counting recomputation (``hardware_flops``)."""
    return _utilisation("HFU", hardware_flops_per_s_total, devices, peak_flops_per_s_per_device, peak_source)


# XLA's own count. Findings from compiling here (jax 0.10.2 and 0.4.30, CPU; tests/test_flops.py pins them):
# - HloCostAnalysis counts a while-loop body ONCE, whatever the trip count: ``lax.scan`` over L matmuls reports the
#   FLOPs of one matmul (plus a few for the loop counter); the same L matmuls unrolled report L times as many.
#   Use ``scale_loop_flops`` with the body's own count to correct it.
# - ``compiled.cost_analysis()`` describes the partitioned per-device program (a matmul sharded 8 ways reports 1/8 of
#   its FLOPs); ``lowered.cost_analysis()`` describes the global program before partitioning and optimisation.
# - jax 0.10.2 returns a dict; jax 0.4.30 returns a list with one dict from ``compiled.cost_analysis()`` and a
#   dict from ``lowered.cost_analysis()``: ``model.compat.cost_analysis`` makes one dict of either.
# - jax 0.4.30 on CPU rewrites many dots into ``__onednn$matmul`` custom calls, which the cost analysis counts as
#   -1 FLOP each: a single 256^3 matmul reports -1.0, a scan over seven reports +4.0. ``compiled_flops`` refuses
#   such programs; ``lowered.cost_analysis()`` is unaffected.


def xla_flops_total(cost_analysis: Mapping[str, Any] | None) -> float | None:
    """The "flops" entry of one program's cost analysis, or None where XLA gives no usable count.

    Takes the dict that ``model.compat.cost_analysis`` makes of either jax version's answer, or None. A negative
    count is XLA's "unknown cost" and gives None.
    """
    flops = None if cost_analysis is None else cost_analysis.get("flops")
    if flops is None or flops < 0:
        return None
    return float(flops)


def compiled_flops(hlo_text: str, cost_analysis: Mapping[str, Any] | None) -> float | None:
    """Per-device FLOPs of a compiled program (its ``as_text()`` and cost analysis), or None where XLA's count
    leaves matmuls out.

    None when the program holds oneDNN custom calls (jax 0.4.30 on CPU), whose FLOPs XLA does not count.
    While-loop bodies are still counted once (see ``scale_loop_flops``).
    """
    if "__onednn$" in hlo_text:
        return None
    return xla_flops_total(cost_analysis)


def scale_loop_flops(total_flops: float, body_flops: float, trip_count: int) -> float:
    """Correct an XLA count that includes a loop body once: total + body x (trip_count - 1).

    ``body_flops`` is the caller's count of one iteration (e.g. one scanned block, compiled on its own).
    """
    _require_positive(trip_count=trip_count)
    _require_non_negative(body_flops=body_flops)
    if total_flops < body_flops:
        raise ValueError(
            f"total_flops {total_flops:.4g} < body_flops {body_flops:.4g}: the total must already include the body once"
        )
    return total_flops + body_flops * (trip_count - 1)


def xla_to_hardware_flops_ratio(fields: dict[str, Any]) -> float | None:
    """XLA's FLOP count over the analytic hardware FLOPs, both per step; None where XLA gave no count."""
    xla = fields.get("xla_flops_per_step_total")
    return xla / fields["hardware_flops_per_step_total"] if xla else None


# --- the FLOP conventions of published runs ----------------------------------------------------------------------
# A published TFLOP/s or MFU is a tokens/s figure multiplied by the source's own FLOPs per token; dividing by the same
# count gives the tokens/s back (bench/projection/published.py). Each source's count is one function here.


def decoder_param_count(
    n_layers: int, d_model: int, d_ff: int, attention_width: int, vocab: int, tied_embeddings: bool
) -> int:
    """Weight-matrix parameters of a decoder: per layer q/k/v/out (4 d_model A, A = heads x head dim) and the two
    feed-forward matrices (2 d_model d_ff), plus the input embedding V d_model and, untied, the LM head as many.

    Norm scales and biases are left out: they are under 0.05% of every published run's N (GPT-J-6B: 0.04%), below the
    precision the published figures are quoted to. Tied embeddings count once, as a parameter tree counts them
    (MaxText train.py ``calculate_num_params_from_pytree``).
    """
    _require_positive(n_layers=n_layers, d_model=d_model, d_ff=d_ff, attention_width=attention_width, vocab=vocab)
    per_layer = 4 * d_model * attention_width + 2 * d_model * d_ff
    return n_layers * per_layer + vocab * d_model * (1 if tied_embeddings else 2)


def flops_per_token_6n(n_params: int) -> float:
    """``6N``: 6 N per token (Kaplan et al. 2020 sec 2.1; GPT-J's "effective flops", ``flops_6n``); MaxText
    train.py at 281e04bf3: ``per_device_tflops = 6 * num_model_parameters * max_target_length *
    per_device_batch_size / 10**12``."""
    return flops_6n(n_params, 1.0)


def attention_flops_per_token(n_layers: int, n_heads: int, d_head: int, seq: int) -> float:
    """The attention score and value products of training, non-causal: 12 L H Q T per token (PaLM appendix B,
    "6N + 12LHQT"); MaxText train.py at 9bc243c95: ``attention_tflops = 12 * num_heads * num_decoder_layers *
    head_dim * max_target_length**2 * per_device_batch_size``, per sequence, so 12 L H Q T per token."""
    _require_positive(n_layers=n_layers, n_heads=n_heads, d_head=d_head, seq=seq)
    return 12.0 * n_layers * n_heads * d_head * seq


def flops_per_token_6n_attn(n_params: int, n_layers: int, n_heads: int, d_head: int, seq: int) -> float:
    """``6N+attn``: 6 N + 12 L H Q T per token (PaLM appendix B; MaxText train.py at 9bc243c95)."""
    return flops_per_token_6n(n_params) + attention_flops_per_token(n_layers, n_heads, d_head, seq)


def flops_per_token_6n_attn_causal(n_params: int, n_layers: int, n_heads: int, d_head: int, seq: int) -> float:
    """``6N+attn_causal``: 6 N + 6 L H Q T per token, the attention term halved for the causal mask (MaxText
    train.py at 76bd53b0f: ``causal_attention_tflops = noncasual_attention_flops / 2 # due to causality in
    attention``)."""
    return flops_per_token_6n(n_params) + attention_flops_per_token(n_layers, n_heads, d_head, seq) / 2


def flops_per_token_maxtext_calc(
    n_layers: int, d_model: int, d_ff: int, n_heads: int, d_head: int, vocab: int, seq: int, mlp_matrices: int = 2
) -> float:
    """``maxtext_calc``: MaxText's ``calculate_tflops_training_per_device`` (src/maxtext/utils/maxtext_utils.py at
    e591f30cb) per token: 3 x (forward matmuls) with, per layer, the feed-forward 2 d_model d_ff x ``mlp_matrices``
    (2 for one activation, 3 gated), q/k/v 2 d_model 3 H Q, the output projection 2 d_model H Q, and once the
    unembedding 2 d_model V (the embedding lookup is a gather: no FLOPs); plus 3 x L x the causal half of the
    4 T H Q attention products."""
    _require_positive(n_layers=n_layers, d_model=d_model, d_ff=d_ff, n_heads=n_heads, d_head=d_head, vocab=vocab)
    _require_positive(seq=seq, mlp_matrices=mlp_matrices)
    ffn = 2 * d_model * d_ff * mlp_matrices
    qkv = 2 * d_model * 3 * n_heads * d_head
    projection = 2 * d_model * n_heads * d_head
    unembedding = 2 * d_model * vocab
    causal_attention = 4 * seq * n_heads * d_head / 2
    return 3.0 * ((ffn + qkv + projection) * n_layers + unembedding) + 3.0 * causal_attention * n_layers


def local_attention_saved_frac(context: int, window: int, n_layers: int, n_local_layers: int) -> float:
    """The share of dense attention work (the QK^T and PV dots over every [T, T] query-key pair, as the reference
    kernel computes them, masked) that a kernel computing only each local layer's causal band would skip.

    A local layer's query at position t (1-based) sees min(t, window) keys (GPT-Neo's band, Hugging Face
    modeling_gpt_neo.py), so the band holds window (window + 1) / 2 + (T - window) window of the T^2 pairs; global
    layers keep all T^2. Averaged over the layers.
    """
    _require_positive(context=context, window=window, n_layers=n_layers)
    _require_non_negative(n_local_layers=n_local_layers)
    if window > context or n_local_layers > n_layers:
        raise ValueError(f"window {window} over context {context}, or {n_local_layers} local of {n_layers} layers")
    band = window * (window + 1) / 2 + (context - window) * window
    return (n_local_layers / n_layers) * (1 - band / context**2)
