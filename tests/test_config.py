import re

import pytest

from kernels.choice import AttentionKernel
from model.config import (
    ConfigError,
    Head,
    Mesh,
    Remat,
    Residual,
    Scope,
    Strategy,
    Variant,
    all_variants,
    apply_overrides,
    get_preset,
    model_for,
    refuse_variant_fields,
    validate_run,
)


def test_24_variants_with_canonical_names():
    names = [v.name for v in all_variants()]
    assert len(names) == len(set(names)) == 24
    assert "parallel-h256-xmap-full" in names
    assert all(Variant.parse(n).name == n for n in names)


def test_benchmarked_variants_run_the_reference_kernel_and_their_names_say_none():
    assert {v.attention_kernel for v in all_variants()} == {AttentionKernel.reference}
    assert not any("+" in v.name for v in all_variants())


@pytest.mark.parametrize(
    "kernel", [k for k in AttentionKernel if k is not AttentionKernel.reference], ids=lambda k: k.value
)
def test_a_kernel_suffix_round_trips(kernel):
    for v in all_variants():
        name = f"{v.name}+{kernel.value}"
        parsed = Variant.parse(name)
        assert parsed == v.replace(attention_kernel=kernel) and parsed.name == name
    gptj = Variant.parse(f"parallel-h256-pjit-full+{kernel.value}")
    assert model_for(get_preset("tiny"), gptj).attention_kernel is kernel


def test_gptj_training_variant_parses_to_its_axes():
    v = Variant.parse("parallel-h256-xmap-full")
    assert (v.residual, v.head, v.strategy, v.remat) == (Residual.PARALLEL, Head.H256, Strategy.XMAP, Remat.FULL)
    assert v.head.d_head == 256


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("diagonal-h256-pjit-none", "valid residual values: parallel, serial"),
        ("parallel-h64-pjit-none", "valid head values: h128, h256"),
        ("parallel-h256-gspmd-none", "valid strategy values: xmap, pjit, shard_map, single"),
        ("parallel-h256-pjit-some", "valid remat values: none, full"),
        ("parallel-h256-pjit", "residual-head-strategy-remat"),
        ("parallel-h256-pjit-full+flash", "valid kernels: reference, xla, blockwise, cudnn, pallas"),
        ("parallel-h256-pjit-full+", "unknown attention kernel ''"),
        ("parallel-h256-pjit-full+xla+cudnn", "unknown attention kernel 'xla+cudnn'"),
        ("parallel-h256-pjit-full+reference", "takes no suffix; write 'parallel-h256-pjit-full'"),
        ("parallel-h256-pjit+xla", "residual-head-strategy-remat[+layout][+kernel]"),
    ],
)
def test_bad_variant_name_lists_valid_values_of_the_wrong_axis(name, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        Variant.parse(name)


def test_overrides_change_preset_and_model_fields():
    preset = apply_overrides(get_preset("cpu"), ["seq=32", "n_layers=3", "mesh=dp=4,mp=2", "compute_dtype=bfloat16"])
    assert (preset.seq, preset.model.n_layers, preset.mesh) == (32, 3, Mesh(4, 2))
    assert preset.model.compute_dtype.value == "bfloat16"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["colour=red"], "unknown override key 'colour'; valid keys:"),
        (["seq"], "key=value"),
        (["seq=long"], "expected a int"),
        (["compute_dtype=float8"], "valid compute_dtype values: float32, bfloat16"),
        (["mesh=dp=0"], "expected e.g. dp=2,mp=4"),
    ],
)
def test_bad_overrides(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(get_preset("tiny"), overrides)


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="valid presets: tiny, cpu, gptj-6b, gpt-neo-2.7b"):
        get_preset("gptj-20b")


PJIT = Variant.parse("parallel-h256-pjit-none")


@pytest.mark.parametrize(
    "overrides, variant, mesh, devices, fragment",
    [
        ([], PJIT, Mesh(1, 8), 8, r"n_heads 4 \(d_model 1024 / d_head 256\) is not divisible by mp=8"),
        (["batch=3"], PJIT, Mesh(2, 1), 8, "global batch 3 is not divisible by dp=2"),
        (["seq=65"], PJIT, Mesh(1, 1), 8, "seq 65 is longer than the context 64"),
        ([], PJIT, Mesh(4, 4), 8, "XLA_FLAGS=--xla_force_host_platform_device_count=16"),
        ([], PJIT.replace(strategy=Strategy.SINGLE), Mesh(2, 1), 8, "strategy single runs on one device"),
    ],
)
def test_bad_runs_fail_before_compiling(overrides, variant, mesh, devices, fragment):
    preset = apply_overrides(get_preset("tiny"), overrides)
    with pytest.raises(ConfigError, match=fragment):
        validate_run(preset, variant, mesh, devices)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["seq=0"], "seq=0: sizes must be positive"),
        (["seq=-5"], "seq=-5: sizes must be positive"),
        (["batch=0"], "batch=0: sizes must be positive"),
        (["n_layers=0"], "n_layers=0: sizes must be positive"),
        (["d_model=0", "d_ff=-1"], "d_model=0, d_ff=-1: sizes must be positive"),
        (["vocab=0"], "vocab=0: sizes must be positive"),
        (["context=0"], "context=0: sizes must be positive"),
        (["ln_eps=0"], "ln_eps must be positive"),
    ],
)
def test_sizes_below_one_are_refused_before_compiling(overrides, fragment):
    preset = apply_overrides(get_preset("tiny"), overrides)
    with pytest.raises(ConfigError, match=fragment):
        preset.validate()
    with pytest.raises(ConfigError, match=fragment):
        validate_run(preset, PJIT, Mesh(1, 1), 8)


