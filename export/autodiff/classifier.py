"""An ONNX image classifier made ready to differentiate: checked, wrapped, shapes known.

Whatever the framework, layout and input convention, the prepared graph
takes `images` as `(batch, height, width, channels)` floats in [0, 1], the
convention of every keras-robust export, so an explanation's budget ρ is an
RMSE in the same pixel units everywhere (docs/method.md §4).
"""

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from keras_robust.common.validation import check_choice
from keras_robust.export.autodiff.backprop import unsupported, unsupported_message
from keras_robust.export.autodiff.emitter import Emitter
from keras_robust.export.autodiff.feature_maps import find_feature_maps

LAYOUTS = ("NHWC", "NCHW")
MIN_OPSET = 13
OPSET = 17
PREFIX = "model/"
IMAGES = "images"
IMAGES_SOURCE = PREFIX + "input"  # the model's own input, fed by the wrapper
# Nodes whose output holds their first input's values laid out anew: a named feature map may be such a copy of the
# value the logits read, and its gradient is the same copy of that value's.
COPIES = ("Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten")


@dataclasses.dataclass
class Classifier:
    """A classifier graph from `images` (NHWC, [0, 1]) to logits.

    Attributes:
        nodes: The forward nodes, in topological order, values named under
            `model/` except `images`.
        initializers: Its weights and constants (`TensorProto`s).
        logits: The name of the logits value `(batch, num_classes)`.
        image_shape: `(height, width, channels)`.
        num_classes: K.
        shapes: `{value name: (dims, elem_type)}` from shape inference.
        opset: The default domain's opset.
        features: Grad-CAM's feature maps (a 4-D value), or None where the
            classifier has none.
        features_layout: `"NHWC"` or `"NCHW"`: where the feature maps'
            channels are.
        feature_source: The value on the way to the logits that `features`
            copies (itself, or what `feature_nodes` re-lay out).
        feature_nodes: Nodes computing `features` that the logits do not
            need (after `nodes`, in order): copies (`COPIES`) of
            `feature_source` and what they read.
    """

    nodes: list
    initializers: list
    logits: str
    image_shape: tuple
    num_classes: int
    shapes: dict
    opset: int
    features: str = None
    features_layout: str = None
    feature_source: str = None
    feature_nodes: list = dataclasses.field(default_factory=list)

    def feature_copies(self):
        """The nodes of `feature_nodes` that carry `feature_source` to `features`, in order."""
        chain, current = [], self.features
        producers = {output: node for node in self.feature_nodes for output in node.output}
        while current != self.feature_source:
            chain.append(producers[current])
            current = producers[current].input[0]
        return list(reversed(chain))

    def constants(self):
        return {tensor.name: numpy_helper.to_array(tensor) for tensor in self.initializers}

    def unsupported(self):
        """`["OpType node 'name': reason", ...]` for each operator from the images to the logits without a
        derivative rule, each node named as the model names it."""
        emit = Emitter("check", shapes=self.shapes, constants=self.constants())
        return unsupported(emit, self.nodes, IMAGES, self.logits, lambda name: name.removeprefix(PREFIX))

    def check_differentiable(self):
        """Raises, naming every operator without a rule, before any graph is built on copies of the nodes
        (whose names would be the copies')."""
        problems = self.unsupported()
        if problems:
            raise ValueError(unsupported_message(problems))


