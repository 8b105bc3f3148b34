"""The forward-op input gradient of the ONNX explain graph, against TensorFlow's tape."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust.activations import HalfHuberReLU
from keras_robust.export import describe_unsupported, input_gradient
from tests.conftest import tiny_resnet


@pytest.mark.parametrize("activation", ["half_huber_relu", "relu"])
def test_matches_tape_gradient_of_summed_cross_entropy(activation):
    model = tiny_resnet(activation)
    images = tf.random.stateless_uniform((4, 32, 32, 3), seed=(1, 2))
    labels = tf.constant([0, 3, 7, 9])
    logits, grad = input_gradient(model)(images, labels)
    with tf.GradientTape() as tape:
        tape.watch(images)
        expected_logits = model(images, training=False)
        loss = tf.reduce_sum(
            keras.losses.sparse_categorical_crossentropy(labels, expected_logits, from_logits=True)
        )
    np.testing.assert_allclose(logits, expected_logits, atol=1e-6)
    np.testing.assert_allclose(grad, tape.gradient(loss, images), atol=1e-6)


def test_matches_central_differences_on_a_small_network():
    """float64 and the (C¹) half-Huber ReLU, so differences do not straddle a kink."""
    keras.utils.set_random_seed(3)
    model = _small_network()
    images = np.random.default_rng(0).uniform(0, 1, (1, 6, 6, 2))
    _, grad = input_gradient(model)(tf.constant(images), tf.constant([1]))

    def loss(values):
        logits = model(tf.constant(values), training=False).numpy()[0]
        return np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[1]

    h = 1e-6
    numeric = np.zeros_like(images)
    for index in np.ndindex(images.shape):
        bump = np.zeros_like(images)
        bump[index] = h
        numeric[index] = (loss(images + bump) - loss(images - bump)) / (2 * h)
    np.testing.assert_allclose(grad.numpy(), numeric, atol=1e-7)


def _small_network():
    inputs = keras.Input((6, 6, 2), dtype="float64")
    x = keras.layers.Normalization(mean=[0.2, 0.4], variance=[0.04, 0.09], dtype="float64")(inputs)
    x = keras.layers.ZeroPadding2D(1, dtype="float64")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, use_bias=False, dtype="float64")(x)
    y = keras.layers.BatchNormalization(dtype="float64")(x)
    y = HalfHuberReLU(dtype="float64")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", dtype="float64")(y)
    x = keras.layers.Add(dtype="float64")([x, y])
    x = keras.layers.GlobalAveragePooling2D(dtype="float64")(x)
    return keras.Model(inputs, keras.layers.Dense(3, dtype="float64")(x))


def test_names_unsupported_layers():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, activation="tanh", name="tanh_conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(x)))
    problems = " ".join(describe_unsupported(model))
    assert "'tanh_conv' (Conv2D)" in problems and "'pool' (MaxPooling2D)" in problems
    assert "Flatten" in problems and "'logits'" not in problems
    with pytest.raises(ValueError, match="MaxPooling2D"):
        input_gradient(model)


def test_subclasses_and_repeated_layers_get_no_rule_by_inheritance():
    class ScaledConv(keras.layers.Conv2D):  # overrides call: the Conv2D rule would be wrong
        def call(self, x):
            return 2.0 * super().call(x)

    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = ScaledConv(3, 3, padding="same", name="scaled")(shared(shared(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(x)))
    problems = describe_unsupported(model)
    assert "layer 'scaled' (ScaledConv): no derivative rule for this layer type" in problems
    assert "layer 'shared' (Conv2D): a layer called more than once" in problems
    assert len(problems) == 2
