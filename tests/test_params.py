from model.config import Variant, get_preset, model_for
from model.program import Program, count_params


def count(preset_name: str, variant: str = "parallel-h256-pjit-full") -> int:
    preset = get_preset(preset_name)
    return count_params(Program.from_preset(preset, model_for(preset, Variant.parse(variant))).param_shapes())


def test_gptj_6b_counts_as_hugging_face_does():
    # GPT-J README's 6,053,381,344 adds 2,498,560 for per-shard LayerNorm and FF-out bias copies and an
    # embedding bias in its 8-way layout; see README "Parameter count".
    assert count("gptj-6b") == 6_050_882_784


def test_count_by_hand_for_tiny():
    d, f, v, layers = 1024, 1024, 256, 2
    per_layer = 2 * d + 4 * d * d + d * f + f + f * d + d  # ln_1, q/k/v/o, fc_in (+bias), fc_out (+bias)
    expected = v * d + layers * per_layer + 2 * d + d * v + v  # embedding, blocks, ln_f, LM head with bias
    assert count("tiny") == expected


def test_serial_block_adds_its_second_layernorm():
    assert count("tiny", "serial-h256-pjit-full") - count("tiny") == 2 * 2 * 1024


def test_head_size_keeps_parameter_count():
    assert count("gptj-6b", "parallel-h128-pjit-none") == count("gptj-6b")


def test_gptj_readme_count_is_the_sharded_layout_copies():
    per_shard_copies = 28 * 7 * 3 * 4096 + 7 * 2 * 4096  # block LN scale/offset + FF-out bias, final LN
    embedding_bias = 8 * 4096
    assert count("gptj-6b") + per_shard_copies + embedding_bias == 6_053_381_344
