"""Decoding against Hugging Face's GPT-J: a random GPT-J made in transformers (its Flax model, f32), its weights taken
as a Hugging Face state dict and loaded through the converter as `bench logits` loads a checkpoint, generates under
the suite's prefill and KV-cache steps the same greedy tokens as transformers' `generate`, and each step's logits are
transformers' at that position within tests/test_decode.py's bound.

transformers is in the current environment alone (requirements/current.txt; 5.x dropped its Flax models, and torch is
too big for CI), so it is imported inside the tests: jax 0.4.30's session collects this file and deselects it, and
the current one fails where transformers is missing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_decode import LOGITS_RTOL, relative_error

from model.config import Activation, Mesh, ModelConfig, Variant, apply_overrides, get_preset, model_for
from model.convert import save_safetensors
from model.decode import Decoder, Sampler, generate, make_decoder
from model.logits import params_from_checkpoint

# The tiny preset (2 layers, vocab 256, context 64) at d_model 512: 4 heads of 128, rotary on 32 dims of each and a
# feed-forward 4 x d_model wide, GPT-J-6B's ratios (64 of 256; 16384 = 4 x 4096).
PRESET = apply_overrides(get_preset("tiny"), ["d_model=512", "d_ff=2048", "rotary_dim=32"])
VARIANT = Variant.parse("parallel-h128-single-none")
BATCH, PROMPT, NEW = 2, 8, 8


def hf_config(cfg: ModelConfig):
    """transformers' GPTJConfig of the same model."""
    from transformers import GPTJConfig

    assert cfg.activation is Activation.GELU and not cfg.tied_embeddings  # GPT-J's, which GPTJConfig describes
    return GPTJConfig(
        vocab_size=cfg.vocab,
        n_positions=cfg.context,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        rotary_dim=cfg.rotary_dim,
        n_inner=cfg.d_ff,
        layer_norm_epsilon=cfg.ln_eps,
        activation_function="gelu_new",  # the tanh approximation, as the suite's GELU
    )


def random_params(params: dict, seed: int = 0) -> dict:
    """Every tensor drawn afresh: biases and LayerNorm offsets are not left at zero nor gains at one, so that a
    converter that mixed them up could not pass."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    rng = np.random.default_rng(seed)
    drawn = {}
    for path, value in flatten_dict(params).items():
        noise = rng.standard_normal(value.shape).astype(np.float32)
        drawn[path] = 1 + 0.1 * noise if path[-1] == "scale" else 0.05 * noise
    return unflatten_dict(drawn)


def hf_state_dict(params: dict) -> dict[str, np.ndarray]:
    """A Flax model's parameters under their PyTorch names and layouts, by transformers' own rule
    (modeling_flax_pytorch_utils.load_flax_weights_in_pytorch_model): names joined with dots, a Dense kernel
    [in, out] becomes the Linear weight [out, in], a LayerNorm scale and an Embed embedding become weights."""
    from flax.traverse_util import flatten_dict

    tensors = {}
    for path, value in flatten_dict(params).items():
        *module, leaf = path
        value = np.asarray(value)
        if leaf == "kernel":
            leaf, value = "weight", value.T
        elif leaf in ("scale", "embedding"):
            leaf = "weight"
        tensors[".".join([*module, leaf])] = np.array(value, order="C")  # a copy: the model's own stay apart
    return tensors


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """transformers' side: the prompt [B, P], the checkpoint of its random weights, `generate`'s tokens [B, N] and
    the full forward's logits [B, P + N, V] of the prompt and those tokens."""
    from transformers import FlaxGPTJForCausalLM

    cfg = model_for(PRESET, VARIANT)
    model = FlaxGPTJForCausalLM(hf_config(cfg), seed=0, dtype=jnp.float32)
    model.params = random_params(model.params)
    checkpoint = tmp_path_factory.mktemp("hf") / "gptj.safetensors"
    save_safetensors(hf_state_dict(model.params), checkpoint)
    prompt = np.random.default_rng(1).integers(0, cfg.vocab, (BATCH, PROMPT)).astype(np.int32)
    # GPT-J's end-of-text id (50256) lies outside this vocabulary, so no sequence stops early: the suite's generate
    # has no end token. Its pad id is the end-of-text id, as transformers would choose, and nothing is padded.
    assert model.config.eos_token_id >= cfg.vocab
    unpadded = {"attention_mask": np.ones_like(prompt), "pad_token_id": model.config.eos_token_id}
    sequences = model.generate(prompt, do_sample=False, max_new_tokens=NEW, **unpadded).sequences
    sequences = np.asarray(sequences)  # [B, P + N]
    assert sequences.shape == (BATCH, PROMPT + NEW)
    np.testing.assert_array_equal(sequences[:, :PROMPT], prompt)
    logits = np.asarray(model(sequences).logits, np.float32)  # [B, P + N, V]
    return {"prompt": prompt, "checkpoint": checkpoint, "tokens": sequences[:, PROMPT:], "logits": logits}


@pytest.fixture(scope="module")
def suite(reference) -> tuple[Decoder, dict]:
    """The suite's side: a one-device decoder and the checkpoint's parameters, read through the converter."""
    decoder = make_decoder(PRESET, VARIANT, Mesh(1, 1))
    return decoder, decoder.decode_params(params_from_checkpoint(decoder.cfg, reference["checkpoint"]))


def test_greedy_tokens_equal_transformers_generate(reference, suite):
    decoder, params = suite
    key = jax.random.PRNGKey(0)  # unused: greedy
    tokens = generate(decoder, params, reference["prompt"], NEW, Sampler(), key, PROMPT + NEW)
    print(f"greedy tokens: {tokens.tolist()}")
    np.testing.assert_array_equal(tokens, reference["tokens"])


def test_each_steps_logits_equal_transformers(reference, suite):
    """The prefill's last position, then each step fed transformers' own next token."""
    decoder, params = suite
    logits, cache = decoder.prefill(params, reference["prompt"], PROMPT + NEW)
    errors = [relative_error(np.asarray(logits), reference["logits"][:, PROMPT - 1])]
    for i in range(NEW - 1):
        logits, cache = decoder.step(params, cache, reference["tokens"][:, i])
        errors.append(relative_error(np.asarray(logits), reference["logits"][:, PROMPT + i]))
    print(f"worst logits relative error against transformers: {max(errors):.2e}")
    assert max(errors) <= LOGITS_RTOL, errors
