"""Folding an ONNX graph's initializer-only nodes, and the Keras conversion that relies on it."""

import keras
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from keras_robust.export.constant_folding import fold_constants
from keras_robust.export.onnx_endpoints import predict_model
from keras_robust.export.onnx_graphs import keras_to_onnx


def _model(nodes, initializers, outputs=("y",)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3]) for name in outputs],
        initializer=[numpy_helper.from_array(value, name) for name, value in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_initializer_only_nodes_become_their_values():
    weight = np.arange(12, dtype=np.float32).reshape(4, 3)
    scale = np.array([2.0], np.float32)
    model = _model([
        helper.make_node("Transpose", ["w"], ["w_t"], perm=[1, 0]),
        helper.make_node("Mul", ["w_t", "scale"], ["w_scaled"]),
        helper.make_node("MatMul", ["x", "w_scaled"], ["y"]),
    ], {"w": weight, "scale": scale})
    x = np.random.default_rng(0).random((2, 3), dtype=np.float32)
    before = _run(model, x)[0]

    fold_constants(model)

    assert [node.op_type for node in model.graph.node] == ["MatMul"]
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    assert set(values) == {"w_scaled"}  # w and scale are read by nothing now
    np.testing.assert_array_equal(values["w_scaled"], weight.T * 2.0)
    np.testing.assert_array_equal(_run(model, x)[0], before)
    np.testing.assert_allclose(before, x @ (weight.T * 2.0), rtol=1e-6)


def test_random_nodes_loops_and_input_readers_stay():
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["v", "bias"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )
    model = _model([
        helper.make_node("RandomNormalLike", ["bias"], ["noise"]),
        helper.make_node("Loop", ["trips", "", "x"], ["looped"], body=loop_body),
        helper.make_node("Add", ["looped", "noise"], ["y"]),
    ], {"bias": np.ones((2, 3), np.float32), "trips": np.array(2, np.int64)})

    fold_constants(model)

    assert [node.op_type for node in model.graph.node] == ["RandomNormalLike", "Loop", "Add"]
    assert {tensor.name for tensor in model.graph.initializer} == {"bias", "trips"}  # the body reads bias by name


def test_a_constant_output_is_kept_as_an_initializer():
    model = _model([helper.make_node("Neg", ["w"], ["minus_w"]), helper.make_node("Identity", ["x"], ["y"])],
                   {"w": np.full((2, 3), 5.0, np.float32)}, outputs=("y", "minus_w"))
    fold_constants(model)
    onnx.checker.check_model(model)
    x = np.zeros((2, 3), np.float32)
    np.testing.assert_array_equal(_run(model, x)[1], np.full((2, 3), -5.0, np.float32))


def test_keras_conversion_keeps_weights_as_initializers_and_folds_their_preparation():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(32, 3, padding="same"),  # a 864-weight kernel stays a constant, 32×3×3×32 does not
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(32, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(40),
        keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(0)
    for layer in model.layers:  # batch-norm statistics away from 0 and 1, so folding them shows
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=32).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=32).astype(np.float32))
    images = rng.random((4, 16, 16, 3), dtype=np.float32)

    classifier = keras_to_onnx(model, (16, 16, 3))

    weights = {tensor.name for tensor in classifier.initializers}
    produced_from_weights = [node for node in classifier.nodes if node.input and set(node.input) <= weights]
    assert produced_from_weights == []
    sizes = sorted(int(np.prod(tensor.dims)) for tensor in classifier.initializers)
    assert 32 * 3 * 3 * 32 in sizes and 40 * 10 in sizes
    session = ort.InferenceSession(predict_model(classifier).SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": images})[0]
    np.testing.assert_allclose(logits, model(images, training=False).numpy(), rtol=1e-4, atol=1e-5)
