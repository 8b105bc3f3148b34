"""Every keras.applications image classifier exports explain and attribution graphs, and they are exact.

Random but non-degenerate weights, 10 classes, logits out, the smallest input
each allows. For each, the ONNX input gradient (far from zero) equals
TensorFlow's autodiff gradient, each attribution graph the Python method,
and (for a sample covering every kind of layer) the ONNX explanation
equals `AdversarialExplainer`'s. Each network is checked in a process of
its own (tests/keras_application_check.py), two at a time: a converted
network's graphs stay in TensorFlow's memory, and conversion is mostly
single-threaded Python.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

import keras
import numpy as np
import onnxruntime as ort
import pytest

import keras_robust
from keras_robust.export import export_model
from keras_robust.export.card import ATTRIBUTION_METHODS
from keras_robust.export.onnx_graphs import keras_to_onnx
from tests.helpers import REPO_ROOT, run_onnx
from tests.keras_application_check import APPLICATIONS, STEPS, A, gradient_error


# Relative error of the input gradient and each attribution against TensorFlow. Random weights with activations
# of order one amplify float rounding: most networks agree to a few 1e-6, InceptionV3 (the deepest, at 75 px) to
# about 1.1e-4 on the machine these were measured on; a wrong derivative rule errs by order one.
TOLERANCE = 3e-4


@pytest.fixture(scope="module")
def checked():
    """`{name: {"gradient": error, ...} or the check's error output}` of every application."""

    def check(name):
        completed = subprocess.run(
            [sys.executable, "-m", "tests.keras_application_check", name], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if completed.returncode != 0:
            return completed.stderr[-3000:]
        return json.loads(completed.stdout.strip().splitlines()[-1])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(zip(APPLICATIONS, pool.map(check, APPLICATIONS)))


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_onnx_gradient_and_explanation_equal_tensorflow(checked, name):
    assert isinstance(checked[name], dict), checked[name]
    assert checked[name]["gradient_scale"] > 1e-3  # a comparison of vanishing gradients could not fail
    assert checked[name]["gradient"] <= TOLERANCE
    assert set(checked[name]["attributions"]) == set(ATTRIBUTION_METHODS)
    for method, error in checked[name]["attributions"].items():
        assert error <= TOLERANCE, method
    if checked[name]["explanation"] is not None:
        assert checked[name]["explanation"] <= 1e-3


@keras.saving.register_keras_serializable(package="keras_robust_tests")
class SmoothGate(keras.layers.Layer):
    """A custom layer in keras.ops only: x·sigmoid(βx) + 0.1·tanh(x)², β per channel."""

    def build(self, input_shape):
        self.beta = self.add_weight(shape=(input_shape[-1],), initializer=keras.initializers.RandomUniform(0.5, 2.0))

    def call(self, x):
        return x * keras.ops.sigmoid(self.beta * x) + 0.1 * keras.ops.square(keras.ops.tanh(x))


def _nested_backbone():
    """A backbone nested in a functional model, Rescaling in front, a custom layer on top."""
    keras.utils.set_random_seed(1)
    backbone = A.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = SmoothGate()(backbone(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="nested")


@pytest.mark.slow
def test_nested_backbone_with_rescaling_and_a_custom_layer_exports_and_explains(tmp_path):
    model = _nested_backbone()
    paths = export_model(model, str(tmp_path), formats=("onnx",), steps=STEPS)
    images = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    classifier = keras_to_onnx(model, (32, 32, 3))
    assert gradient_error(model, classifier, images, np.array([0, 9]))[0] <= 1e-4
    explained = run_onnx(ort.InferenceSession(paths["onnx_explain"]), images=images, targets=np.array([3, 3], np.int32))
    expected = keras_robust.AdversarialExplainer(model, steps=STEPS, sanity_check=False).explain(images, [[3], [3]])
    np.testing.assert_allclose(explained["delta"], expected.delta[:, 0], atol=1e-3)