def prepare_classifier(model, *, layout="NHWC", mean=None, std=None, image_size=None, features=None):
    """Checks an ONNX classifier and wraps it to take NHWC images in [0, 1].

    Args:
        model: An `onnx.ModelProto` or the path of an `.onnx` file: one float
            image input (4-D), one `(batch, K)` logits output.
        layout: The model's own input layout, `"NHWC"` or `"NCHW"`.
        mean, std: Per-channel (or scalar) normalisation the model expects
            but does not do itself: the wrapper feeds it `(x − mean)/std`
            for images `x` in [0, 1]. None when the model takes [0, 1]
            images (it may normalise inside).
        image_size: `(height, width)` for a model whose spatial size is
            dynamic; the explain graph needs it fixed.
        features: The name of the value Grad-CAM reads its feature maps from
            (4-D, in the model's `layout`; it may also be a second output of
            the model); None: the input of the last global pooling
            (`feature_maps.find_feature_maps`).

    Returns:
        A `Classifier`.

    Raises:
        ValueError: naming what is not a classifier this can explain.
    """
    check_choice("layout", layout, LAYOUTS)
    model = _load(model)
    graph = model.graph
    opset = _opset(model)
    if opset < OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
        graph, opset = model.graph, OPSET
    initializers = list(graph.initializer) + _hoist_constants(graph)
    weight_names = {tensor.name for tensor in initializers}
    inputs = [value for value in graph.input if value.name not in weight_names]
    _check_signature(inputs, graph.output, features)
    _check_standard_and_inference(graph)
    image_shape = _image_shape(inputs[0], layout, image_size)
    nodes, initializers, logits = _renamed(graph, initializers, inputs[0].name)
    nodes = _wrapped_input(layout, mean, std, image_shape[2]) + nodes
    initializers += _normalisation_constants(mean, std, image_shape[2])
    shapes = _infer_shapes(nodes, initializers, image_shape, logits, opset)
    num_classes = _check_logits(shapes, logits)
    classifier = Classifier(needed_nodes(nodes, [logits]), initializers, logits, tuple(image_shape), num_classes,
                            shapes, opset)
    return _with_feature_maps(classifier, nodes, None if features is None else PREFIX + features, layout)


def needed_nodes(nodes, outputs):
    """The nodes that `outputs` need, in their order."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(values_read(node))
    return list(reversed(kept))


def subgraphs(node):
    """The graphs `node`'s attributes hold (a Loop's body, an If's branches)."""
    return [attribute.g for attribute in node.attribute if attribute.HasField("g")] + [
        graph for attribute in node.attribute for graph in attribute.graphs]


def values_read(node):
    """The names of the values `node` reads, those its subgraphs read by name from outside included."""
    return list(node.input) + [name for graph in subgraphs(node) for inner in graph.node for name in inner.input]


def _with_feature_maps(classifier, nodes, features, layout):
    """The classifier with Grad-CAM's feature maps: `features` in `layout`, or found; unchanged without any.

    A named value that the logits do not read (a model's second output) must
    be a copy (`COPIES`: the same values, laid out anew) of one they do.
    """
    if features is None:
        emit = Emitter("features", shapes=classifier.shapes, constants=classifier.constants())
        found = find_feature_maps(emit, classifier.nodes, IMAGES, classifier.logits)
        if found is None:
            return classifier
        features, layout = found
    producers = {output: node for node in nodes for output in node.output}
    on_path = {name for node in classifier.nodes for name in node.output}
    source = features
    while source not in on_path and producers.get(source) and producers[source].op_type in COPIES:
        source = producers[source].input[0]
    dims = classifier.shapes.get(features, ((),))[0]
    if source not in on_path or len(dims) != 4:
        raise ValueError(
            "Grad-CAM's feature maps must be a 4-D value on the way from the images to the logits (or a copy of "
            f"one). Received: features={features[len(PREFIX):]!r} (dims {dims or 'unknown'})"
        )
    logit_nodes = {id(node) for node in classifier.nodes}
    extra = [node for node in needed_nodes(nodes, [classifier.logits, features]) if id(node) not in logit_nodes]
    return dataclasses.replace(classifier, features=features, features_layout=layout, feature_source=source,
                               feature_nodes=extra)


def _load(model):
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()  # preparing edits the graph; the caller's model stays as it was
        copy.CopyFrom(model)
        return copy
    try:
        return onnx.load(str(model))
    except FileNotFoundError:
        raise FileNotFoundError(f"No ONNX file at {model}. Received: model={model!r}") from None
    except Exception as error:  # protobuf's DecodeError and friends
        raise ValueError(f"{model} is not an ONNX model ({type(error).__name__}: {error}). Received: model={model!r}") from None


