import functools

import numpy as np
import pytest
import tensorflow as tf

from keras_robust.models.twice_differentiable_batch_norm import twice_differentiable_batch_norm

EPSILON = 1e-3


def textbook_batch_norm(x, gamma, beta):
    """Training-mode batch norm as written, every statistic differentiated."""
    mean = tf.reduce_mean(x, [0, 1, 2])
    variance = tf.reduce_mean(tf.square(x - mean), [0, 1, 2])
    return gamma * (x - mean) / tf.sqrt(variance + EPSILON) + beta


def ours(x, gamma, beta):
    outputs, _, _ = twice_differentiable_batch_norm(x, gamma, beta, EPSILON)
    return outputs


def derivatives(normalize, x, gamma, beta, weights):
    """First derivatives of a loss, then derivatives of a penalty on all three of them.

    The loss's gradient correlates with the normalised input and the
    penalty's cotangent has a non-zero mean, as in a network: the terms that
    `tf.nn.moments` drops (docs/performance.md) then show, about 2e-4 of
    the second derivative in x, ten times the float32 tolerance below.
    """
    with tf.GradientTape() as outer:
        outer.watch([x, gamma, beta])
        with tf.GradientTape() as inner:
            inner.watch([x, gamma, beta])
            outputs = tf.cast(normalize(x, gamma, beta), weights.dtype)
            loss = tf.reduce_sum(tf.nn.softplus(outputs) * (1.0 + tf.square(weights)))
        first = inner.gradient(loss, [x, gamma, beta])
        dx, dgamma, dbeta = (tf.cast(d, weights.dtype) for d in first)
        penalty = tf.reduce_sum(tf.exp(dx)) + tf.reduce_sum(dgamma**3) + tf.reduce_sum(tf.sin(dbeta))
    second = outer.gradient(penalty, [x, gamma, beta])
    return [tf.cast(d, tf.float64) for d in [*first, *second]]


@pytest.fixture
def batch(rng):
    x = rng.normal(size=(6, 5, 4, 3)) * 2 + 1
    gamma, beta = rng.normal(size=3) + 1, rng.normal(size=3)
    return x, gamma, beta, rng.normal(size=x.shape)


@pytest.mark.parametrize("dtype, tolerance", [(tf.float32, 2e-5), (tf.bfloat16, 5e-2)])
def test_first_and_second_derivatives_match_the_textbook_formula_in_float64(batch, dtype, tolerance):
    x, gamma, beta, weights = batch
    # The formula gets the input as rounded to `dtype`: what remains is the
    # rounding of the outputs and first derivatives.
    rounded = tf.cast(tf.constant(x, dtype), tf.float64)
    expected = derivatives(textbook_batch_norm, rounded, *(tf.constant(v, tf.float64) for v in (gamma, beta)),
                           tf.constant(weights, tf.float64))
    got = derivatives(ours, tf.constant(x, dtype), tf.constant(gamma, tf.float32), tf.constant(beta, tf.float32),
                      tf.constant(weights, tf.float32))
    for name, g, e in zip(["dx", "dgamma", "dbeta", "d2x", "d2gamma", "d2beta"], got, expected):
        assert np.abs(g - e).max() <= tolerance * np.abs(e).max(), name


def test_second_derivative_holds_in_a_compiled_graph(batch):
    """Training steps are tf.functions: the cotangents of unused outputs arrive there too."""
    tensors = [tf.constant(v, tf.float32) for v in batch]
    compiled = tf.function(functools.partial(derivatives, ours))(*tensors)
    for graph_value, eager_value in zip(compiled, derivatives(ours, *tensors)):
        np.testing.assert_allclose(graph_value, eager_value, rtol=1e-5, atol=1e-6)


def test_statistics_are_the_batch_mean_and_plain_variance(batch):
    x = batch[0].astype("float32")
    _, mean, variance = twice_differentiable_batch_norm(tf.constant(x), tf.ones([3]), tf.zeros([3]), EPSILON)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance, x.var(axis=(0, 1, 2)), rtol=1e-5)
