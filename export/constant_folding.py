"""Folding an ONNX graph's constant part: nodes that read only initializers, computed once.

A graph converted with its weights as inputs (`onnx_graphs`, to keep the
converter's memory small) still holds the converter's weight preparation
as nodes (a convolution kernel's transpose, a batch norm's
`γ / sqrt(σ² + ε)`); computing them once leaves the graph the converter
would have written with its weights in place.
"""

import numpy as np
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from keras_robust.export.autodiff.classifier import subgraphs, values_read

# Operators whose output is not a function of their inputs alone.
_NOT_FOLDED = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                         "Bernoulli"})


def fold_constants(model):
    """`model` (changed in place and returned) with its initializer-only nodes replaced by their values.

    Args:
        model: An `onnx.ModelProto` whose nodes are in topological order.

    Returns:
        The same `ModelProto`, with no node whose inputs are all
        initializers, and no initializer that nothing reads.
    """
    graph = model.graph
    folded = _foldable(graph)
    folded_ids = {id(node) for node in folded}
    kept = [node for node in graph.node if id(node) not in folded_ids]
    read = {output.name for output in graph.output} | {name for node in kept for name in values_read(node)}
    if folded:
        produced = {name for node in folded for name in node.output}
        values = _evaluate(model, folded, sorted(produced & read))
        graph.initializer.extend(numpy_helper.from_array(np.asarray(value), name) for name, value in values.items())
        del graph.node[:]
        graph.node.extend(kept)
    weights = [tensor for tensor in graph.initializer if tensor.name in read]  # those only folded nodes read go
    del graph.initializer[:]
    graph.initializer.extend(weights)
    return model


def _foldable(graph):
    known = {tensor.name for tensor in graph.initializer}
    folded = []
    for node in graph.node:
        if subgraphs(node) or node.op_type in _NOT_FOLDED or node.domain not in ("", "ai.onnx"):
            continue
        if all(name == "" or name in known for name in node.input):
            folded.append(node)
            known.update(node.output)
    return folded


def _evaluate(model, nodes, names):
    needed = {name for node in nodes for name in node.input}
    initializers = [tensor for tensor in model.graph.initializer if tensor.name in needed]
    outputs = [helper.make_empty_tensor_value_info(name) for name in names]
    part = helper.make_model(helper.make_graph(nodes, "constants", [], outputs, initializer=initializers),
                             opset_imports=model.opset_import)
    return dict(zip(names, ReferenceEvaluator(part).run(None, {})))
