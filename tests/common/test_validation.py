"""Shared argument checks (`keras_robust.common.validation`)."""

import keras
import numpy as np
import pytest

import keras_robust
from keras_robust.common.validation import check_range
from tests.helpers import tiny_resnet


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


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"rho": 1.5}, r"`rho` must be a finite number > 0.0 and <= 1.0. Received: rho=1.5"),
        ({"steps": 1}, r"`steps` must be an integer in \[2, 10000\]. Received: steps=1"),
        ({"steps": 2.0}, r"`steps` must be an integer in \[2, 10000\]. Received: steps=2.0"),
        ({"steps": 10001}, r"`steps` must be an integer in \[2, 10000\]. Received: steps=10001"),
        ({"overshoot": 0.5}, r"`overshoot` must be a finite number >= 1.0. Received: overshoot=0.5"),
    ],
)
def test_explainer_and_exporter_check_explanation_settings_alike(settings, message, tmp_path):
    from keras_robust.export import export_model

    model = tiny_resnet()
    with pytest.raises(ValueError, match=message):
        keras_robust.AdversarialExplainer(model, **settings)
    with pytest.raises(ValueError, match=message):
        export_model(model, str(tmp_path), name="m", **settings)
