"""`keras_robust.with_half_huber_relu` and `RobustModel.export` for one's own classifier."""

import keras
import numpy as np
import pytest

import keras_robust
from keras_robust.method.activations import HalfHuberReLU


def np_half_huber(x, delta=0.5):
    """The three pieces of docs/method.md §2, written out."""
    return np.where(x <= 0, 0.0, np.where(x <= delta, x**2 / (2 * delta), x - delta / 2))


def relu_model():
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, activation="relu", name="dense_relu")(inputs)
    x = keras.layers.ReLU(name="plain")(x)
    x = keras.layers.Dense(6, name="dense")(x)
    x = keras.layers.ReLU(max_value=1.0, name="capped")(x)
    x = keras.layers.Dense(4, name="more")(x)
    x = keras.layers.Activation("relu", name="activation")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def np_forward(model, x):
    """The converted network computed with NumPy from the original's weights."""
    w = {layer.name: layer.get_weights() for layer in model.layers if layer.get_weights()}
    dense = lambda name, h: h @ w[name][0] + w[name][1]  # noqa: E731
    h = np_half_huber(np_half_huber(dense("dense_relu", x)))
    h = dense("dense", h)
    h = np_half_huber(h) - np_half_huber(h - 1.0)
    h = np_half_huber(dense("more", h))
    return dense("logits", h)


def test_every_relu_becomes_half_huber_with_the_weights_kept():
    keras.utils.set_random_seed(3)
    model = relu_model()
    smooth = keras_robust.with_half_huber_relu(model)
    x = np.random.default_rng(0).normal(0, 2, (64, 5)).astype("float32")
    np.testing.assert_allclose(smooth.predict(x, verbose=0), np_forward(model, x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(layer, keras.layers.ReLU) for layer in smooth.layers)
    assert smooth.get_layer("capped").max_value == 1.0 and smooth.get_layer("plain").max_value is None
    assert smooth.get_layer("dense_relu").activation is keras_robust.half_huber_relu
    assert model.get_layer("dense_relu").activation is keras.activations.relu  # the original is untouched


def test_the_capped_half_huber_relu_saturates_with_a_continuous_derivative():
    layer = HalfHuberReLU(max_value=6.0)
    x = np.linspace(-2, 9, 2201).astype("float64")
    y = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    np.testing.assert_allclose(y, np_half_huber(x) - np_half_huber(x - 6.0), atol=1e-5)
    assert y.max() == pytest.approx(6.0) and y.min() == 0.0
    slope = np.diff(y) / np.diff(x)
    assert np.abs(np.diff(slope)).max() < 0.02  # no jump anywhere: a kink would jump by 1
    with pytest.raises(ValueError, match="Received: max_value=0.25"):
        HalfHuberReLU(max_value=0.25)


@pytest.mark.slow
def test_a_converted_keras_application_saves_trains_robustly_and_exports(tmp_path):
    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=3,
                                              classifier_activation=None)
    smooth = keras_robust.with_half_huber_relu(backbone)
    relus = sum(isinstance(layer, keras.layers.ReLU) for layer in backbone.layers)
    assert relus == sum(isinstance(layer, HalfHuberReLU) for layer in smooth.layers) == 35
    smooth.save(tmp_path / "smooth.keras")
    reloaded = keras.saving.load_model(tmp_path / "smooth.keras")
    x = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), smooth.predict(x, verbose=0), atol=1e-5)
    robust = keras_robust.RobustModel(smooth)
    robust.compile(optimizer=keras.optimizers.SGD(0.01))
    history = robust.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["psi"][0] > 0
    robust.export(str(tmp_path / "served"))
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "served"))
    np.testing.assert_allclose(served.serve(x).numpy(), smooth.predict(x, verbose=0), atol=1e-4)


def test_what_cannot_be_converted_is_refused_by_name():
    inputs = keras.Input((3,))
    leaky = keras.Model(inputs, keras.layers.LeakyReLU(name="leaky")(keras.layers.Dense(2)(inputs)))
    with pytest.raises(ValueError, match="Received: layers leaky"):
        keras_robust.with_half_huber_relu(leaky)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or sequential"):
        keras_robust.with_half_huber_relu(Subclassed())


def test_hard_sigmoid_and_hard_swish_become_their_half_huber_versions():
    from keras_robust.method.smooth_activations import half_huber_hard_sigmoid, half_huber_hard_swish

    inputs = keras.Input((7,))
    x = keras.layers.Activation("hard_swish", name="swish_layer")(inputs)
    x = keras.layers.Dense(7, activation="hard_sigmoid", name="dense_sigmoid")(x)
    model = keras.Model(inputs, x)
    smooth = keras_robust.with_half_huber_relu(model)
    assert smooth.get_layer("swish_layer").activation is half_huber_hard_swish
    assert smooth.get_layer("dense_sigmoid").activation is half_huber_hard_sigmoid
    x = np.linspace(-5, 5, 2001)
    sigmoid = (np_half_huber(x + 3) - np_half_huber(x - 3)) / 6  # relu6(x + 3) / 6 with a half-Huber ReLU6
    np.testing.assert_allclose(keras.ops.convert_to_numpy(half_huber_hard_sigmoid(x.astype("float32"))), sigmoid,
                               atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(half_huber_hard_swish(x.astype("float32"))), x * sigmoid,
                               atol=1e-5)
    # Away from the bends (|x ± 3| > δ) they are Keras' own functions, shifted by the bend's δ/2 where linear.
    far = np.abs(np.abs(x) - 3) > 0.5
    keras_sigmoid = keras.ops.convert_to_numpy(keras.activations.hard_sigmoid(x.astype("float32")))
    np.testing.assert_allclose(sigmoid[far & (np.abs(x) > 3)], keras_sigmoid[far & (np.abs(x) > 3)], atol=1e-6)
    np.testing.assert_allclose(sigmoid[far & (np.abs(x) < 3)], keras_sigmoid[far & (np.abs(x) < 3)] - 0.25 / 6,
                               atol=1e-6)
    slope = np.diff(x * sigmoid) / np.diff(x)
    assert np.abs(np.diff(slope)).max() < 0.02  # hard swish's derivative jumps by 0.5 at ±3; this one does not
    reloaded = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(smooth))
    assert reloaded.get_layer("swish_layer").activation is half_huber_hard_swish


@pytest.mark.slow
def test_mobilenet_v3_keeps_no_kinked_activation_once_converted():
    from keras_robust.method.classifier_inspection import kinked_activation_layers

    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=3,
                                                   classifier_activation=None)
    assert {activation for _, activation in kinked_activation_layers(backbone)} == {"ReLU", "hard_silu"}
    assert kinked_activation_layers(keras_robust.with_half_huber_relu(backbone)) == []
