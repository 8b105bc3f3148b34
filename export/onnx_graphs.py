"""ONNX graphs of the predict and explain endpoints, converted by tf2onnx."""

import os
import warnings

import tensorflow as tf

from keras_robust.export import signatures
from keras_robust.atomic import write_atomically
from keras_robust.export.gradients import input_gradient

OPSET = 17


def write_onnx(classifier, directory, prefix, image_shape, overshoot, defaults, opset=OPSET):
    """Writes `{prefix}-predict.onnx` and `{prefix}-explain.onnx`; returns their paths.

    Inputs and outputs carry the SavedModel signatures' names, inputs in the
    same order, and a dynamic batch dimension. The explain graph's `rho` and
    `steps` are optional: each is also an initializer holding one entry, its
    value in `defaults` (`{"rho": ..., "steps": ...}`), which ONNX Runtime
    uses when a caller leaves the input out and replaces when one feeds it.
    """
    specs = signatures.input_specs(image_shape)
    functions = {
        "predict": signatures.predict_function(classifier),
        "explain": signatures.explain_function(
            classifier, overshoot, gradient=input_gradient(classifier), checks=False
        ),
    }
    paths = {}
    for endpoint, function in functions.items():
        model = _convert(function, specs[endpoint], opset)
        if endpoint == "explain":
            _add_defaults(model.graph, defaults)
        paths[endpoint] = os.path.join(directory, f"{prefix}-{endpoint}.onnx")
        write_atomically(paths[endpoint], model.SerializeToString())
    return paths


def _convert(function, input_signature, opset):
    """Freezes the traced function with TensorFlow, then converts the graph.

    TensorFlow's own freezing is used because tf2onnx's `from_function` turns
    tensors a while loop captures (the Normalization layer's mean and
    variance) into stray graph inputs.
    """
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = tf.function(function, input_signature=input_signature).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    outputs = sorted(concrete.structured_outputs)  # flattened dict outputs are key-sorted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs],
            opset=opset,
        )
    renames = {t.name: spec.name for t, spec in zip(frozen.inputs, input_signature)}
    renames.update({t.name: name for t, name in zip(frozen.outputs, outputs)})
    _rename(model.graph, renames)
    return model


def _add_defaults(graph, defaults):
    """Makes `rho` and `steps` optional inputs: graph inputs with a default initializer."""
    import onnx

    for name, dtype in (("rho", onnx.TensorProto.FLOAT), ("steps", onnx.TensorProto.INT32)):
        graph.initializer.append(onnx.helper.make_tensor(name, dtype, [1], [defaults[name]]))


def _rename(graph, renames):
    """Renames value names everywhere they occur, subgraphs (the step Loop) included."""
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _rename(attribute.g, renames)
            for subgraph in attribute.graphs:
                _rename(subgraph, renames)

