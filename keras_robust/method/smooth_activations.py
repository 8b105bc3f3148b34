"""`with_half_huber_relu`: a copy of a Keras classifier whose ReLUs are half-Huber ReLUs.

The Lipschitz regulariser differentiates the input gradient again (docs/method.md
§3), which a ReLU's step derivative makes zero almost everywhere; robust
training of an existing network therefore starts by smoothing its ReLUs, and
the hard sigmoid and hard swish built from ReLU6.
"""

import keras

from keras_robust.method.activations import HalfHuberReLU, half_huber_relu
from keras_robust.method.classifier_inspection import all_layers

# Keras' hard sigmoid is relu6(x + 3) / 6.
HARD_SIGMOID_SHIFT = 3.0
HARD_SIGMOID_CAP = 6.0


@keras.saving.register_keras_serializable(package="keras_robust")
def half_huber_hard_sigmoid(x):
    """Keras' hard sigmoid `relu6(x + 3) / 6` with its ReLU6 smoothed as `HalfHuberReLU(max_value=6)`.

    Formula, with `h` the half-Huber ReLU (δ = 0.5):
    ```
    f(x) = (h(x + 3) - h(x - 3)) / 6
    ```
    0 below -3, 1 above 3, and in between Keras' line lowered by δ/12, as
    the half-Huber ReLU lies δ/2 under the ReLU where both are linear.

    Example:

    >>> keras.ops.convert_to_numpy(half_huber_hard_sigmoid(keras.ops.convert_to_tensor([-4.0, 0.0, 4.0])))
    array([0.        , 0.45833334, 1.        ], dtype=float32)

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    capped = half_huber_relu(x + HARD_SIGMOID_SHIFT) - half_huber_relu(x + HARD_SIGMOID_SHIFT - HARD_SIGMOID_CAP)
    return capped / HARD_SIGMOID_CAP


@keras.saving.register_keras_serializable(package="keras_robust")
def half_huber_hard_swish(x):
    """Keras' hard swish `x · hard_sigmoid(x)` with `half_huber_hard_sigmoid` in it.

    Example:

    >>> keras.ops.convert_to_numpy(half_huber_hard_swish(keras.ops.convert_to_tensor([-4.0, 4.0])))
    array([-0.,  4.], dtype=float32)

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return x * half_huber_hard_sigmoid(x)


# Keras activation functions, by `__name__`, and their smooth replacements.
SMOOTHED = {"relu": half_huber_relu, "hard_sigmoid": half_huber_hard_sigmoid,
            "hard_silu": half_huber_hard_swish, "hard_swish": half_huber_hard_swish}


def with_half_huber_relu(model):
    """A copy of `model` with every ReLU replaced by the half-Huber ReLU, weights kept.

    Replaced: `keras.layers.ReLU` layers (one with `max_value`, like
    MobileNetV2's ReLU6, by a `HalfHuberReLU` that saturates there too);
    the activations `"relu"`, `"hard_sigmoid"` and `"hard_swish"` (MobileNetV3's)
    in `Activation` layers and in any layer's `activation` (Dense, Conv2D, ...),
    by `half_huber_relu`, `half_huber_hard_sigmoid` and `half_huber_hard_swish`;
    in nested models as well. Smooth activations (swish, GELU, ...) already
    have an informative second derivative and are kept. A leaky or thresholded
    ReLU has no half-Huber counterpart and is refused by name.

    Example:

    >>> backbone = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10,
    ...                                           classifier_activation=None)
    >>> smooth = keras_robust.with_half_huber_relu(backbone)
    >>> robust = keras_robust.RobustModel(smooth)

    Args:
        model: A functional or sequential `keras.Model`.

    Returns:
        A new model of the same structure and weights.
    """
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(
            "`model` must be a functional or sequential keras.Model (a subclassed model's code "
            f"cannot be rewritten). Received: model={model!r}"
        )
    unsupported = [layer.name for layer in all_layers(model) if _unsupported(layer)]
    if unsupported:
        raise ValueError(
            "Leaky or thresholded ReLUs have no half-Huber counterpart. Received: layers "
            f"{', '.join(unsupported)}"
        )
    smooth = keras.models.clone_model(model, clone_function=_smooth_layer)
    smooth.set_weights(model.get_weights())
    return smooth


def _smooth_layer(layer):
    if isinstance(layer, keras.Model):
        return with_half_huber_relu(layer)
    if isinstance(layer, keras.layers.ReLU):
        return HalfHuberReLU(max_value=layer.max_value, name=layer.name)
    config = layer.get_config()
    smooth = SMOOTHED.get(getattr(getattr(layer, "activation", None), "__name__", None))
    if isinstance(layer, keras.layers.Activation) and smooth is half_huber_relu:
        return HalfHuberReLU(name=layer.name)
    if smooth is not None:
        clone = layer.__class__.from_config({**config, "activation": "linear"})
        clone.activation = smooth
        return clone
    return layer.__class__.from_config(config)


def _unsupported(layer):
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0
    return isinstance(layer, keras.layers.LeakyReLU)


def _is_functional(model):
    # keras.Model(inputs, outputs) makes a `Functional`, which Keras does not export by name.
    return type(model).__name__ == "Functional"
