"""Published runs as data (bench/projection/published.py, reports/published-runs/): the loader's checks, each
convention's conversion to tokens/s against a hand count, and the run-to-compile mapping (bench/tpu_aot/validate.py).
Pure: nothing here compiles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.analysis import flops
from bench.projection import published
from bench.projection.published import Convention, Figure, RunFileError, load_run, load_runs, published_tokens_per_s
from model.config import Layout, Remat

GPTJ = published.RUNS_DIR / "gptj-6b-v3-256.toml"


def _write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _gptj_with(tmp_path: Path, old: str, new: str) -> Path:
    text = GPTJ.read_text()
    assert old in text, old
    return _write(tmp_path, text.replace(old, new, 1))


def _error(path: Path) -> str:
    with pytest.raises(RunFileError) as caught:
        load_run(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_committed_runs_load_with_unique_ids() -> None:
    runs = load_runs(published.committed_runs())
    assert len(runs) >= 7
    assert {r.topology.split(":")[0] for r in runs} >= {"v3", "v4", "v5e", "v5p"}
    for run in runs:
        assert run.quote and run.source
        assert published_tokens_per_s(run).tokens_per_s > 0


def test_missing_key(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, "d_ff = 16384", ""))
    assert "[model] d_ff: missing" in message


def test_missing_top_level_key(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, 'topology = "v3:8x16"', ""))
    assert "topology: missing" in message


def test_unknown_key(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, "d_ff = 16384", "d_ff = 16384\nd_fff = 1"))
    assert "[model] d_fff: unknown key; valid keys:" in message and "local_attention_window" in message


def test_wrong_type(tmp_path: Path) -> None:
    assert "[model] d_ff: expected an integer" in _error(_gptj_with(tmp_path, "d_ff = 16384", 'd_ff = "16384"'))
    assert "expected true or false" in _error(_gptj_with(tmp_path, "tied_embeddings = false", "tied_embeddings = 0"))


def test_bad_choice(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, 'activation = "gelu"', 'activation = "swish"'))
    assert "[model] activation: 'swish' is not one of gelu, relu" in message
    message = _error(_gptj_with(tmp_path, 'remat = "full"', 'remat = "everything"'))
    assert "[train] remat" in message and "minimal" in message


def test_two_figures_or_none(tmp_path: Path) -> None:
    two = _error(_gptj_with(tmp_path, "tokens_per_s = 151000", "tokens_per_s = 151000\nstep_s = 1.0"))
    assert "exactly one figure" in two and "found tokens_per_s, step_s" in two
    none = _error(_gptj_with(tmp_path, "tokens_per_s = 151000", ""))
    assert "found none" in none


def test_unknown_convention(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, "tokens_per_s = 151000", 'tokens_per_s = 151000\nconvention = "7N"'))
    assert "[published] convention: '7N' is not one of 6N, 6N+attn, 6N+attn_causal, maxtext_calc" in message


def test_figure_needing_a_convention(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, "tokens_per_s = 151000", "tflops_per_chip = 40"))
    assert "[published] convention: missing" in message


def test_topology_disagreeing_with_the_mesh(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, "dp = 32", "dp = 16"))
    assert "dp x fsdp x tp = 16 x 1 x 8 = 128 devices, but topology v3:8x16 has 256" in message


def test_dp_and_fsdp_together(tmp_path: Path) -> None:
    path = _gptj_with(tmp_path, "fsdp = 1", "fsdp = 2")
    assert "set one of them to 1" in _error(path)


def test_batch_not_dividing_over_the_mesh(tmp_path: Path) -> None:
    message = _error(_gptj_with(tmp_path, "global_batch = 512", "global_batch = 496"))
    assert "31 sequences per micro-step" in message and "32 replicas" in message
    message = _error(_gptj_with(tmp_path, "global_batch = 512", "global_batch = 520"))
    assert "do not divide into grad_accum=16" in message


def test_not_toml(tmp_path: Path) -> None:
    assert "not TOML" in _error(_write(tmp_path, "id = "))


def test_duplicate_ids(tmp_path: Path) -> None:
    first = _write(tmp_path, GPTJ.read_text(), "a.toml")
    second = _write(tmp_path, GPTJ.read_text(), "b.toml")
    with pytest.raises(RunFileError, match="ids must be unique"):
        load_runs([first, second])


# --- conversions, against hand counts ----------------------------------------------------------------------------


def test_decoder_param_count_by_hand() -> None:
    # 2 layers x (4 x 8 x 6 + 2 x 8 x 32) + 100 x 8 x (1 tied | 2 untied)
    assert flops.decoder_param_count(2, 8, 32, 6, 100, True) == 2 * (192 + 512) + 800
    assert flops.decoder_param_count(2, 8, 32, 6, 100, False) == 2 * (192 + 512) + 1600


def test_conventions_by_hand() -> None:
    n, layers, heads, d_head, seq = 1000, 2, 3, 4, 5
    attention = 12 * 2 * 3 * 4 * 5  # 1440
    assert flops.flops_per_token_6n(n) == 6000
    assert flops.flops_per_token_6n_attn(n, layers, heads, d_head, seq) == 6000 + attention
    assert flops.flops_per_token_6n_attn_causal(n, layers, heads, d_head, seq) == 6000 + attention / 2
    # d_model 8, d_ff 16, 3 heads of 4, vocab 10, seq 5, two MLP matrices:
    # per layer ffn 2*8*16*2 = 512, qkv 2*8*3*12 = 576, projection 2*8*12 = 192; unembedding 2*8*10 = 160;
    # 3 x (2 x 1280 + 160) = 8160, plus 3 x 2 x (4*5*12/2 = 120) = 720
    assert flops.flops_per_token_maxtext_calc(2, 8, 16, 3, 4, 10, 5) == 8160 + 720


def test_maxtext_22b_by_hand() -> None:
    run = load_run(published.RUNS_DIR / "maxtext-22b-v4-128.toml")
    assert run.published.convention is Convention.SIX_N
    # 48 x (4 x 6144 x 6144 + 2 x 6144 x 24576) + 32768 x 6144 (tied, once)
    n = 48 * (4 * 6144 * 6144 + 2 * 6144 * 24576) + 32768 * 6144
    assert run.model.n_params == n == 21_944_598_528
    conversion = published_tokens_per_s(run)
    assert conversion.tokens_per_s == pytest.approx(156e12 * 64 / (6 * n))
    # its MFU is the same figure over the peak the source names
    assert 156 / run.published.peak_tflops_per_chip == pytest.approx(0.567, abs=5e-4)


def test_mfu_conversion_by_hand(tmp_path: Path) -> None:
    run = load_run(published.RUNS_DIR / "levanter-6.7b-v3-256.toml")
    assert run.published.figure is Figure.MFU
    m = run.model
    per_token = 6 * m.n_params + 12 * m.n_layers * m.n_heads * m.d_head * m.seq
    expected = 0.473 * 123e12 * 128 / per_token
    conversion = published_tokens_per_s(run)
    assert conversion.tokens_per_s == pytest.approx(expected)
    assert [s.value for s in conversion.steps][-1] == conversion.tokens_per_s


def test_step_s_and_per_chip_by_hand(tmp_path: Path) -> None:
    run = load_run(published.RUNS_DIR / "gptj-6b-v3-32.toml")
    assert published_tokens_per_s(run).tokens_per_s == pytest.approx(32 * 2048 / 3.37298)
    per_chip = _gptj_with(tmp_path, "tokens_per_s = 151000", "tokens_per_s_per_chip = 1000")
    assert published_tokens_per_s(load_run(per_chip)).tokens_per_s == 128_000


def test_source_remat_names_map_to_policies() -> None:
    assert published.remat_policy("minimal") is Remat.DOTS
    assert published.remat_policy("recompute_grad") is Remat.FULL
    assert published.remat_policy("none") is Remat.NONE


# --- the run as the suite compiles it ----------------------------------------------------------------------------


def test_gptj_compiles_as_the_gptj_preset() -> None:
    """GPT-J's run is the gptj-6b preset on its mesh: the same program, so the committed compile cache serves it."""
    from bench.tpu_aot.validate import compile_plan
    from model.config import get_preset, model_for

    plan = compile_plan(load_run(GPTJ))
    reference = get_preset("gptj-6b")
    assert plan.mesh == reference.mesh and plan.variant.layout is Layout.MEGATRON
    assert plan.preset.batch == reference.batch and plan.preset.grad_accum == reference.grad_accum
    assert model_for(plan.preset, plan.variant) == model_for(reference, plan.variant)


