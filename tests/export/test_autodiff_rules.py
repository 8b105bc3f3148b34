"""Each ONNX derivative rule on its own, against central finite differences.

For a one-operator graph y = f(x) and a random weighting w, the rule's
gradient of L = Σ w·y, dotted with random directions v, must equal
(L(x + hv) − L(x − hv)) / 2h computed by running the forward graph alone.
Inputs keep away from kinks (ReLU's 0, ties in a max) by more than h, so
the differences never straddle one.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from keras_robust.export.autodiff import RULES, backpropagate
from keras_robust.export.autodiff.emitter import Emitter
from tests.helpers import REPO_ROOT

FLOAT = onnx.TensorProto.FLOAT


def _node(op, *inputs, **attributes):
    return helper.make_node(op, ["x", *inputs], ["y"], **attributes)


def _spaced(shape, rng, gap=0.1):
    """Distinct values at least `gap` apart, none near 0: no tie or kink within h."""
    values = (rng.permutation(int(np.prod(shape))) + 1) * gap * rng.choice([-1, 1], int(np.prod(shape)))
    return values.reshape(shape)


def _uniform(low, high):
    return lambda shape, rng: rng.uniform(low, high, shape)


CASES = {
    "Conv grouped dilated strided": dict(
        shape=[2, 4, 9, 8], nodes=[_node("Conv", "w", "b", group=2, dilations=[2, 1], strides=[2, 3],
                                         pads=[1, 0, 2, 1])],
        constants={"w": ("normal", [6, 2, 3, 2]), "b": ("normal", [6])}),
    "Conv same upper": dict(
        shape=[1, 3, 7, 6], nodes=[_node("Conv", "w", auto_pad="SAME_UPPER", strides=[2, 2])],
        constants={"w": ("normal", [4, 3, 3, 3])}),
    "Conv depthwise": dict(
        shape=[2, 3, 6, 6], nodes=[_node("Conv", "w", group=3, pads=[1, 1, 1, 1])],
        constants={"w": ("normal", [3, 1, 3, 3])}),
    "ConvTranspose": dict(
        shape=[1, 4, 5, 4], nodes=[_node("ConvTranspose", "w", strides=[2, 2], pads=[1, 0, 0, 1],
                                         output_padding=[1, 0])],
        constants={"w": ("normal", [4, 3, 3, 3])}),
    "MaxPool overlapping padded": dict(
        shape=[2, 3, 7, 7], draw=_spaced,
        nodes=[_node("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]),
    "MaxPool ceil": dict(
        shape=[1, 2, 6, 5], draw=_spaced, nodes=[_node("MaxPool", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)]),
    "AveragePool excluding pads": dict(
        shape=[2, 3, 7, 6], nodes=[_node("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]),
    "AveragePool including pads": dict(
        shape=[1, 2, 6, 6], nodes=[_node("AveragePool", kernel_shape=[3, 2], strides=[1, 2], pads=[1, 0, 1, 0],
                                         count_include_pad=1)]),
    "AveragePool same lower": dict(
        shape=[1, 2, 5, 5], nodes=[_node("AveragePool", kernel_shape=[2, 2], auto_pad="SAME_LOWER")]),
    "AveragePool ceil": dict(
        shape=[1, 2, 7, 7], nodes=[_node("AveragePool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]),
    "GlobalAveragePool": dict(shape=[2, 3, 4, 5], nodes=[_node("GlobalAveragePool")]),
    "GlobalMaxPool": dict(shape=[2, 3, 4, 5], draw=_spaced, nodes=[_node("GlobalMaxPool")]),
    "BatchNormalization": dict(
        shape=[2, 3, 4, 4], nodes=[_node("BatchNormalization", "s", "b", "m", "v", epsilon=1e-3)],
        constants={"s": ("normal", [3]), "b": ("normal", [3]), "m": ("normal", [3]), "v": ("positive", [3])}),
    "LayerNormalization": dict(
        shape=[2, 5, 6], nodes=[_node("LayerNormalization", "s", "b", axis=-1, epsilon=1e-5)],
        constants={"s": ("normal", [6]), "b": ("normal", [6])}),
    "LayerNormalization two axes": dict(
        shape=[2, 3, 4, 5], nodes=[_node("LayerNormalization", "s", axis=2)], constants={"s": ("normal", [4, 5])}),
    "Relu": dict(shape=[3, 7], draw=_spaced, nodes=[_node("Relu")]),
    "LeakyRelu": dict(shape=[3, 7], draw=_spaced, nodes=[_node("LeakyRelu", alpha=0.2)]),
    "Clip (ReLU6)": dict(shape=[4, 9], draw=lambda s, r: _spaced(s, r, 0.33),
                         nodes=[_node("Clip", "lo", "hi")], constants={"lo": 0.0, "hi": 6.0}),
    "Clip max only": dict(shape=[4, 9], draw=_spaced, nodes=[_node("Clip", "", "hi")], constants={"hi": 0.55}),
    "Sigmoid": dict(shape=[3, 7], nodes=[_node("Sigmoid")]),
    "HardSigmoid": dict(shape=[3, 7], draw=lambda s, r: _spaced(s, r, 0.37), nodes=[_node("HardSigmoid", alpha=0.3)]),
    "HardSwish": dict(shape=[3, 8], draw=lambda s, r: _spaced(s, r, 0.29), nodes=[_node("HardSwish")]),
    "Tanh": dict(shape=[3, 7], nodes=[_node("Tanh")]),
    "Erf": dict(shape=[3, 7], nodes=[_node("Erf")]),
    "Gelu": dict(shape=[3, 7], opset=20, nodes=[_node("Gelu")]),
    "Gelu tanh": dict(shape=[3, 7], opset=20, nodes=[_node("Gelu", approximate="tanh")]),
    "Softmax": dict(shape=[2, 3, 5], nodes=[_node("Softmax", axis=1)]),
    "LogSoftmax": dict(shape=[2, 6], nodes=[_node("LogSoftmax", axis=-1)]),
    "Exp": dict(shape=[3, 4], nodes=[_node("Exp")]),
    "Log": dict(shape=[3, 4], draw=_uniform(0.5, 2.0), nodes=[_node("Log")]),
    "Sqrt": dict(shape=[3, 4], draw=_uniform(0.5, 2.0), nodes=[_node("Sqrt")]),
    "Reciprocal": dict(shape=[3, 4], draw=_uniform(0.5, 2.0), nodes=[_node("Reciprocal")]),
    "Pow": dict(shape=[3, 4], draw=_uniform(0.5, 2.0), nodes=[_node("Pow", "p")], constants={"p": 3.0}),
    "Abs": dict(shape=[3, 4], draw=_spaced, nodes=[_node("Abs")]),
    "Neg": dict(shape=[3, 4], nodes=[_node("Neg")]),
    "Identity, Dropout, Cast": dict(shape=[3, 4], nodes=[
        helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Dropout", ["a"], ["b"]),
        helper.make_node("Cast", ["b"], ["y"], to=FLOAT)]),
    # Both operands depend on x, the second broadcast: each rule must sum back.
    **{f"{op} broadcasting both operands": dict(
        shape=[2, 3, 4, 5], draw=_uniform(0.5, 2.0), nodes=[
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[0, 2], keepdims=1),
            helper.make_node(op, ["x", "m"], ["y"])]) for op in ("Add", "Sub", "Mul", "Div", "Max", "Min")},
    "Mul by a constant row": dict(shape=[2, 3, 4], nodes=[_node("Mul", "c")], constants={"c": ("normal", [4])}),
    "Sum": dict(shape=[2, 3], nodes=[helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Sum", ["x", "n", "x"], ["y"])]),
    "Where": dict(shape=[3, 4], nodes=[helper.make_node("Neg", ["x"], ["n"]),
                                       helper.make_node("Where", ["c", "x", "n"], ["y"])],
                  constants={"c": ("mask", [3, 4])}),
    "MatMul with weights": dict(shape=[2, 3, 4], nodes=[_node("MatMul", "w")], constants={"w": ("normal", [4, 5])}),
    "MatMul attention": dict(shape=[2, 3, 4], nodes=[
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]), helper.make_node("MatMul", ["x", "t"], ["y"])]),
    "Gemm transposed": dict(shape=[3, 4], nodes=[_node("Gemm", "w", "c", transA=1, transB=1, alpha=0.5, beta=2.0)],
                            constants={"w": ("normal", [5, 3]), "c": ("normal", [5])}),
    "Gemm both operands": dict(shape=[3, 3], nodes=[
        helper.make_node("Transpose", ["x"], ["t"]), helper.make_node("Gemm", ["x", "t", "x"], ["y"], transB=1)]),
    "Reshape": dict(shape=[2, 3, 4], nodes=[_node("Reshape", "s")], constants={"s": np.array([2, -1], np.int64)}),
    "Flatten": dict(shape=[2, 3, 4], nodes=[_node("Flatten", axis=2)]),
    "Squeeze, Unsqueeze": dict(shape=[2, 1, 4], nodes=[
        helper.make_node("Squeeze", ["x", "a"], ["s"]), helper.make_node("Unsqueeze", ["s", "b"], ["y"])],
        constants={"a": np.array([1], np.int64), "b": np.array([0], np.int64)}),
    "Transpose": dict(shape=[2, 3, 4], nodes=[_node("Transpose", perm=[2, 0, 1])]),
    "Concat": dict(shape=[2, 3], nodes=[helper.make_node("Neg", ["x"], ["n"]),
                                        helper.make_node("Concat", ["x", "c", "n"], ["y"], axis=1)],
                   constants={"c": ("normal", [2, 2])}),
    "Split": dict(shape=[2, 7], nodes=[
        helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1),
        helper.make_node("Concat", ["c", "a"], ["y"], axis=1)], constants={"s": np.array([2, 4, 1], np.int64)}),
    "Slice unit steps": dict(shape=[3, 8], nodes=[_node("Slice", "st", "en", "ax")],
                             constants={"st": np.array([1, -6], np.int64), "en": np.array([3, 100], np.int64),
                                        "ax": np.array([0, 1], np.int64)}),
    "Slice strided backwards": dict(shape=[3, 9], nodes=[_node("Slice", "st", "en", "ax", "sp")],
                                    constants={"st": np.array([-1], np.int64), "en": np.array([0], np.int64),
                                               "ax": np.array([1], np.int64), "sp": np.array([-3], np.int64)}),
    "Pad constant": dict(shape=[2, 3, 4], nodes=[_node("Pad", "p")],
                         constants={"p": np.array([0, 1, 2, 0, 2, 1], np.int64)}),
    "Pad cropping": dict(shape=[2, 5, 4], nodes=[_node("Pad", "p")],
                         constants={"p": np.array([0, -1, 2, 0, 1, -2], np.int64)}),
    "Pad reflect": dict(shape=[1, 4, 5], nodes=[_node("Pad", "p", mode="reflect")],
                        constants={"p": np.array([0, 2, 1, 0, 1, 3], np.int64)}),
    "Pad edge": dict(shape=[1, 3, 3], nodes=[_node("Pad", "p", mode="edge")],
                     constants={"p": np.array([0, 2, 2, 0, 1, 1], np.int64)}),
    "Gather": dict(shape=[3, 5, 2], nodes=[_node("Gather", "i", axis=1)],
                   constants={"i": np.array([[0, 4], [4, 2]], np.int64)}),
    "GatherElements": dict(shape=[3, 4], nodes=[_node("GatherElements", "i", axis=1)],
                           constants={"i": np.array([[0, 0, 3], [1, 2, 1], [3, 3, 3]], np.int64)}),
    "Tile": dict(shape=[2, 3], nodes=[_node("Tile", "r")], constants={"r": np.array([2, 3], np.int64)}),
    "Expand": dict(shape=[3, 1], nodes=[_node("Expand", "s")], constants={"s": np.array([2, 3, 4], np.int64)}),
    "ReduceMean": dict(shape=[2, 3, 4], nodes=[_node("ReduceMean", axes=[1, -1], keepdims=0)]),
    "ReduceMean axes input": dict(shape=[2, 3, 4], opset=18, nodes=[_node("ReduceMean", "a", keepdims=1)],
                                  constants={"a": np.array([1], np.int64)}),
    "ReduceSum": dict(shape=[2, 3, 4], nodes=[_node("ReduceSum", "a", keepdims=0)],
                      constants={"a": np.array([0, 2], np.int64)}),
    "ReduceMax": dict(shape=[2, 3, 4], draw=_spaced, nodes=[_node("ReduceMax", axes=[2], keepdims=0)]),
    "ReduceMin": dict(shape=[2, 3, 4], draw=_spaced, nodes=[_node("ReduceMin", axes=[0, 1], keepdims=1)]),
    "Resize linear": dict(shape=[1, 2, 4, 5], opset=19, nodes=[_node("Resize", "", "sc", mode="linear")],
                          constants={"sc": np.array([1, 1, 2.0, 1.5], np.float32)}),
    "Resize cubic to sizes": dict(shape=[1, 1, 6, 5], opset=19, nodes=[_node("Resize", "", "", "sz", mode="cubic")],
                                  constants={"sz": np.array([1, 1, 4, 8], np.int64)}),
    "Resize nearest": dict(shape=[2, 1, 3, 4], opset=19, nodes=[_node("Resize", "", "sc", mode="nearest")],
                           constants={"sc": np.array([1, 1, 2.0, 0.5], np.float32)}),
}


def _constant(spec, rng):
    if isinstance(spec, np.ndarray):
        return spec
    if isinstance(spec, float):
        return np.array(spec, np.float32)
    kind, shape = spec
    if kind == "mask":
        return rng.uniform(size=shape) < 0.5
    values = rng.normal(size=shape)
    return np.abs(values) + 0.5 if kind == "positive" else values


def _gradient_check(case, rng):
    opset = case.get("opset", 17)
    constants = {name: _constant(spec, rng) for name, spec in case.get("constants", {}).items()}
    constants = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in constants.items()}
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items()]
    graph = helper.make_graph(case["nodes"], "case", [helper.make_tensor_value_info("x", FLOAT, case["shape"])],
                              [helper.make_tensor_value_info("y", FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True).graph
    shapes = {v.name: (tuple(d.dim_value for d in v.type.tensor_type.shape.dim), v.type.tensor_type.elem_type)
              for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)}
    shapes.update({t.name: (tuple(t.dims), t.data_type) for t in initializers})
    weights = rng.normal(size=shapes["y"][0]).astype(np.float32)
    emit = Emitter("grad", shapes=shapes, constants=constants)
    gradient = backpropagate(emit, list(case["nodes"]), "x", "y", emit.constant(weights))
    model.graph.node.extend(emit.nodes + [helper.make_node("Identity", [gradient], ["g"])])
    model.graph.initializer.extend(emit.initializers)
    model.graph.output.append(helper.make_tensor_value_info("g", FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def loss(x):
        return float(np.sum(weights.astype(np.float64) * session.run(["y"], {"x": x.astype(np.float32)})[0]))

    x = case.get("draw", _uniform(-1.0, 1.0))(case["shape"], rng)
    (grad,) = session.run(["g"], {"x": x.astype(np.float32)})
    assert grad.shape == tuple(case["shape"])
    h = 1e-2
    for _ in range(3):
        v = rng.uniform(-1, 1, case["shape"])
        numeric = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
        analytic = float(np.sum(grad * v))
        scale = np.linalg.norm(grad) * np.linalg.norm(v)
        assert abs(numeric - analytic) <= 2e-3 * scale + 1e-4, (numeric, analytic)


@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_finite_differences(name):
    _gradient_check(CASES[name], np.random.default_rng(sum(map(ord, name))))


def test_every_rule_has_a_case():
    tested = {node.op_type for case in CASES.values() for node in case["nodes"]}
    assert set(RULES) - tested == {"GatherND"}  # GatherND shares Gather's rule and code path


def test_docs_list_every_rule():
    text = (REPO_ROOT / "docs" / "export.md").read_text()
    listed = text.split("<!-- operators:begin -->")[1].split("<!-- operators:end -->")[0]
    assert sorted(name.strip() for name in listed.replace("\n", " ").split(",")) == sorted(RULES)
