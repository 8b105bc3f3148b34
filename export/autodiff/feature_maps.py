"""Grad-CAM's feature maps in an ONNX classifier: the last 4-D activation before global pooling.

As `keras_robust.explanations.attributions` takes the last Keras layer with a
4-D output, this takes the input of the last global pooling on the way to the
logits: `GlobalAveragePool`/`GlobalMaxPool` (channels first), an
`AveragePool`/`MaxPool` down to 1×1, or a `ReduceMean`/`ReduceMax` over two
spatial axes (axes 2, 3: channels first; 1, 2: channels last, as tf2onnx
writes Keras' pooling). Pooling inside blocks (squeeze-and-excitation) comes
earlier, so the last one is the head's.
"""

from keras_robust.export.autodiff.backprop import path_nodes
from keras_robust.export.autodiff.rules.pooling import reduce_axes

GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")
WINDOW_POOLS = ("AveragePool", "MaxPool")
SPATIAL_REDUCTIONS = ("ReduceMean", "ReduceMax")
LAYOUT_OF_AXES = {(2, 3): "NCHW", (1, 2): "NHWC"}


def find_feature_maps(emit, nodes, source, logits):
    """`(value name, "NCHW" or "NHWC")` of the feature maps, or None if no global pooling reads a 4-D value.

    Args:
        emit: An `Emitter` whose `shapes` and `constants` cover the graph.
        nodes: The forward nodes, in topological order.
        source: The images' value name.
        logits: The logits' value name.
    """
    path, _ = path_nodes(nodes, source, logits, emit.shapes)
    for node in reversed(path):
        layout = _pooled_layout(emit, node)
        if layout:
            return node.input[0], layout
    return None


def _pooled_layout(emit, node):
    dims = emit.shapes.get(node.input[0], ((),))[0] if node.input else ()
    if len(dims) != 4:
        return None
    if node.op_type in GLOBAL_POOLS:
        return "NCHW"
    if node.op_type in WINDOW_POOLS:
        out = emit.shapes.get(node.output[0], ((),))[0]
        return "NCHW" if len(out) == 4 and tuple(out[2:]) == (1, 1) else None
    if node.op_type in SPATIAL_REDUCTIONS:
        return LAYOUT_OF_AXES.get(tuple(reduce_axes(emit, node) or ()))
    return None
