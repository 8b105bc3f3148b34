"""Every keras.applications image classifier exports an explain graph, and it is exact.

Random weights, 10 classes, logits out, the smallest input each allows.
For each, the ONNX input gradient equals TensorFlow's autodiff gradient,
and (for a sample covering every kind of layer) the ONNX explanation
equals `AdversarialExplainer`'s.
"""

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

import keras_robust
from keras_robust.export import export_model
from keras_robust.export.autodiff import gradient_model
from keras_robust.export.onnx_endpoints import explain_model
from keras_robust.export.onnx_graphs import keras_to_onnx
from tests.conftest import run_onnx

A = keras.applications
APPLICATIONS = {
    "ResNet50": (A.ResNet50, 32), "ResNet50V2": (A.ResNet50V2, 32), "MobileNet": (A.MobileNet, 32),
    "MobileNetV2": (A.MobileNetV2, 32), "MobileNetV3Small": (A.MobileNetV3Small, 32),
    "MobileNetV3Large": (A.MobileNetV3Large, 32), "EfficientNetB0": (A.EfficientNetB0, 32),
    "EfficientNetV2B0": (A.EfficientNetV2B0, 32), "DenseNet121": (A.DenseNet121, 32),
    "InceptionV3": (A.InceptionV3, 75), "Xception": (A.Xception, 71), "VGG16": (A.VGG16, 32),
    "ConvNeXtTiny": (A.ConvNeXtTiny, 32), "NASNetMobile": (A.NASNetMobile, 32),
}
# Explanations are compared on networks that together hold every kind of layer:
# hard-swish and squeeze-excitation, swish, dense blocks with average pooling,
# layer norm with GELU and depthwise 7x7, NASNet's cells with cropping and pads.
EXPLAINED = {"MobileNetV3Small", "EfficientNetB0", "DenseNet121", "ConvNeXtTiny", "NASNetMobile"}
# ReLU-like kinks make long trajectories diverge on rounding (tests/test_export.py).
STEPS = 4


def _gradient_error(model, classifier, images, labels):
    session = ort.InferenceSession(gradient_model(classifier).SerializeToString(), providers=["CPUExecutionProvider"])
    out = run_onnx(session, images=images, labels=labels.astype(np.int64))
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images, training=False)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    expected = tape.gradient(loss, images).numpy()
    np.testing.assert_allclose(out["logits"], logits.numpy(), rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    return np.abs(out["gradient"] - expected).max() / np.abs(expected).max()


def _explanation_error(model, classifier, images, targets):
    graph = explain_model(classifier, overshoot=5.0, defaults={"rho": 0.1, "steps": STEPS})
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    out = run_onnx(session, images=images, targets=targets)
    explainer = keras_robust.AdversarialExplainer(model, rho=0.1, steps=STEPS, overshoot=5.0, sanity_check=False)
    expected = explainer.explain(images, targets[:, None])
    np.testing.assert_allclose(out["target_confidence"], expected.confidence_after[:, 0], atol=1e-3)
    return np.abs(out["delta"] - expected.delta[:, 0]).max()


@pytest.mark.slow
@pytest.mark.parametrize("name", APPLICATIONS)
def test_onnx_gradient_and_explanation_equal_tensorflow(name):
    constructor, size = APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    model = constructor(weights=None, classes=10, classifier_activation=None, input_shape=(size, size, 3))
    classifier = keras_to_onnx(model, (size, size, 3))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    assert _gradient_error(model, classifier, images, np.array([1, 7])) <= 1e-4
    if name in EXPLAINED:
        assert _explanation_error(model, classifier, images, np.array([4, 2], np.int32)) <= 1e-3


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
    assert _gradient_error(model, classifier, images, np.array([0, 9])) <= 1e-4
    explained = run_onnx(ort.InferenceSession(paths["onnx_explain"]), images=images, targets=np.array([3, 3], np.int32))
    expected = keras_robust.AdversarialExplainer(model, steps=STEPS, sanity_check=False).explain(images, [[3], [3]])
    np.testing.assert_allclose(explained["delta"], expected.delta[:, 0], atol=1e-3)
