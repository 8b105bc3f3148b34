"""One keras.applications network's ONNX gradient and explanation against TensorFlow.

    python -m tests.keras_application_check NAME

prints `{"gradient": relative error, "explanation": max |δ ONNX − δ TF| or null}`.
Used by tests/export/test_keras_applications.py, one process per network.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402

A = keras.applications
APPLICATIONS = {
    "ResNet50": ("ResNet50", 32), "ResNet50V2": ("ResNet50V2", 32), "MobileNet": ("MobileNet", 32),
    "MobileNetV2": ("MobileNetV2", 32), "MobileNetV3Small": ("MobileNetV3Small", 32),
    "MobileNetV3Large": ("MobileNetV3Large", 32), "EfficientNetB0": ("EfficientNetB0", 32),
    "EfficientNetV2B0": ("EfficientNetV2B0", 32), "DenseNet121": ("DenseNet121", 32),
    "InceptionV3": ("InceptionV3", 75), "Xception": ("Xception", 71), "VGG16": ("VGG16", 32),
    "ConvNeXtTiny": ("ConvNeXtTiny", 32), "NASNetMobile": ("NASNetMobile", 32),
}
# Explanations are compared on networks that together hold the layers the
# others do not: hard-swish, squeeze-excitation and Clip; layer norm, GELU
# and depthwise 7x7 convolutions.
EXPLAINED = {"MobileNetV3Small", "ConvNeXtTiny"}
# ReLU-like kinks make long trajectories diverge on rounding (tests/export/test_exporter.py).
STEPS = 4


def gradient_error(model, classifier, images, labels):
    """Relative max error of the ONNX input gradient against TensorFlow's tape."""
    from keras_robust.export.autodiff import gradient_model

    session = ort.InferenceSession(gradient_model(classifier).SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    out = dict(zip(names, session.run(names, {"images": images, "labels": labels.astype(np.int64)})))
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images, training=False)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    expected = tape.gradient(loss, images).numpy()
    np.testing.assert_allclose(out["logits"], logits.numpy(), rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    return float(np.abs(out["gradient"] - expected).max() / np.abs(expected).max())


def explanation_error(model, classifier, images, targets):
    """Max |δ| difference of the ONNX explain graph and `AdversarialExplainer`, `STEPS` steps."""
    import keras_robust
    from keras_robust.export.onnx_endpoints import explain_model

    graph = explain_model(classifier, overshoot=5.0, defaults={"rho": 0.1, "steps": STEPS})
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    delta, confidence = session.run(["delta", "target_confidence"], {"images": images, "targets": targets})
    explainer = keras_robust.AdversarialExplainer(model, rho=0.1, steps=STEPS, overshoot=5.0, sanity_check=False)
    expected = explainer.explain(images, targets[:, None])
    np.testing.assert_allclose(confidence, expected.confidence_after[:, 0], atol=1e-3)
    return float(np.abs(delta - expected.delta[:, 0]).max())


def check(name):
    from keras_robust.export.onnx_graphs import keras_to_onnx

    constructor, size = APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    model = getattr(A, constructor)(weights=None, classes=10, classifier_activation=None,
                                    input_shape=(size, size, 3))
    classifier = keras_to_onnx(model, (size, size, 3))
    images = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    result = {"gradient": gradient_error(model, classifier, images, np.array([1, 7])), "explanation": None}
    if name in EXPLAINED:
        result["explanation"] = explanation_error(model, classifier, images, np.array([4, 2], np.int32))
    return result


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
