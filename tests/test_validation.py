"""Shared argument checks (`keras_robust.validation`)."""

import keras
import numpy as np
import pytest

import keras_robust
from keras_robust.validation import check_range
from tests.conftest import tiny_resnet


@pytest.mark.parametrize(
    "construct",
    [
        lambda model: keras_robust.RobustModel(model),
        lambda model: keras_robust.AdversarialExplainer(model),
        lambda model: keras_robust.attack(model, np.zeros((1, 32, 32, 3), "float32"), [0], rho=0.1, steps=2),
        lambda model: keras_robust.ara(model, np.zeros((1, 32, 32, 3), "float32"), [0], steps=2),
    ],
    ids=["RobustModel", "AdversarialExplainer", "attack", "ara"],
)
def test_another_keras_backend_is_named_at_construction(construct, monkeypatch):
    model = tiny_resnet()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match=r"TensorFlow backend.*KERAS_BACKEND=tensorflow.*Received: backend='jax'"):
        construct(model)


@pytest.mark.parametrize("value", [0.0, -1, float("nan"), float("inf"), True, "1"])
def test_check_range_names_the_argument_and_the_bound(value):
    with pytest.raises(ValueError, match=r"`rho` must be a finite number > 0.0 and <= 1.0. Received: rho="):
        check_range("rho", value, low=0.0, high=1.0, strict=True)
