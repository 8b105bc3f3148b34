"""One keras.applications network's ONNX gradient, explanation and attributions against TensorFlow.

    python -m tests.keras_application_check NAME

prints `{"gradient": relative error, "gradient_scale": max |gradient|, "explanation": max |δ ONNX − δ TF| or
null, "attributions": {method: relative error}}`. Used by tests/export/test_keras_applications.py, one process
per network. The weights are random but not degenerate (`non_degenerate`): with Keras' initial batch-norm
statistics MobileNetV3Small's logits are about 1e-10, and every comparison of its gradients would pass. The
network compared is its kink-free version (`non_degenerate`: half-Huber activations, average pooling for max
pooling): with activations of order one, the two frameworks' float rounding puts some units on either side of
ReLU's kink or a max pool's tie, and the gradients then rightly differ (InceptionV3's input gradient by 5 %, its
SmoothGrad by 1.3 % at noisy copies, Xception's by 0.9 %). The operators' own derivative rules, kinks included,
are checked one by one in tests/export/test_autodiff_rules.py.
"""

import inspect
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
# The attribution methods' settings here: few noisy copies and quadrature points keep 14 networks quick; a grey
# baseline and mild noise keep every point near the images the batch-norm statistics were measured on (random
# networks explode off them: EfficientNetV2B0's logits reach 1,400 on a black image, its gradient 2.6e5, where
# the two frameworks' rounding differs by 20 %).
ATTRIBUTION_SETTINGS = {"smoothgrad": dict(samples=3, noise=0.05, seed=5),
                        "integrated_gradients": dict(steps=6, baseline=0.5)}


def application(constructor, size):
    """The network with random weights and logits out, for [0, 1] images: without the preprocessing layers some
    take for [0, 255] ones (EfficientNetV2, MobileNetV3, ConvNeXt; EfficientNet, which always has them, has its
    rescaling by 1/255 undone), on which [0, 1] images are all but constant and batch-norm statistics measured on them
    amplify float rounding a thousandfold."""
    build = getattr(A, constructor)
    options = {"include_preprocessing": False} if "include_preprocessing" in inspect.signature(build).parameters else {}
    model = build(weights=None, classes=10, classifier_activation=None, input_shape=(size, size, 3), **options)
    first = model.layers[1]
    if isinstance(first, keras.layers.Rescaling) and np.isclose(first.scale, 1 / 255):  # EfficientNetB0's, always
        first.scale = 1.0
    return model


def non_degenerate(constructor, size):
    """The kink-free network (average pooling for max pooling, then half-Huber activations) with activations and
    logits of order one on random images:
    Keras' initial weights leave each layer's output smaller than its input, and fifty layers on almost nothing.

    Batch-norm statistics are measured on the original network, before its activations are smoothed (measured
    on the half-Huber network, whose quadratic part squares small signals, they scale them back up by as much,
    and float rounding with them); a network without batch norm (VGG16) has each kernel scaled, after, until its
    layer's output has unit spread.
    """
    import keras_robust
    from keras_robust.training.batch_norm import recalibrate_batch_norm

    model = with_average_pooling(application(constructor, size))
    images = np.random.default_rng(1).uniform(0, 1, (64, size, size, 3)).astype(np.float32)
    normalised = any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())
    if normalised:
        recalibrate_batch_norm(model, images, batches=4)
    model = keras_robust.with_half_huber_relu(model)
    if not normalised:
        for layer in model.layers:
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
                probe = keras.Model(model.inputs, layer.output)
                for _ in range(3):  # the half-Huber activation is quadratic below 1: a few rounds settle the spread
                    spread = float(np.std(probe.predict(images, verbose=0)))
                    layer.kernel.assign(layer.kernel / max(spread, 1e-12))
    return model


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
    return float(np.abs(out["gradient"] - expected).max() / np.abs(expected).max()), float(np.abs(expected).max())


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


def attribution_errors(model, classifier, images):
    """`{method: relative max error}` of each exported attribution graph against the Python method, with each
    image's class of most Grad-CAM mass as its target, so that no map is all zero."""
    from keras_robust.explanations import attributions
    from keras_robust.export.attribution_graphs import attribution_models

    masses = [attributions.grad_cam(model, images, np.full(len(images), k)).sum(axis=(1, 2)) for k in range(10)]
    targets = np.argmax(masses, axis=0).astype(np.int32)
    errors = {}
    for method, graph in attribution_models(classifier, attributions.METHODS).items():
        settings = ATTRIBUTION_SETTINGS.get(method, {})
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {key: np.array([value], np.int32)
                 for key, value in settings.items() if key in ("samples", "seed", "steps")}
        feeds.update({key: np.full((1, *images.shape[1:]) if key == "baseline" else 1, value, np.float32)
                      for key, value in settings.items() if key in ("noise", "baseline")})
        out = session.run(["attributions"], {"images": images, "targets": targets, **feeds})[0]
        expected = attributions.METHODS[method](model, images, targets, **settings)
        errors[method] = float(np.abs(out - expected).max() / np.abs(expected).max())
    return errors


def with_average_pooling(model):
    """The network with average pooling where it max-pools, weights kept."""

    def clone(layer):
        if isinstance(layer, keras.layers.MaxPooling2D):
            config = layer.get_config()
            return keras.layers.AveragePooling2D(**{k: config[k] for k in ("pool_size", "strides", "padding", "name")})
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def check(name):
    from keras_robust.explanations.attributions import grad_cam_probe
    from keras_robust.export.onnx_graphs import keras_to_onnx

    constructor, size = APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    model = non_degenerate(constructor, size)
    classifier = keras_to_onnx(model, (size, size, 3), probe=grad_cam_probe(model))
    images = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    error, scale = gradient_error(model, classifier, images, np.array([1, 7]))
    result = {"gradient": error, "gradient_scale": scale, "explanation": None,
              "attributions": attribution_errors(model, classifier, images)}
    if name in EXPLAINED:
        result["explanation"] = explanation_error(model, classifier, images, np.array([4, 2], np.int32))
    return result


if __name__ == "__main__":
    print(json.dumps(check(sys.argv[1])))
