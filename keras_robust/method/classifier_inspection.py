"""What `RobustModel` looks for in a classifier: activations that starve the regulariser, and
normalisation layers, which make input gradients start large (docs/method.md §2, §3a).

The regulariser trains the weights through the derivative of the input
gradient, which for a piecewise-linear activation is zero almost everywhere:
behind ReLU, ReLU6, a leaky ReLU or a hard sigmoid that signal is lost.
"""

import warnings

import keras

# Keras activation functions, by `__name__`, whose second derivative is zero
# almost everywhere (or whose first derivative jumps, as hard swish's does at ±3).
KINKED_ACTIVATIONS = frozenset({
    "relu", "relu6", "leaky_relu", "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "hard_shrink",
    "soft_shrink", "sparse_sigmoid", "threshold",
})
# Keras layers that are such activations whatever their configuration.
KINKED_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.PReLU)
# How many layers a warning names before it counts the rest.
NAMED_LAYERS = 5


# Normalisation layers (Keras' batch norm covers `keras_robust.FusedBatchNormalization`).
NORMALIZATION_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                        keras.layers.GroupNormalization)


def kinked_activation_layers(model):
    """`(layer name, activation name)` for every layer of `model`, nested models included,
    that is or applies an activation of `KINKED_ACTIVATIONS` or `KINKED_LAYERS`."""
    found = []
    for layer in all_layers(model):
        if isinstance(layer, KINKED_LAYERS):
            found.append((layer.name, type(layer).__name__))
        elif getattr(getattr(layer, "activation", None), "__name__", None) in KINKED_ACTIVATIONS:
            found.append((layer.name, layer.activation.__name__))
    return found


def has_normalization(model):
    """Whether `model`, nested models included, has a layer of `NORMALIZATION_LAYERS`."""
    return any(isinstance(layer, NORMALIZATION_LAYERS) for layer in all_layers(model))


def all_layers(model):
    """Every layer of `model` that is not itself a model, nested models' included."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def warn_about_kinked_activations(classifier):
    """Warns, naming the layers, when `classifier` has activations the regulariser cannot train through."""
    found = kinked_activation_layers(classifier)
    if not found:
        return
    named = ", ".join(f"{name} ({activation})" for name, activation in found[:NAMED_LAYERS])
    more = f" and {len(found) - NAMED_LAYERS} more" if len(found) > NAMED_LAYERS else ""
    warnings.warn(
        "RobustModel: the classifier has activations whose second derivative is zero almost everywhere, "
        f"so the Lipschitz regulariser's training signal vanishes behind them: {named}{more}. Convert the "
        "classifier first with keras_robust.with_half_huber_relu(classifier), which smooths ReLU, ReLU6, "
        "hard sigmoid and hard swish with the half-Huber ReLU (docs/method.md §2).",
        UserWarning,
        stacklevel=3,
    )
