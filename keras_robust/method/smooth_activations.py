"""`with_half_huber_relu`: a copy of a Keras classifier whose ReLUs are half-Huber ReLUs.

The Lipschitz regulariser differentiates the input gradient again (docs/method.md
§3), which a ReLU's step derivative makes zero almost everywhere; robust
training of an existing network therefore starts by smoothing its ReLUs.
"""

import keras

from keras_robust.method.activations import HalfHuberReLU, half_huber_relu


def with_half_huber_relu(model):
    """A copy of `model` with every ReLU replaced by the half-Huber ReLU, weights kept.

    Replaced: `keras.layers.ReLU` layers (one with `max_value`, like
    MobileNetV2's ReLU6, by a `HalfHuberReLU` that saturates there too),
    `Activation("relu")` layers, and `activation="relu"` in any layer (Dense,
    Conv2D, ...), in nested models as well. A leaky or thresholded ReLU has
    no half-Huber counterpart and is refused by name.

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
    unsupported = [layer.name for layer in _all_layers(model) if _unsupported(layer)]
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
    if isinstance(layer, keras.layers.Activation) and _is_relu(layer.activation):
        return HalfHuberReLU(name=layer.name)
    if _is_relu(getattr(layer, "activation", None)):
        clone = layer.__class__.from_config({**config, "activation": "linear"})
        clone.activation = half_huber_relu
        return clone
    return layer.__class__.from_config(config)


def _is_relu(activation):
    return activation is keras.activations.relu or getattr(activation, "__name__", None) == "relu"


def _unsupported(layer):
    if isinstance(layer, keras.layers.ReLU):
        return float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0
    return isinstance(layer, keras.layers.LeakyReLU)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _is_functional(model):
    # keras.Model(inputs, outputs) makes a `Functional`, which Keras does not export by name.
    return type(model).__name__ == "Functional"
