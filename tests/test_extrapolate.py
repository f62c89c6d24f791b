"""The layer and micro-step extrapolations of compiler counts, against hand counts."""

import pytest

from bench.analysis.extrapolate import affine_in_layers, bilinear_in_layers_and_microsteps


def test_affine_in_layers_recovers_a_hand_counted_line():
    # cost(L) = 10 + 3 L: 13 at one layer, 16 at two, 10 + 3 * 28 = 94 at GPT-J's 28
    assert affine_in_layers(13.0, 16.0, 28) == 94.0
    assert affine_in_layers(13.0, 16.0, 1) == 13.0 and affine_in_layers(13.0, 16.0, 2) == 16.0


def test_bilinear_recovers_a_hand_counted_surface():
    # cost(L, A) = 5 + 7 L + 11 A + 2 L A
    def cost(layers, microsteps):
        return 5 + 7 * layers + 11 * microsteps + 2 * layers * microsteps

    points = (cost(1, 1), cost(2, 1), cost(1, 2), cost(2, 2))
    assert points == (25, 34, 38, 49)
    assert bilinear_in_layers_and_microsteps(*points, layers=28, microsteps=16) == 5 + 196 + 176 + 896
    for layers, microsteps in ((1, 1), (2, 1), (1, 2), (2, 2), (3, 5)):
        assert bilinear_in_layers_and_microsteps(*points, layers, microsteps) == cost(layers, microsteps)


def test_bilinear_with_one_microstep_is_the_affine_form():
    assert bilinear_in_layers_and_microsteps(13.0, 16.0, 99.0, 123.0, 28, 1) == affine_in_layers(13.0, 16.0, 28)


def test_gradient_accumulation_hand_count():
    """A step of A micro-batches over L layers: forward and backward of each layer per micro-batch (6 units), the
    head once per micro-batch (4 units), the update once per layer (1 unit) and a fixed 2: at L=28, A=16,
    2 + 28 + 16 * 4 + 28 * 16 * 6."""

    def cost(layers, microsteps):
        return 2 + layers * 1 + microsteps * 4 + layers * microsteps * 6

    points = [cost(1, 1), cost(2, 1), cost(1, 2), cost(2, 2)]
    assert bilinear_in_layers_and_microsteps(*points, 28, 16) == 2 + 28 + 64 + 2688


@pytest.mark.parametrize("layers, microsteps", [(0, 1), (1, 0)])
def test_counts_below_one_are_refused(layers, microsteps):
    with pytest.raises(ValueError, match=">= 1"):
        bilinear_in_layers_and_microsteps(1.0, 2.0, 3.0, 4.0, layers, microsteps)
    if microsteps == 1:
        with pytest.raises(ValueError, match=">= 1"):
            affine_in_layers(1.0, 2.0, layers)