def _opset(model):
    versions = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if not versions or versions[0] < MIN_OPSET:
        raise ValueError(
            f"The model's ONNX opset must be {MIN_OPSET} or later (re-export it with "
            f"opset_version={OPSET}). Received: opset={versions[0] if versions else None}"
        )
    return versions[0]


def _hoist_constants(graph):
    """Turns `Constant` nodes into initializers, so a Loop body can share them."""
    hoisted, kept = [], []
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            kept.append(node)
            continue
        hoisted.append(numpy_helper.from_array(_constant_value(node), node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    return hoisted


def _constant_value(node):
    attribute = node.attribute[0]
    value = helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return numpy_helper.to_array(value)
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if attribute.name not in dtypes:
        raise ValueError(f"Constant node {node.name!r} holds a {attribute.name}, which is not supported.")
    return np.asarray(value, dtypes[attribute.name])


def _check_signature(inputs, outputs, features):
    features_output = len(outputs) == 2 and outputs[1].name == features  # Grad-CAM's maps beside the logits
    if len(inputs) != 1 or len(outputs) != (2 if features_output else 1):
        raise ValueError(
            "The model must have one image input and one logits output. Received: inputs "
            f"{[value.name for value in inputs]}, outputs {[value.name for value in outputs]}"
        )
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(
            "The image input must be float32. Received: "
            f"{onnx.TensorProto.DataType.Name(inputs[0].type.tensor_type.elem_type)}"
        )


def _check_standard_and_inference(graph):
    problems = []
    for node in graph.node:
        label = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label} of domain {node.domain!r} (only standard ONNX operators run everywhere)")
        elif node.op_type == "BatchNormalization" and any(
            a.name == "training_mode" and a.i for a in node.attribute
        ):
            problems.append(f"{label} in training mode (export the model in inference mode)")
        elif node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
            problems.append(f"{label} with a training_mode input (export the model in inference mode)")
    if problems:
        raise ValueError(f"The model cannot be explained as exported: {'; '.join(problems)}.")


def _image_shape(value, layout, image_size):
    """`(height, width, channels)`, from the input's static dims or `image_size`."""
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ValueError(f"The image input must be 4-D ({layout}). Received: {value.name} with dims {dims}")
    height, width, channels = (dims[1], dims[2], dims[3]) if layout == "NHWC" else (dims[2], dims[3], dims[1])
    if image_size is not None:
        height, width = (int(v) for v in image_size)
    if None in (height, width, channels):
        raise ValueError(
            f"The image input's size must be fixed for the explain graph; pass image_size=(height, width) "
            f"(CLI --image-size). Received: {value.name} dims {dims} as {layout}"
        )
    return [height, width, channels]


def _renamed(graph, initializers, source):
    """The graph's nodes and weights with every name under `model/`, the input fed `images`."""

    def name(value):
        if not value:
            return value
        return IMAGES_SOURCE if value == source else PREFIX + value

    nodes = renamed_nodes(graph.node, name, PREFIX)
    renamed = []
    for tensor in initializers:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = name(tensor.name)
        renamed.append(copy)
    return nodes, renamed, name(graph.output[0].name)


def renamed_nodes(nodes, rename, prefix):
    """Copies of `nodes` with every value name passed through `rename` (subgraphs
    included) and each node's name under `prefix`."""
    copies = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [rename(v) for v in node.input]
        copy.output[:] = [rename(v) for v in node.output]
        copy.name = prefix + (node.name or node.output[0])
        _rename_subgraphs(copy, rename)
        copies.append(copy)
    return copies


def _rename_subgraphs(node, name):
    for subgraph in subgraphs(node):
        for inner in subgraph.node:
            inner.input[:] = [name(v) if v else v for v in inner.input]
            inner.output[:] = [name(v) for v in inner.output]


def _wrapped_input(layout, mean, std, channels):
    """Nodes from `images` (NHWC, [0, 1]) to what the model's own input expects."""
    nodes, current = [], IMAGES
    if mean is not None:
        nodes.append(helper.make_node("Sub", [current, PREFIX + "wrap/mean"], [PREFIX + "wrap/centred"]))
        current = PREFIX + "wrap/centred"
    if std is not None:
        nodes.append(helper.make_node("Div", [current, PREFIX + "wrap/std"], [PREFIX + "wrap/scaled"]))
        current = PREFIX + "wrap/scaled"
    if layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [current], [PREFIX + "wrap/nchw"], perm=[0, 3, 1, 2]))
        current = PREFIX + "wrap/nchw"
    nodes.append(helper.make_node("Identity", [current], [IMAGES_SOURCE]))
    for node in nodes:
        node.name = node.output[0]
    return nodes


