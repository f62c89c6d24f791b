import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from model.config import apply_overrides, get_preset
from model.convert import ConversionError, from_hf, load_safetensors, read_shapes, save_safetensors, to_hf, validate
from model.logits import logits, param_shapes

REPO = Path(__file__).resolve().parents[1]
CFG = get_preset("tiny").model


def tiny_checkpoint(tmp_path: Path) -> tuple[dict, Path]:
    """A self-written checkpoint in the Hugging Face layout: random tensors of the tiny preset's shapes."""
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (0.05 * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(CFG)
    )
    path = tmp_path / "tiny.safetensors"
    save_safetensors(to_hf(CFG, params), path)
    return params, path


def test_round_trip_through_safetensors(tmp_path):
    params, path = tiny_checkpoint(tmp_path)
    tensors = load_safetensors(path)
    assert tensors["transformer.h.1.attn.q_proj.weight"].shape == (1024, 1024)
    assert tensors["transformer.h.0.mlp.fc_in.weight"].shape == (CFG.d_ff, CFG.d_model)  # [out, in]
    back = from_hf(CFG, param_shapes(CFG), tensors)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_converter_transposes_linear_weights(tmp_path):
    params, path = tiny_checkpoint(tmp_path)
    tensors = load_safetensors(path)
    np.testing.assert_array_equal(tensors["lm_head.weight"], params["lm_head"]["w"].T)
    np.testing.assert_array_equal(tensors["transformer.h.1.mlp.fc_out.weight"], params["layers/block/ff"]["w_out"][1].T)


def test_every_mismatch_is_reported_at_once(tmp_path):
    _, path = tiny_checkpoint(tmp_path)
    shapes = {k: v.shape for k, v in load_safetensors(path).items()}
    shapes["transformer.h.0.attn.q_proj.weight"] = (1024, 512)
    del shapes["transformer.ln_f.bias"]
    shapes["transformer.h.9.attn.q_proj.weight"] = (4, 4)
    shapes["transformer.h.0.attn.masked_bias"] = ()  # a known buffer, ignored
    with pytest.raises(ConversionError) as error:
        validate(CFG, param_shapes(CFG), shapes)
    message = str(error.value)
    assert "3 problem(s)" in message
    assert "wrong shape: transformer.h.0.attn.q_proj.weight is [1024, 512], expected [1024, 1024]" in message
    assert "missing: transformer.ln_f.bias" in message
    assert "unexpected: transformer.h.9.attn.q_proj.weight" in message


def test_logits_command_prints_single_device_logits(tmp_path):
    params, path = tiny_checkpoint(tmp_path)
    command = [sys.executable, "-m", "bench", "logits", "--preset", "tiny", "--weights", str(path), "--tokens", "1,2,3"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["tokens"] == [1, 2, 3]
    np.testing.assert_allclose(printed["logits"], logits(CFG, params, [1, 2, 3]), rtol=1e-5, atol=1e-6)


def test_logits_command_rejects_tokens_outside_the_vocabulary(tmp_path):
    command = [sys.executable, "-m", "bench", "logits", "--preset", "tiny", "--weights", "x", "--tokens", "1,999"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "ids in [0, 256); bad: [999]" in result.stderr


def test_overridden_preset_shapes_are_checked(tmp_path):
    _, path = tiny_checkpoint(tmp_path)
    wider = apply_overrides(get_preset("tiny"), ["n_layers=3"]).model
    with pytest.raises(ConversionError, match="missing: transformer.h.2.ln_1.weight"):
        from_hf(wider, param_shapes(wider), load_safetensors(path))


def not_safetensors(tmp_path: Path, kind: str) -> Path:
    """A file that is no safetensors checkpoint: random bytes, empty, or a real one cut in half."""
    path = tmp_path / f"{kind}.safetensors"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        save_safetensors({"transformer.wte.weight": np.zeros((256, 1024), np.float32)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("kind", ["random", "empty", "truncated"])
def test_a_file_that_is_not_safetensors_says_so(tmp_path, kind):
    path = not_safetensors(tmp_path, kind)
    for read in (load_safetensors, read_shapes):
        with pytest.raises(ConversionError, match=f"{path} is not a safetensors file"):
            read(path)


def test_a_missing_file_or_a_directory_is_named(tmp_path):
    with pytest.raises(ConversionError, match="no checkpoint at .*nope.safetensors"):
        read_shapes(tmp_path / "nope.safetensors")
    with pytest.raises(ConversionError, match="is a directory; expected a .safetensors file"):
        load_safetensors(tmp_path)


def test_shapes_are_read_from_the_header(tmp_path):
    _, path = tiny_checkpoint(tmp_path)
    assert read_shapes(path) == {k: v.shape for k, v in load_safetensors(path).items()}


def bench_logits(weights: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench", "logits", "--preset", "tiny", "--weights", str(weights), "--tokens", "1"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["missing", "directory", "random", "empty", "truncated", "wrong-tensors"])
def test_logits_command_refuses_a_bad_checkpoint_in_one_line(tmp_path, kind):
    if kind == "missing":
        weights, fragment = tmp_path / "nope.safetensors", "no checkpoint at"
    elif kind == "directory":
        weights, fragment = tmp_path, "is a directory"
    elif kind == "wrong-tensors":
        weights, fragment = tmp_path / "other.safetensors", "wrong shape: transformer.wte.weight is [7, 3]"
        save_safetensors({"transformer.wte.weight": np.zeros((7, 3), np.float32), "x": np.zeros(1)}, weights)
    else:
        weights, fragment = not_safetensors(tmp_path, kind), "is not a safetensors file"
    result = bench_logits(weights)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:") and fragment in result.stderr
    assert "Traceback" not in result.stderr
