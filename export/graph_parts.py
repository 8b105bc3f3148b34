"""Pieces every exported ONNX graph is built from: the classifier's forward pass copied under a prefix, value
declarations, per-image broadcasting and the finished, checked model."""

import numpy as np
import onnx
from onnx import helper

from keras_robust.export.autodiff.classifier import IMAGES, renamed_nodes

FLOAT, INT32, INT64, BOOL = (onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                             onnx.TensorProto.BOOL)


class Forward:
    """A copy of the classifier's nodes: `nodes`, the name of its `logits`, and `rename` from the original's
    value names to the copy's."""

    def __init__(self, nodes, logits, rename):
        self.nodes, self.logits, self.rename = nodes, logits, rename


def forward_copy(classifier, prefix, source):
    """The classifier's nodes with their values under `prefix`, reading `source` for the images."""
    weights = {tensor.name for tensor in classifier.initializers}

    def rename(name):
        if not name or name in weights:
            return name
        return source if name == IMAGES else prefix + name

    return Forward(renamed_nodes(classifier.nodes, rename, prefix), rename(classifier.logits), rename)


def per_image(emit, value):
    """A `(batch,)` value shaped to broadcast over `(batch, H, W, C)` images."""
    return emit("Unsqueeze", value, emit.ints([1, 2, 3]))


def batch_size(emit):
    """The images' batch size, a 1-D value of one entry (for `Expand`)."""
    return emit("Slice", emit("Shape", IMAGES), emit.ints([0]), emit.ints([1]))


def one_hot(emit, classifier, targets):
    """The int64 `targets` one-hot over the classifier's K classes: ∂ Σ logit_t / ∂ logits."""
    return emit("OneHot", targets, emit.constant(classifier.num_classes, np.int64), emit.constant([0.0, 1.0]))


def images_input(classifier):
    return value_info(IMAGES, FLOAT, ["batch", *classifier.image_shape])


def targets_input():
    return value_info("targets", INT32, ["batch"])


def value_info(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def finished_model(classifier, nodes, inputs, outputs, initializers, endpoint):
    """The graph as a checked model of the classifier's opset."""
    graph = helper.make_graph(nodes, endpoint, inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", classifier.opset)], producer_name="keras-robust",
    )
    model.ir_version = min(model.ir_version, 9)  # readable by onnxruntime releases of the last two years
    onnx.checker.check_model(model, full_check=False)
    return model