def _normalisation_constants(mean, std, channels):
    tensors = []
    for label, value in (("mean", mean), ("std", std)):
        if value is None:
            continue
        array = np.asarray(value, np.float32).reshape(-1)
        if array.size not in (1, channels) or (label == "std" and np.any(array <= 0)):
            raise ValueError(
                f"`{label}` must be one value or one per channel ({channels})"
                f"{', all > 0' if label == 'std' else ''}. Received: {label}={value!r}"
            )
        tensors.append(numpy_helper.from_array(array, PREFIX + f"wrap/{label}"))
    return tensors


def _infer_shapes(nodes, initializers, image_shape, logits, opset):
    """`{value name: (dims, elem_type)}` of every value, the batch dimension None.

    ONNX shape inference first; where it leaves a dimension other than the
    batch unknown (graphs whose reshapes take shapes computed at run time, as
    the older PyTorch exporter writes ShuffleNetV2 and Swin), the graph is
    run at the fixed image size with batches of 1 and 2 and each value's
    shape measured: a dimension the two runs agree on is static.
    """
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info(IMAGES, onnx.TensorProto.FLOAT, ["batch", *image_shape])],
        [helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as error:  # onnx raises its own InferenceError
        raise ValueError(f"ONNX shape inference failed on the model at image size {image_shape}: {error}") from None
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
            shapes[value.name] = (dims, tensor.elem_type)
    produced = [name for node in nodes for name in node.output if name]
    if any(name not in shapes or None in shapes[name][0][1:] for name in produced):
        shapes.update(_measured_shapes(model, produced, image_shape))
    for tensor in initializers:
        shapes[tensor.name] = (tuple(tensor.dims), tensor.data_type)
    return shapes


def _measured_shapes(model, names, image_shape):
    """`{value name: (dims, elem_type)}` of `names`, measured by running `model` on batches of 1 and 2."""
    import onnxruntime

    measure = onnx.ModelProto()
    measure.CopyFrom(model)
    del measure.graph.output[:]
    measure.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every value
    session = onnxruntime.InferenceSession(measure.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = [session.run(names, {IMAGES: np.full((batch, *image_shape), 0.5, np.float32)}) for batch in (1, 2)]
    measured = {}
    for name, one, two in zip(names, *runs):
        one, two = np.asarray(one), np.asarray(two)
        if one.ndim != two.ndim:
            continue
        dims = tuple(a if a == b else None for a, b in zip(one.shape, two.shape))
        measured[name] = (dims, helper.np_dtype_to_tensor_dtype(one.dtype))
    return measured


def _check_logits(shapes, logits):
    dims, elem_type = shapes.get(logits, (None, None))
    if dims is None or len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 2 or elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(
            f"The model must output float32 logits of shape (batch, K >= 2). Received: output dims {dims}, "
            f"type {onnx.TensorProto.DataType.Name(elem_type) if elem_type else 'unknown'}"
        )
    return dims[1]
