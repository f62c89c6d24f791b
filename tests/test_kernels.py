import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.attention import (
    AttentionKernel,
    attention,
    causal_attention,
    check_kernel_supported,
    dot_product_attention_has_implementation,
)
from kernels.rotary import (
    apply_rotary,
    apply_rotary_fast,
    apply_rotary_half_split,
    half_split_permutation,
    rotate_every_two,
)


def test_rotate_every_two_pairs_neighbours():
    x = jnp.arange(1.0, 7.0)
    np.testing.assert_array_equal(rotate_every_two(x), [-2.0, 1.0, -4.0, 3.0, -6.0, 5.0])


def test_rotary_hand_computed():
    # One head, K=6, rotary_dim=4: pairs (0,1) at inv_freq 1 and (2,3) at inv_freq 1/10000^(2/4) = 0.01;
    # dims 4 and 5 pass through. Position 1 turns pair i by angle inv_freq[i].
    x = jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).reshape(1, 1, 1, 6)
    x = jnp.concatenate([x, x], axis=1)  # positions 0 and 1
    out = np.asarray(apply_rotary(x, rotary_dim=4))[0, :, 0]
    np.testing.assert_allclose(out[0], [1, 2, 3, 4, 5, 6], rtol=1e-6)  # position 0: angle 0
    c0, s0, c1, s1 = np.cos(1.0), np.sin(1.0), np.cos(0.01), np.sin(0.01)
    expected = [1 * c0 - 2 * s0, 2 * c0 + 1 * s0, 3 * c1 - 4 * s1, 4 * c1 + 3 * s1, 5, 6]
    np.testing.assert_allclose(out[1], expected, rtol=1e-6)


def test_attention_is_causal():
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 8, 3, 16)) for i in range(3))
    out = causal_attention(q, k, v)
    k2, v2 = k.at[:, 5:].set(7.0), v.at[:, 5:].set(-3.0)  # change positions 5.. only
    out2 = causal_attention(q, k2, v2)
    np.testing.assert_array_equal(out[:, :5], out2[:, :5])
    assert not np.allclose(out[:, 5:], out2[:, 5:])


def test_attention_first_position_returns_its_value():
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (1, 4, 2, 8)) for i in range(3))
    np.testing.assert_allclose(causal_attention(q, k, v)[:, 0], v[:, 0], rtol=1e-6)


@pytest.mark.parametrize("rotary_dim", [4, 64])
def test_fast_rotary_equals_reference(rotary_dim):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 3, 80))
    np.testing.assert_allclose(apply_rotary_fast(x, rotary_dim), apply_rotary(x, rotary_dim), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rotary_dim", [4, 64])
def test_half_split_rotary_on_permuted_heads_equals_reference(rotary_dim):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 12, 3, 80))
    perm = half_split_permutation(80, rotary_dim)
    np.testing.assert_allclose(
        apply_rotary_half_split(x[..., perm], rotary_dim), apply_rotary(x, rotary_dim)[..., perm], rtol=0, atol=1e-6
    )


def test_half_split_permutation_keeps_passthrough_and_scores():
    perm = half_split_permutation(8, 4)
    np.testing.assert_array_equal(perm, [0, 2, 1, 3, 4, 5, 6, 7])
    # why permuting the q and k projection columns alike is free: every score q . k is unchanged
    q, k = (jax.random.normal(jax.random.PRNGKey(i), (5, 8)) for i in range(2))
    np.testing.assert_allclose(q[:, perm] @ k[:, perm].T, q @ k.T, rtol=0, atol=1e-5)  # only the order of the sum


def test_attention_kernel_parse_lists_the_valid_names():
    assert AttentionKernel.parse("blockwise") is AttentionKernel.blockwise
    with pytest.raises(
        ValueError, match="unknown attention kernel 'flash'; valid kernels: reference, xla, blockwise, cudnn, pallas"
    ):
        AttentionKernel.parse("flash")


def test_cudnn_refused_off_gpu_saying_where_it_runs():
    assert check_kernel_supported(AttentionKernel.cudnn, "cpu", True) == (
        "attention kernel 'cudnn' runs on GPU only (through cuDNN), not on cpu"
    )
    assert check_kernel_supported(AttentionKernel.cudnn, "tpu", True) is not None
    # where it runs comes first: jax 0.4.30 has no dot_product_attention at all, but that is not why it is refused here
    assert "runs on GPU only" in check_kernel_supported(AttentionKernel.cudnn, "cpu", False)
    assert check_kernel_supported(AttentionKernel.cudnn, "gpu", True) is None


@pytest.mark.parametrize("kernel", [AttentionKernel.xla, AttentionKernel.cudnn], ids=lambda k: k.value)
def test_dot_product_attention_kernels_refused_without_implementation_argument(kernel):
    message = check_kernel_supported(kernel, "gpu", jax_has_dpa_implementation=False)
    assert message.startswith(f"attention kernel '{kernel.value}' needs jax.nn.dot_product_attention(implementation=")


def test_this_jax_refuses_xla_exactly_when_it_lacks_the_implementation_argument():
    # jax 0.4.30 has no jax.nn.dot_product_attention at all; 0.10.x has it with implementation="xla" | "cudnn"
    has = dot_product_attention_has_implementation()
    message = check_kernel_supported(AttentionKernel.xla, "cpu", has)
    x = jnp.ones((1, 4, 1, 8))
    if has:
        assert message is None
        assert attention(x, x, x, AttentionKernel.xla).shape == x.shape
    else:
        assert "needs jax.nn.dot_product_attention(implementation=...)" in message
        with pytest.raises(NotImplementedError, match="needs jax.nn.dot_product_attention"):
            attention(x, x, x, AttentionKernel.xla)


def test_pallas_on_cpu_only_in_the_interpreter():
    assert "only with interpret=True" in check_kernel_supported(AttentionKernel.pallas, "cpu", True)
    assert check_kernel_supported(AttentionKernel.pallas, "cpu", True, interpret=True) is None
    for platform in ("gpu", "tpu"):
        assert check_kernel_supported(AttentionKernel.pallas, platform, True) is None


def test_kernels_without_a_platform_limit_are_accepted_everywhere():
    for kernel in (AttentionKernel.reference, AttentionKernel.blockwise):
        for platform in ("cpu", "gpu", "tpu"):
            assert check_kernel_supported(kernel, platform, False) is None
