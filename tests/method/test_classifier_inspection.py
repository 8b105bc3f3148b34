"""The warning about activations the regulariser cannot train through, and the normalisation check."""

import warnings

import keras
import pytest

import keras_robust
from keras_robust import RobustModel
from keras_robust.method.classifier_inspection import has_normalization, kinked_activation_layers


def kinked_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_relu")(inputs)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    x = keras.layers.Activation("hard_sigmoid", name="hard_sigmoid")(x)
    x = keras.layers.Activation("hard_swish", name="hard_swish")(x)
    x = keras.layers.Activation("swish", name="swish")(x)
    x = keras.layers.LeakyReLU(name="leaky")(x)
    x = keras.layers.Flatten()(x)
    inner = keras.Sequential([keras.Input((144,)), keras.layers.Dense(3, activation="relu6", name="inner_relu6")],
                             name="head")
    return keras.Model(inputs, inner(x))


def test_the_kinked_activations_are_found_by_name_in_nested_models_too():
    assert kinked_activation_layers(kinked_model()) == [
        ("conv_relu", "relu"), ("relu6", "ReLU"), ("hard_sigmoid", "hard_sigmoid"), ("hard_swish", "hard_silu"),
        ("leaky", "LeakyReLU"), ("inner_relu6", "relu6"),
    ]


def test_robust_model_warns_once_naming_the_layers_and_the_conversion():
    with pytest.warns(UserWarning) as caught:
        RobustModel(kinked_model())
    messages = [str(w.message) for w in caught if "second derivative" in str(w.message)]
    assert len(messages) == 1
    assert "conv_relu (relu), relu6 (ReLU), hard_sigmoid (hard_sigmoid), hard_swish (hard_silu), leaky (LeakyReLU)" \
        " and 1 more" in messages[0]
    assert "keras_robust.with_half_huber_relu" in messages[0]


def test_no_warning_once_converted_or_without_the_regulariser():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Activation("hard_swish")(keras.layers.ReLU(6.0)(x))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RobustModel(keras_robust.with_half_huber_relu(model))
        RobustModel(model, robust=False)
        RobustModel(keras_robust.resnet(depth=8))


def test_normalisation_layers_are_found_in_nested_models():
    assert has_normalization(keras_robust.resnet(depth=8))
    nested = keras.Sequential([keras.Input((4,)), keras.Sequential([keras.layers.LayerNormalization()])])
    assert has_normalization(nested)
    assert not has_normalization(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
