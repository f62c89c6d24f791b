"""GPT-J checkpoints in the Hugging Face layout <-> this suite's parameters.

Hugging Face ``modeling_gptj.py`` names (Linear weights stored [out, in], so they are transposed here):
``transformer.wte.weight`` [V, D]; per layer i ``transformer.h.{i}.ln_1.{weight,bias}``,
``transformer.h.{i}.attn.{q,k,v,out}_proj.weight``, ``transformer.h.{i}.mlp.fc_in.{weight,bias}``,
``transformer.h.{i}.mlp.fc_out.{weight,bias}``; ``transformer.ln_f.{weight,bias}``; ``lm_head.{weight,bias}``.
A serial-residual model (not GPT-J's layout) additionally reads ``transformer.h.{i}.ln_2.{weight,bias}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model.config import ConfigError, ModelConfig, Residual

# Buffers some GPT-J checkpoints carry that are not parameters (the causal mask and its fill value).
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")

LAYERS = "layers/block"


class ConversionError(ConfigError):
    """A checkpoint that is not there, not safetensors, or not this model's tensors: the message says which."""


def _layer_map(cfg: ModelConfig) -> dict[tuple[str, str], tuple[str, bool]]:
    """(our module, our leaf) -> (Hugging Face name with {i}, transposed?) for the stacked block params."""
    table = {
        ("ln_1", "scale"): ("ln_1.weight", False),
        ("ln_1", "offset"): ("ln_1.bias", False),
        ("attn", "w_q"): ("attn.q_proj.weight", True),
        ("attn", "w_k"): ("attn.k_proj.weight", True),
        ("attn", "w_v"): ("attn.v_proj.weight", True),
        ("attn", "w_o"): ("attn.out_proj.weight", True),
        ("ff", "w_in"): ("mlp.fc_in.weight", True),
        ("ff", "b_in"): ("mlp.fc_in.bias", False),
        ("ff", "w_out"): ("mlp.fc_out.weight", True),
        ("ff", "b_out"): ("mlp.fc_out.bias", False),
    }
    if cfg.residual is Residual.SERIAL:
        table[("ln_2", "scale")] = ("ln_2.weight", False)
        table[("ln_2", "offset")] = ("ln_2.bias", False)
    return {
        (f"{LAYERS}/{module}", leaf): (f"transformer.h.{{i}}.{name}", t) for (module, leaf), (name, t) in table.items()
    }


_TOP_MAP: dict[tuple[str, str], tuple[str, bool]] = {
    ("embed", "table"): ("transformer.wte.weight", False),
    ("ln_f", "scale"): ("transformer.ln_f.weight", False),
    ("ln_f", "offset"): ("transformer.ln_f.bias", False),
    ("lm_head", "w"): ("lm_head.weight", True),
    ("lm_head", "b"): ("lm_head.bias", False),
}


def _expected_hf_shapes(cfg: ModelConfig, param_shapes: Any) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for (module, leaf), (name, transposed) in _TOP_MAP.items():
        shape = tuple(param_shapes[module][leaf].shape)
        shapes[name] = shape[::-1] if transposed else shape
    for (module, leaf), (name, transposed) in _layer_map(cfg).items():
        shape = tuple(param_shapes[module][leaf].shape[1:])  # drop the stacked layer dim
        for i in range(cfg.n_layers):
            shapes[name.format(i=i)] = shape[::-1] if transposed else shape
    return shapes


def validate(cfg: ModelConfig, param_shapes: Any, tensors: dict[str, tuple[int, ...]]) -> None:
    """Report every missing, unexpected and mis-shaped tensor at once."""
    expected = _expected_hf_shapes(cfg, param_shapes)
    present = {k: v for k, v in tensors.items() if not k.endswith(IGNORED_SUFFIXES)}
    problems = [f"missing: {k} (expected shape {list(s)})" for k, s in expected.items() if k not in present]
    problems += [f"unexpected: {k}" for k in present if k not in expected]
    problems += [
        f"wrong shape: {k} is {list(present[k])}, expected {list(s)}"
        for k, s in expected.items()
        if k in present and tuple(present[k]) != s
    ]
    if problems:
        raise ConversionError(f"{len(problems)} problem(s) in the checkpoint: " + "; ".join(problems))


def from_hf(cfg: ModelConfig, param_shapes: Any, tensors: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    validate(cfg, param_shapes, {k: v.shape for k, v in tensors.items()})
    params: dict[str, dict[str, np.ndarray]] = {}
    dtype = np.float32
    for (module, leaf), (name, transposed) in _TOP_MAP.items():
        value = tensors[name].T if transposed else tensors[name]
        params.setdefault(module, {})[leaf] = np.ascontiguousarray(value, dtype=dtype)
    for (module, leaf), (name, transposed) in _layer_map(cfg).items():
        layers = [tensors[name.format(i=i)] for i in range(cfg.n_layers)]
        stacked = np.stack([x.T if transposed else x for x in layers])  # [L, ...]
        params.setdefault(module, {})[leaf] = stacked.astype(dtype)
    return params


def to_hf(cfg: ModelConfig, params: Any) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for (module, leaf), (name, transposed) in _TOP_MAP.items():
        value = np.asarray(params[module][leaf])
        tensors[name] = np.ascontiguousarray(value.T if transposed else value)
    for (module, leaf), (name, transposed) in _layer_map(cfg).items():
        for i, value in enumerate(np.asarray(params[module][leaf])):
            tensors[name.format(i=i)] = np.ascontiguousarray(value.T if transposed else value)
    return tensors


def _check_file(path: Path) -> None:
    if Path(path).is_dir():
        raise ConversionError(f"{path} is a directory; expected a .safetensors file")
    if not Path(path).is_file():
        raise ConversionError(f"no checkpoint at {path}: expected a .safetensors file")


def _not_safetensors(path: Path, error: Exception) -> ConversionError:
    return ConversionError(f"{path} is not a safetensors file ({error})")


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, from the file's header alone (nothing is loaded)."""
    from safetensors import SafetensorError, safe_open

    _check_file(path)
    try:
        with safe_open(str(path), framework="np") as checkpoint:
            return {k: tuple(checkpoint.get_slice(k).get_shape()) for k in checkpoint.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise _not_safetensors(path, error) from None


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    _check_file(path)
    try:
        tensors = load_file(str(path))
    except SafetensorError as error:
        raise _not_safetensors(path, error) from None
    # Half-precision checkpoints become float32 master parameters.
    return {k: np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v for k, v in tensors.items()}


def save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))