def test_presets_pass_their_own_checks():
    for name in ("tiny", "cpu", "gptj-6b", "gpt-neo-2.7b"):
        get_preset(name).validate()


def test_the_6b_scale_presets_run_on_their_own_mesh_of_256_cores():
    """Each 6B-scale preset's model, batch and mesh fit together on a v3-256 (GPT-Neo's 20 heads need mp=4)."""
    for name, variant in (("gptj-6b", "parallel-h256-pjit-full"), ("gpt-neo-2.7b", "serial-h128-pjit-full")):
        preset = get_preset(name)
        validate_run(preset, Variant.parse(variant), preset.mesh, 256)


@pytest.mark.parametrize(
    "override, axis",
    [
        ("d_head=128", "head"),
        ("residual=serial", "residual"),
        ("remat=none", "remat"),
        ("attention_kernel=blockwise", "attention kernel"),
    ],
)
def test_fields_a_variant_sets_are_refused_as_overrides(override, axis):
    with pytest.raises(ConfigError, match=f"the variant's {axis} axis; choose it with --variant"):
        refuse_variant_fields(["seq=8", override])
    refuse_variant_fields(["seq=8", "n_layers=3"])


def test_gptj_accumulates_16_micro_batches_and_tokens_count_every_one():
    gptj = get_preset("gptj-6b")
    assert (gptj.grad_accum, gptj.batch, gptj.seq) == (16, 32, 2048)  # mesh-transformer-jax 6B_roto_256.json
    assert gptj.tokens_per_step == 16 * 32 * 2048
    for name in ("tiny", "cpu", "gpt-neo-2.7b"):
        assert get_preset(name).grad_accum == 1
        assert not get_preset(name).unroll_accum
    preset = apply_overrides(get_preset("tiny"), ["grad_accum=3", "unroll_accum=true"])
    assert (preset.grad_accum, preset.unroll_accum, preset.tokens_per_step) == (3, True, 3 * 4 * 16)


def test_accumulation_below_one_and_with_scope_block_is_refused():
    preset = apply_overrides(get_preset("tiny"), ["grad_accum=0"])
    with pytest.raises(ConfigError, match="grad_accum=0: sizes must be positive"):
        validate_run(preset, PJIT, Mesh(1, 1), 8)
    accumulating = apply_overrides(get_preset("tiny"), ["grad_accum=2"])
    with pytest.raises(ConfigError, match="grad_accum=2 with --scope block"):
        validate_run(accumulating, PJIT, Mesh(1, 1), 8, Scope.BLOCK)
    validate_run(accumulating, PJIT, Mesh(1, 1), 8, Scope.MODEL)
    accumulating.check_scope(Scope.MODEL)
    get_preset("tiny").check_scope(Scope.BLOCK)


def test_an_attention_kernel_override_parses_for_commands_without_a_variant():
    preset = apply_overrides(get_preset("tiny"), ["attention_kernel=blockwise"])  # bench logits takes it so
    assert preset.model.attention_kernel is AttentionKernel.blockwise
    with pytest.raises(ConfigError, match="--set attention_kernel=flash: unknown attention kernel 'flash'; valid"):
        apply_overrides(get_preset("tiny"), ["attention_kernel=flash"])


@pytest.mark.parametrize(
    "kernel, fragment",
    [("cudnn", "runs on GPU only (through cuDNN), not on cpu"), ("pallas", "on cpu only with interpret=True")],
)
def test_a_kernel_the_platform_lacks_is_refused_before_compiling(kernel, fragment):
    variant = PJIT.replace(attention_kernel=AttentionKernel(kernel))
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        validate_run(get_preset("tiny"), variant, Mesh(1, 1), 8, platform="cpu")
    validate_run(get_preset("tiny"), variant, Mesh(1, 1), 8)  # no platform: compiled for another (tpu-aot)
    blockwise = PJIT.replace(attention_kernel=AttentionKernel.blockwise)
    validate_run(get_preset("tiny"), blockwise, Mesh(1, 1), 8, platform="cpu")