def test_a_committed_run_file_is_recorded_relative_to_the_checkout() -> None:
    """Records read the same from any clone: a committed run file's path is relative (an outside one, absolute, is
    checked by the end-to-end test below)."""
    from bench.tpu_aot.validate import compile_plan, validation_fields

    fields = validation_fields(compile_plan(load_run(GPTJ)))
    assert fields["validation_file"] == "reports/published-runs/gptj-6b-v3-256.toml"


def test_sharded_parameter_run_maps_to_that_layout() -> None:
    from bench.tpu_aot.validate import compile_plan

    plan = compile_plan(load_run(published.RUNS_DIR / "levanter-6.7b-v3-256.toml"))
    assert plan.variant.layout is Layout.FSDP and (plan.mesh.dp, plan.mesh.mp) == (256, 1)
    assert plan.preset.batch == 1024 and plan.preset.grad_accum == 1


def test_run_file_outside_the_repository(tmp_path: Path) -> None:
    path = _write(tmp_path, GPTJ.read_text().replace('"gptj-6b-v3-256"', '"mine"'))
    run = load_run(path)
    assert run.id == "mine" and re.search("tmp", str(run.path))


# --- the command -------------------------------------------------------------------------------------------------

TINY_RUN = """
id = "tiny-outside"
source = "a test's own input, not a published run"
quote = "1000 tokens/s"
topology = "v3:2x2"

[model]
n_layers = 2
d_model = 512
d_ff = 1024
n_heads = 2
d_head = 256
vocab = 256
seq = 64
residual = "parallel"
activation = "gelu"
tied_embeddings = false
rotary_dim = 64

[train]
global_batch = 8
grad_accum = 1
dp = 4
fsdp = 1
tp = 2
remat = "full"
compute_dtype = "bfloat16"

[published]
tokens_per_s = 1000
"""


