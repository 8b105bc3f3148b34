"""The half-Huber ReLU activation (docs/method.md §2)."""

import keras
import tensorflow as tf

DEFAULT_DELTA = 0.5


@keras.saving.register_keras_serializable(package="keras_robust")
def half_huber_relu(x, delta=DEFAULT_DELTA):
    """Half-Huber rectified linear unit (docs/method.md §2).

    Formula:
    ```
    f(x) = 0                 if x <= 0
    f(x) = x**2 / (2 delta)  if 0 < x <= delta
    f(x) = x - delta / 2     if x > delta
    ```
    Its derivative `clip(x, 0, delta) / delta` is continuous and itself
    differentiable, which the Lipschitz regulariser's double backpropagation
    relies on.

    Example:

    >>> x = keras.ops.convert_to_tensor([-1.0, 0.25, 0.5, 2.0])
    >>> keras.ops.convert_to_numpy(half_huber_relu(x))
    array([0.    , 0.0625, 0.25  , 1.75  ], dtype=float32)

    Args:
        x: Input tensor.
        delta: Width of the quadratic region. Must be positive.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    # f(x) = c (x - c/2) / delta with c = clip(x, 0, delta) covers all three
    # pieces. The hand-written gradient, dy * c / delta, is a few element-wise
    # ops where automatic differentiation of the pieces takes many more; it is
    # itself made of differentiable ops, so the regulariser's second
    # derivative (1/delta inside (0, delta)) comes out exact. Element-wise
    # passes are much of a double-backprop step's cost without XLA.
    inverse_delta = 1.0 / delta

    @tf.custom_gradient
    def function(x):
        inside = tf.clip_by_value(x, 0.0, delta)

        def gradient(upstream):
            # Recomputed from x: what the forward made is invisible to an
            # outer tape, which would lose the second derivative.
            return upstream * tf.clip_by_value(x, 0.0, delta) * inverse_delta

        return inside * (x - 0.5 * inside) * inverse_delta, gradient

    return function(tf.convert_to_tensor(x))


@keras.saving.register_keras_serializable(package="keras_robust")
class HalfHuberReLU(keras.layers.Layer):
    """Half-Huber rectified linear unit layer (docs/method.md §2).

    Formula:
    ```
    f(x) = 0                 if x <= 0
    f(x) = x**2 / (2 delta)  if 0 < x <= delta
    f(x) = x - delta / 2     if x > delta
    ```
    With `max_value` m, the output is `f(x) - f(x - m)`: the same bend
    mirrored at m, so it saturates at m like `ReLU(max_value=m)` (ReLU6)
    with a continuous derivative (not part of the paper; for converting
    networks built with capped ReLUs).

    Example:

    >>> layer = HalfHuberReLU()
    >>> keras.ops.convert_to_numpy(layer(keras.ops.ones((1, 2))))
    array([[0.75, 0.75]], dtype=float32)

    Args:
        delta: Float > 0, width of the quadratic region. Defaults to `0.5`,
            the paper's value.
        max_value: None (default, the paper's function), or a float > delta
            where the output saturates.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.
    """

    def __init__(self, delta=DEFAULT_DELTA, max_value=None, **kwargs):
        super().__init__(**kwargs)
        if delta is None or not delta > 0:
            raise ValueError(
                "The value of `delta` for layer HalfHuberReLU must be a "
                f"positive float. Received: delta={delta}"
            )
        if max_value is not None and not max_value > delta:
            raise ValueError(
                "The value of `max_value` for layer HalfHuberReLU must be None or greater than "
                f"delta ({delta}). Received: max_value={max_value}"
            )
        self.delta = float(delta)
        self.max_value = None if max_value is None else float(max_value)
        self.supports_masking = True

    def call(self, inputs):
        outputs = half_huber_relu(inputs, delta=self.delta)
        if self.max_value is None:
            return outputs
        # The cap mirrors the bend at 0, so the derivative stays continuous there too.
        return outputs - half_huber_relu(inputs - self.max_value, delta=self.delta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"delta": self.delta, "max_value": self.max_value})
        return config


def get_activation_layer(activation, name=None):
    """Returns a fresh activation layer for `"relu"`, `"half_huber_relu"` or a layer.

    Keras 3's `keras.activations.get` only knows its own built-in names, so the
    string `"half_huber_relu"` is resolved here for this package's builders.
    """
    if activation == "half_huber_relu":
        return HalfHuberReLU(name=name)
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if isinstance(activation, keras.layers.Layer):
        return activation.__class__.from_config(
            {**activation.get_config(), "name": name}
        )
    raise ValueError(
        "`activation` must be 'relu', 'half_huber_relu' or a Keras layer. "
        f"Received: activation={activation!r}"
    )
