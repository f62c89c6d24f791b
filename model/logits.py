"""Single-device logits from a Hugging Face GPT-J checkpoint, for checking against other implementations."""

from __future__ import annotations

from pathlib import Path

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from model.config import ModelConfig
from model.convert import from_hf, load_safetensors, read_shapes, validate
from model.gptj import logits_fn
from model.sharding import TensorParallel


def logits(cfg: ModelConfig, params: dict, tokens: list[int]) -> np.ndarray:
    """[T, V] float32 logits for one sequence."""
    fn = hk.without_apply_rng(hk.transform(lambda ids: logits_fn(cfg, TensorParallel(), ids)))
    ids = jnp.asarray([tokens], dtype=jnp.int32)  # [1, T]
    return np.asarray(jax.jit(fn.apply)(params, ids)[0], dtype=np.float32)


def param_shapes(cfg: ModelConfig) -> dict:
    fn = hk.without_apply_rng(hk.transform(lambda ids: logits_fn(cfg, TensorParallel(), ids)))
    return jax.eval_shape(fn.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 1), jnp.int32))


def params_from_checkpoint(cfg: ModelConfig, path: Path) -> dict:
    """The parameters of a Hugging Face GPT-J checkpoint (model.convert.from_hf), unplaced numpy arrays."""
    shapes = param_shapes(cfg)
    validate(cfg, shapes, read_shapes(path))  # names and shapes from the header, before gigabytes are read
    return from_hf(cfg, shapes, load_safetensors(path))


def logits_from_checkpoint(cfg: ModelConfig, path: Path, tokens: list[int]) -> np.ndarray:
    return logits(cfg, params_from_checkpoint(cfg, path), tokens)
