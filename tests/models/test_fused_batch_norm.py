import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust import FusedBatchNormalization, resnet
from keras_robust.method.double_backprop import twice_differentiated
from keras_robust.models import fused_batch_norm
from keras_robust.models.twice_differentiable_batch_norm import twice_differentiable_batch_norm


def numpy_batch_norm(x, gamma, beta, epsilon):
    """Training-mode batch normalization over every axis but the last, by hand."""
    mean = x.mean(axis=(0, 1, 2))
    variance = x.var(axis=(0, 1, 2))
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta, mean, variance


def built_pair(shape, **kwargs):
    """The fused layer and Keras' own, with the same random gamma and beta."""
    fused = FusedBatchNormalization(**kwargs)
    plain = keras.layers.BatchNormalization(**kwargs)
    fused.build(shape)
    plain.build(shape)
    values = np.random.default_rng(3).normal(size=(2, shape[kwargs.get("axis", -1)])).astype("float32")
    for layer in (fused, plain):
        if layer.gamma is not None:
            layer.gamma.assign(values[0] + 1.0)
        if layer.beta is not None:
            layer.beta.assign(values[1])
    return fused, plain


def test_training_pass_and_moving_statistics_match_numpy(rng):
    x = (rng.normal(size=(6, 5, 4, 3)) * 3 + 2).astype("float32")
    layer, _ = built_pair(x.shape, momentum=0.8, epsilon=1e-3)
    outputs = layer(x, training=True)
    expected, mean, variance = numpy_batch_norm(x, layer.gamma.numpy(), layer.beta.numpy(), 1e-3)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean, 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, 0.8 + 0.2 * variance, rtol=1e-5)


def test_training_pass_is_one_fused_op():
    layer = FusedBatchNormalization()
    layer.build((2, 4, 4, 3))
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
        tf.TensorSpec((2, 4, 4, 3))
    ).graph
    types = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in types
    assert "Mean" not in types


def test_first_and_second_derivatives_match_keras(rng):
    """The regulariser differentiates the input gradient again (docs/method.md §3)."""
    x = tf.constant(rng.normal(size=(4, 3, 3, 5)).astype("float32"))
    weights = tf.constant(rng.normal(size=(4, 3, 3, 5)).astype("float32"))

    def derivatives(layer):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(tf.tanh(layer(x, training=True)) * weights)
            input_gradient = inner.gradient(loss, x)
            penalty = tf.reduce_sum(tf.square(input_gradient))
        return [input_gradient, *outer.gradient(penalty, [layer.gamma, layer.beta])]

    fused, plain = built_pair(x.shape)
    for ours, keras_own in zip(derivatives(fused), derivatives(plain)):
        np.testing.assert_allclose(ours, keras_own, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "shape, kwargs, call_kwargs",
    [
        ((3, 4, 4, 2), {}, {"training": False}),
        ((3, 4, 4, 2), {"axis": 1}, {"training": True}),
        ((5, 6), {}, {"training": True}),
        ((3, 4, 4, 2), {"center": False, "scale": False}, {"training": True}),
        ((3, 4, 4, 2), {}, {"training": True, "mask": np.ones((3, 4, 4), bool)}),
        ((3, 4, 4, 2), {"dtype": "float64"}, {"training": True}),
    ],
    ids=["inference", "channels_first", "dense", "no_scale_or_offset", "masked", "float64"],
)
def test_every_other_case_gives_what_keras_gives(rng, shape, kwargs, call_kwargs):
    x = (rng.normal(size=shape) * 2 + 1).astype("float32")
    fused, plain = built_pair(shape, **kwargs)
    np.testing.assert_allclose(fused(x, **call_kwargs), plain(x, **call_kwargs), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)


def test_frozen_layer_normalises_with_its_moving_statistics(rng):
    x = rng.normal(size=(3, 4, 4, 2)).astype("float32")
    fused, plain = built_pair(x.shape)
    fused.trainable = plain.trainable = False
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-5)
    np.testing.assert_array_equal(fused.moving_mean, np.zeros(2))


def test_mixed_precision_normalises_bfloat16_in_the_fused_op_as_keras_does(rng):
    x = tf.constant((rng.normal(size=(4, 3, 3, 2)) * 3 + 1).astype("float32"))
    fused, plain = built_pair(x.shape, dtype="mixed_bfloat16")

    def forward_and_input_gradient(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * tf.range(2, dtype=tf.float32))
        return outputs, tape.gradient(loss, x)

    (ours, our_gradient), (theirs, their_gradient) = map(forward_and_input_gradient, (fused, plain))
    assert ours.dtype == tf.bfloat16
    # One bfloat16 rounding of the output on each side: at most a unit in the last place apart.
    np.testing.assert_allclose(tf.cast(ours, tf.float32), tf.cast(theirs, tf.float32), rtol=2**-7, atol=2**-7)
    np.testing.assert_allclose(our_gradient, their_gradient, rtol=2**-6, atol=2**-6)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=1e-5)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(tf.TensorSpec(x.shape)).graph
    fused_ops = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert [op.get_attr("T") for op in fused_ops] == [tf.bfloat16]


def test_saved_model_reloads_as_the_fused_layer(tmp_path, rng):
    model = resnet(depth=8)
    x = rng.random((2, 32, 32, 3)).astype("float32")
    model(x, training=True)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    kinds = {type(layer) for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert kinds == {FusedBatchNormalization}
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_twice_differentiated_calls_take_the_closed_form_second_derivative(rng, monkeypatch):
    """The regulariser differentiates the input gradient again (docs/method.md §3)."""
    calls = []

    def counted(*args):
        calls.append(args)
        return twice_differentiable_batch_norm(*args)

    monkeypatch.setattr(fused_batch_norm, "twice_differentiable_batch_norm", counted)
    x = tf.constant((rng.normal(size=(6, 5, 4, 3)) * 3 + 2).astype("float32"))
    layer, _ = built_pair(x.shape, momentum=0.8, epsilon=1e-3)
    with tf.GradientTape() as tape, twice_differentiated():
        tape.watch(x)
        outputs = layer(x, training=True)
    assert len(calls) == 1
    expected, mean, variance = numpy_batch_norm(x.numpy(), layer.gamma.numpy(), layer.beta.numpy(), 1e-3)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean, 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, 0.8 + 0.2 * variance, rtol=1e-5)
    assert tape.gradient(outputs, x) is not None
