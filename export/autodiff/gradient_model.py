"""`gradient_model`: a classifier's input gradient as an ONNX graph of its own."""

import numpy as np
import onnx
from onnx import helper

from keras_robust.export.autodiff.backprop import backpropagate
from keras_robust.export.autodiff.classifier import IMAGES, prepare_classifier
from keras_robust.export.autodiff.emitter import Emitter


def gradient_model(classifier):
    """`(images, labels) → (logits, gradient)` with `gradient = ∂ΣCE(logits, labels)/∂images`.

    The cross-entropy is summed over the batch, so each row of the gradient
    is that image's own (docs/method.md §4).

    Example:

    >>> classifier = prepare_classifier("model.onnx", layout="NCHW")
    >>> session = onnxruntime.InferenceSession(gradient_model(classifier).SerializeToString())
    >>> logits, gradient = session.run(None, {"images": x, "labels": y})

    Args:
        classifier: A `Classifier` from `prepare_classifier`.

    Returns:
        An `onnx.ModelProto`; `labels` is int64 `(batch,)`.
    """
    emit = Emitter("gradient", shapes=classifier.shapes, constants=classifier.constants())
    one_hot = emit("OneHot", "labels", emit.constant(classifier.num_classes, np.int64), emit.constant([0.0, 1.0]))
    seed = emit("Sub", emit("Softmax", classifier.logits, axis=1), one_hot)
    gradient = backpropagate(emit, classifier.nodes, IMAGES, classifier.logits, seed)
    image_shape = ["batch", *classifier.image_shape]
    graph = helper.make_graph(
        list(classifier.nodes) + emit.nodes
        + [helper.make_node("Identity", [classifier.logits], ["logits"]),
           helper.make_node("Identity", [gradient], ["gradient"])],
        "input_gradient",
        [helper.make_tensor_value_info(IMAGES, onnx.TensorProto.FLOAT, image_shape),
         helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", classifier.num_classes]),
         helper.make_tensor_value_info("gradient", onnx.TensorProto.FLOAT, image_shape)],
        list(classifier.initializers) + emit.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", classifier.opset)])
    model.ir_version = min(model.ir_version, 9)
    return model


def describe_unsupported(model, **prepare_options):
    """Names each operator node on the image → logits path that has no derivative rule.

    Args:
        model: An ONNX classifier (`ModelProto` or path), or a `Classifier`.
        **prepare_options: `layout`, `mean`, `std`, `image_size` for
            `prepare_classifier`.

    Returns:
        `["OpType node 'name': reason", ...]`, empty when every node has one.
    """
    classifier = model if hasattr(model, "nodes") else prepare_classifier(model, **prepare_options)
    return classifier.unsupported()