def test_bad_run_file_is_one_error_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.cli.main import main

    bad = _gptj_with(tmp_path, "dp = 32", "dp = 16")
    assert main(["validate", "--run", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: [train] dp, fsdp, tp:")
    assert not (tmp_path / "out").exists()  # refused before a directory or a compile


@pytest.mark.tpu_aot
def test_validate_a_run_file_written_outside_the_repository(tmp_path: Path) -> None:
    """The whole command on a run file in a temporary directory: compiled for v3:2x2, one record, one line."""
    import json
    import subprocess
    import sys

    from bench.tpu_aot.env import libtpu_available

    if not libtpu_available():
        pytest.skip("needs libtpu: run `nox -s tests_tpu_aot`")
    run_file = _write(tmp_path, TINY_RUN)
    # a second topology: one process each (libtpu's compile-only environment is per process)
    v5e = TINY_RUN.replace('"tiny-outside"', '"tiny-v5e"').replace('"v3:2x2"', '"v5e:2x2"').replace("dp = 4", "dp = 2")
    other = _write(tmp_path, v5e, "other.toml")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "bench",
        "validate",
        "--run",
        str(run_file),
        "--run",
        str(other),
        "--out",
        str(out),
    ]
    done = subprocess.run([*command, "--compile-cache", "none"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("tiny-outside: published 1,000 tokens/s, PROJECTED ")
    records = {r["validation_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(records) == ["tiny-outside", "tiny-v5e"]
    record = records["tiny-outside"]
    assert record["validation_file"] == str(run_file) and record["topology"] == "v3:2x2"
    assert record["status"] == "ok" and record["fits_hbm"] is True
    assert record["projected_tokens_per_s"] == record["projected_tokens_per_s_by_model"][record["projected_model"]][1]
    assert record["projected_to_published_ratio"] == pytest.approx(record["projected_tokens_per_s"] / 1000)
    # v5e has no compiler estimate (validate.ESTIMATE_GENERATIONS): the whole-step HLO roofline is the headline
    assert records["tiny-v5e"]["projected_model"] == "whole-step HLO roofline + ICI"


def test_projection_fields_price_every_model_the_record_has() -> None:
    """On the committed GPT-J record (reports/example/tpu-aot): the headline is the default model's full-overlap bound,
    and every model the record supports is priced beside it."""
    import json

    from bench.projection.throughput import ProjectionModel, project
    from bench.records.schema import upgrade
    from bench.tpu_aot.validate import projection_fields

    lines = (published.RUNS_DIR.parent / "example" / "tpu-aot" / "results.jsonl").read_text().splitlines()
    record = next(
        r
        for r in map(upgrade, map(json.loads, lines))
        if r.get("variant") == "parallel-h256-shard_map-full" and r.get("status") == "ok"
    )
    fields = projection_fields({**record, "published_tokens_per_s": 151_000.0})
    assert set(fields["projected_tokens_per_s_by_model"]) == {m.value for m in ProjectionModel}
    assert fields["projected_model"] == ProjectionModel.HLO_ROOFLINE.value  # the headline model
    assert fields["projected_tokens_per_s"] == project(record).tokens_per_s_overlap
    assert fields["projected_to_published_ratio"] == pytest.approx(fields["projected_tokens_per_s"] / 151_000)


def test_maxtext_runs_use_the_new_model_options_and_say_what_differs() -> None:
    from bench.tpu_aot.validate import compile_plan
    from model.config import Activation

    plan = compile_plan(load_run(published.RUNS_DIR / "maxtext-32b-v5p-128.toml"))
    model = plan.preset.model
    assert model.attention_heads == 32 and model.attention_width == 8192 != model.d_model
    assert model.activation is Activation.RELU and model.tied_embeddings
    assert plan.variant.remat is Remat.DOTS and (plan.mesh.dp, plan.mesh.mp) == (16, 4)
    assert any("flash attention" in note for note in plan.notes)
    assert any("'minimal'" in note for note in plan.notes)
    assert not plan.extrapolates  # v5p: libtpu has no estimate


def test_gpt_neo_pads_its_vocabulary_and_alternates_local_attention() -> None:
    from bench.tpu_aot.validate import compile_plan

    plan = compile_plan(load_run(published.RUNS_DIR / "gpt-neo-2.7b-v3-256.toml"))
    assert plan.preset.model.vocab == 50304 and "50257 padded to 50304" in plan.notes[0]
    assert plan.preset.model.layer_windows()[:2] == (2048, 256)
    assert plan.preset.batch == 128 and plan.preset.grad_accum == 4
