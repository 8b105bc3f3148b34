"""A Keras classifier as an ONNX graph, images → logits, ready for `onnx_endpoints`.

The classifier is converted once, by tf2onnx, with its weights set aside
as inputs: tf2onnx copies the whole graph for each of its optimisation
passes, which for ResNet50's 90 MB of weights took the process to 7 GB.
The weights come back as initializers and the converter's preparation of
them (kernel transposes, batch-norm factors) is folded once
(`constant_folding`). Both endpoints are then
built around that graph, the explain graph's input gradient differentiated
from it operator by operator (`autodiff`). An ONNX classifier from another
framework enters at the same point (`onnx_classifier`).
"""

import warnings

import numpy as np
import tensorflow as tf
from onnx import numpy_helper

from keras_robust.export.autodiff.classifier import prepare_classifier
from keras_robust.export.constant_folding import fold_constants

OPSET = 17
# Keras runs grouped convolutions (depthwise ones included) in XLA-compiled
# functions, which tf2onnx cannot read; without these attributes TensorFlow's
# graph optimiser inlines them.
_COMPILE_ATTRIBUTES = ("_XlaMustCompile", "_noinline")
# Constants this large are weights, set aside during conversion; smaller ones (shapes, axes, clip bounds) stay, as
# some converter rules need their values.
_WEIGHT_SIZE = 1024
_WEIGHT_DTYPES = (tf.float16, tf.float32, tf.float64)


def keras_to_onnx(classifier, image_shape, opset=OPSET, probe=None):
    """The Keras classifier's `images → logits` graph in ONNX, prepared for differentiation.

    With a `probe` (`attributions.grad_cam_probe`: images → feature maps,
    logits), the same conversion also yields Grad-CAM's feature maps, as
    the classifier's `features`.
    """
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tf2onnx.tf_loader import tf_optimize_grappler

    spec = [tf.TensorSpec([None, *image_shape], tf.float32, name="images")]

    def logits(images):
        if probe is None:
            return tf.cast(classifier(images, training=False), tf.float32)
        features, scores = probe(images, training=False)
        return tf.cast(scores, tf.float32), tf.cast(features, tf.float32)

    frozen = convert_variables_to_constants_v2(tf.function(logits, input_signature=spec).get_concrete_function(),
                                               lower_control_flow=False)
    graph_def = _without_compile_attributes(frozen.graph.as_graph_def())
    inputs, outputs = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
    del frozen
    weights = _set_weights_aside(graph_def)
    inputs += list(weights)
    with warnings.catch_warnings(), tf.Graph().as_default():
        warnings.simplefilter("ignore")
        graph_def = tf_optimize_grappler(inputs, outputs, graph_def)
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, opset=opset,
            custom_op_handlers={"Erfc": (_erfc, [])},
        )
    fold_constants(_with_weights(model, weights))
    features = model.graph.output[1].name if probe is not None else None
    return prepare_classifier(model, layout="NHWC", features=features)


def _set_weights_aside(graph_def):
    """Turns the graph's weight constants into placeholders (in place); returns `{tensor name: value}`."""
    weights = {}
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if tensor is None or tf.as_dtype(tensor.dtype) not in _WEIGHT_DTYPES:
            continue
        if np.prod([dim.size for dim in tensor.tensor_shape.dim]) < _WEIGHT_SIZE:
            continue
        weights[node.name + ":0"] = tf.make_ndarray(tensor)
        node.op = "Placeholder"
        node.attr["shape"].shape.CopyFrom(tensor.tensor_shape)
        del node.attr["value"]
    return weights


def _with_weights(model, weights):
    """The converted `model` with the weights set aside as its initializers again (in place)."""
    graph = model.graph
    graph.initializer.extend(
        numpy_helper.from_array(weights[value.name], value.name) for value in graph.input if value.name in weights)
    images = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(images)
    return model


def _without_compile_attributes(graph_def):
    for nodes in [graph_def.node] + [function.node_def for function in graph_def.library.function]:
        for node in nodes:
            for key in _COMPILE_ATTRIBUTES:
                if key in node.attr:
                    del node.attr[key]
    for function in graph_def.library.function:
        for key in _COMPILE_ATTRIBUTES:
            if key in function.attr:
                del function.attr[key]
    return graph_def


def _erfc(ctx, node, name, args):
    """tf2onnx has no Erfc (Keras' exact GELU): erfc(x) = 1 − erf(x)."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name("one"), np.array(1, dtype))
    complement = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(node.name))
    ctx.replace_inputs(complement, [one.output[0], node.output[0]])
    return complement
