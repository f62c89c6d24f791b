import jax
import jax.numpy as jnp
import numpy as np

from kernels.attention import causal_attention
from kernels.rotary import apply_rotary, rotate_every_two


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
