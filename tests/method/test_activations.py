import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust import HalfHuberReLU, half_huber_relu


def closed_form(x, delta):
    return np.where(x <= 0, 0.0, np.where(x <= delta, x * x / (2 * delta), x - delta / 2))


def closed_form_derivative(x, delta):
    return np.clip(x, 0, delta) / delta


GRID = np.array([-3.0, -1e-3, 0.0, 1e-3, 0.1, 0.25, 0.4999, 0.5, 0.5001, 0.9, 3.0])


@pytest.mark.parametrize("delta", [0.5, 0.3])
def test_values_match_closed_form(delta):
    grid = np.concatenate([GRID, [delta, delta - 1e-4, delta + 1e-4]]).astype("float32")
    out = keras.ops.convert_to_numpy(half_huber_relu(grid, delta=delta))
    np.testing.assert_allclose(out, closed_form(grid.astype("float64"), delta), atol=1e-7)


@pytest.mark.parametrize("delta", [0.5, 0.3])
def test_first_derivative_matches_closed_form_including_kinks(delta):
    grid = tf.constant(np.concatenate([GRID, [delta]]), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(grid)
        y = HalfHuberReLU(delta=delta)(grid)
    grad = tape.gradient(y, grid).numpy()
    np.testing.assert_allclose(grad, closed_form_derivative(grid.numpy(), delta), atol=1e-6)
    assert grad[list(grid.numpy()).index(0.0)] == 0.0
    assert grad[-1] == pytest.approx(1.0)


def test_second_derivative_is_one_over_delta_inside_and_zero_outside():
    delta = 0.5
    x = tf.constant([-1.0, 0.1, 0.3, 0.45, 0.7, 2.0])
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = half_huber_relu(x, delta)
        first = inner.gradient(y, x)
    second = outer.gradient(first, x).numpy()
    np.testing.assert_allclose(second, [0, 2, 2, 2, 0, 0], atol=1e-6)


def test_first_derivative_is_continuous():
    delta = 0.5
    for point in (0.0, delta):
        left = tf.constant([point - 1e-4])
        right = tf.constant([point + 1e-4])
        grads = []
        for x in (left, right):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = half_huber_relu(x, delta)
            grads.append(float(tape.gradient(y, x)[0]))
        assert abs(grads[0] - grads[1]) < 1e-3


def test_layer_serialises_and_survives_a_keras_file(tmp_path):
    layer = HalfHuberReLU(delta=0.25, name="hh")
    clone = HalfHuberReLU.from_config(layer.get_config())
    assert clone.delta == 0.25 and clone.name == "hh"
    model = keras.Sequential([keras.Input((3,)), HalfHuberReLU(delta=0.25)])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.array([[-1.0, 0.1, 2.0]], "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), closed_form(x, 0.25), atol=1e-7)


def test_function_usable_as_keras_activation():
    layer = keras.layers.Dense(2, activation=half_huber_relu, kernel_initializer="ones")
    out = keras.ops.convert_to_numpy(layer(np.array([[0.2, 0.0]], "float32")))
    np.testing.assert_allclose(out, closed_form(np.array([[0.2, 0.2]]), 0.5), atol=1e-7)


@pytest.mark.parametrize("delta", [0, -1.0, None])
def test_rejects_non_positive_delta(delta):
    with pytest.raises(ValueError, match="Received: delta="):
        HalfHuberReLU(delta=delta)


def test_double_backprop_weight_gradient_matches_finite_differences():
    """The regulariser's path: d/dw of |d/dx sum(u * f(w x))|^2, through the
    hand-written gradient's dependence on both x and the upstream gradient."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.uniform(-0.5, 1.5, 6))
    u = tf.constant(rng.uniform(0.5, 2.0, 6))

    def penalty(w):
        with tf.GradientTape() as outer:
            outer.watch(w)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(u * half_huber_relu(w * x, 0.5) * w)
            value = tf.reduce_sum(tf.square(inner.gradient(y, x)))
        return value, outer.gradient(value, w)

    w = tf.constant(0.8, tf.float64)
    _, analytic = penalty(w)
    step = 1e-6
    numeric = (penalty(w + step)[0] - penalty(w - step)[0]) / (2 * step)
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)
