"""SmoothGrad's seeded noise against a NumPy reimplementation, bit for bit, and its statistics."""

import math

import numpy as np
import pytest

from keras_robust.explanations import noise

MASK = 2**31


def numpy_standard_normal(seeds, sample, image_shape):
    """The generator of docs/method.md's SmoothGrad section, in NumPy's native bitwise operators."""
    pixels = int(np.prod(image_shape))
    counter = ((sample * pixels + np.arange(pixels, dtype=np.int64)) % MASK).reshape(1, *image_shape)
    keys = np.asarray(seeds, np.int64).reshape(-1, 1, 1, 1)

    def words(key):
        x = (counter + key * 0x61C88647) % MASK
        x ^= x >> 16
        x = (x * 0x2C1B3C6D) % MASK
        x ^= x >> 15
        x = (x * 0x297A2D39) % MASK
        return x ^ (x >> 16)

    first = ((words(2 * keys % MASK) >> 8) + 0.5).astype(np.float32) * np.float32(2.0**-23)
    second = ((words((2 * keys + 1) % MASK) >> 8) + 0.5).astype(np.float32) * np.float32(2.0**-23)
    return np.sqrt(np.float32(-2.0) * np.log(first)) * np.cos(np.float32(2 * math.pi) * second)


def test_tensorflow_draws_equal_the_numpy_generator():
    seeds = [0, 1, 123456789, noise.SEED_RANGE[1]]
    for sample in (0, 1, 37):
        draws = noise.standard_normal(np.array(seeds, np.int32), sample, (5, 7, 3)).numpy()
        np.testing.assert_allclose(draws, numpy_standard_normal(seeds, sample, (5, 7, 3)), rtol=2e-6, atol=2e-6)


def test_the_uniforms_are_exact_and_inside_the_open_interval():
    """Each uniform is (⌊x / 2⁸⌋ + ½) / 2²³: its sum and product exact in float32, strictly inside (0, 1)."""
    top = 2**noise.UNIFORM_BITS - 1
    for words in (0, top):
        exact = (words + 0.5) * 2.0**-noise.UNIFORM_BITS
        computed = (np.float32(words) + np.float32(0.5)) * np.float32(2.0**-noise.UNIFORM_BITS)
        assert computed == exact and 0.0 < computed < 1.0


def test_draws_are_standard_normal_and_uncorrelated():
    draws = np.concatenate([noise.standard_normal(np.array([3]), s, (32, 32, 3)).numpy().ravel() for s in range(32)])
    assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
    assert abs(((draws - draws.mean()) ** 4).mean() / draws.var() ** 2 - 3) < 0.05
    for lag in (1, 3, 96, 3072):
        assert abs(np.corrcoef(draws[:-lag], draws[lag:])[0, 1]) < 0.01, lag
    sorted_draws = np.sort(draws)
    normal_cdf = 0.5 * (1 + np.vectorize(math.erf)(sorted_draws / math.sqrt(2)))
    kolmogorov_smirnov = np.abs(normal_cdf - np.arange(1, draws.size + 1) / draws.size).max()
    assert kolmogorov_smirnov * math.sqrt(draws.size) < 1.63  # the 1 % critical value


def test_seeds_and_samples_give_different_draws():
    one = noise.standard_normal(np.array([0, 1]), 0, (16, 16, 3)).numpy()
    assert abs(np.corrcoef(one[0].ravel(), one[1].ravel())[0, 1]) < 0.05
    later = noise.standard_normal(np.array([0]), 1, (16, 16, 3)).numpy()
    assert abs(np.corrcoef(one[0].ravel(), later[0].ravel())[0, 1]) < 0.05


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, True])
def test_smoothgrad_refuses_seeds_outside_the_range(seed):
    from keras_robust.explanations import attributions

    with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, 2147483647\]"):
        attributions.smoothgrad(None, np.zeros((1, 4, 4, 3), np.float32), [0], seed=seed)
