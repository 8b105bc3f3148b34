"""TF Serving's gRPC PredictionService, called with tensorflow-serving-api's own stub."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from keras_robust.serving import Limits, create_app
from tests.helpers import TEST_LIMITS, call, run_onnx, running_server

RHO, STEPS = 0.1, 35  # the card's explain defaults


@pytest.fixture(scope="module")
def served(tiny_export):
    """`(HTTP base URL, PredictionService stub)` of one app serving both."""
    app = create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    with running_server(app) as url:
        with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
            yield url, prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def stub(served):
    return served[1]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).random((3, 32, 32, 3), dtype=np.float32)


def request(signature="", version=None, name="tiny", **inputs):
    message = predict_pb2.PredictRequest()
    message.model_spec.name = name
    message.model_spec.signature_name = signature
    if version is not None:
        message.model_spec.version.value = version
    for key, value in inputs.items():
        message.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return message


def test_predict_matches_onnxruntime(stub, sessions, images):
    response = stub.Predict(request(images=images), timeout=60)
    expected = run_onnx(sessions["predict"], images=images)
    assert sorted(response.outputs) == ["classes", "logits", "probabilities"]
    for name, value in expected.items():
        np.testing.assert_allclose(tf.make_ndarray(response.outputs[name]), value, atol=1e-5)
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_explain_signature_with_output_filter(stub, sessions, images):
    targets = np.array([3, 3, 8], np.int64)
    message = request("explain", version=1, images=images, targets=targets, steps=np.array([6], np.int32))
    message.output_filter.append("delta")
    response = stub.Predict(message, timeout=60)
    assert list(response.outputs) == ["delta"]
    expected = run_onnx(sessions["explain"], images=images, targets=targets.astype(np.int32),
                        rho=np.full(3, RHO, np.float32), steps=np.full(3, 6, np.int32))
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["delta"]), expected["delta"], atol=1e-5)


def test_model_metadata_lists_both_signatures(stub):
    message = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    message.model_spec.name = "tiny"
    response = stub.GetModelMetadata(message, timeout=60)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    explain = signatures.signature_def["explain"]
    assert sorted(explain.inputs) == ["images", "rho", "steps", "targets"]  # a proto map: no order
    assert explain.inputs["targets"].dtype == tf.int32.as_datatype_enum
    assert [d.size for d in signatures.signature_def["serving_default"].inputs["images"].tensor_shape.dim] == [
        -1, 32, 32, 3]


def test_rest_v2_and_grpc_answer_one_request_alike(served, images):
    """The protocols share one data plane: the same request gets the same outputs,
    to the last bit, whichever protocol carries it."""
    url, stub = served
    targets = [1, 4, 9]

    def rest(verb, inputs):
        status, answer = call(f"{url}/v1/models/tiny:{verb}", {"inputs": inputs})
        assert status == 200, answer
        return answer["outputs"]

    def v2(route, *tensors, **parameters):
        status, answer = call(f"{url}/v2/models/tiny/{route}", {"inputs": list(tensors), "parameters": parameters})
        assert status == 200, answer
        return {output["name"]: np.reshape(output["data"], output["shape"]) for output in answer["outputs"]}

    def grpc_(signature, **inputs):
        outputs = stub.Predict(request(signature, **inputs), timeout=60).outputs
        return {name: tf.make_ndarray(value) for name, value in outputs.items()}

    x = {"name": "images", "shape": [3, 32, 32, 3], "datatype": "FP32", "data": images.tolist()}
    t = {"name": "targets", "shape": [3], "datatype": "INT32", "data": targets}
    explained = (
        rest("explain", {"images": images.tolist(), "targets": targets, "rho": 0.05, "steps": 5}),
        v2("explain", x, t, rho=0.05, steps=5),
        grpc_("explain", images=images, targets=np.int32(targets), rho=np.float32([0.05]), steps=np.int32([5])),
    )
    predicted = rest("predict", images.tolist()), v2("infer", x), grpc_("", images=images)
    for answers in (explained, predicted):
        *others, reference = answers
        for answer in others:
            assert set(answer) == set(reference)
            for name, value in reference.items():
                np.testing.assert_array_equal(answer[name], value, err_msg=name)


@pytest.mark.parametrize(
    "message, code, text",
    [
        (lambda x: request(name="nothing", images=x), grpc.StatusCode.NOT_FOUND, "No model 'nothing'"),
        (lambda x: request(version=2, images=x), grpc.StatusCode.NOT_FOUND, "has no version 2"),
        (lambda x: request("classify", images=x), grpc.StatusCode.INVALID_ARGUMENT, "has the signatures"),
        (lambda x: request(images=x * 4), grpc.StatusCode.INVALID_ARGUMENT, "images must hold pixel values in [0, 1]"),
        (lambda x: request(images=x.astype(np.float64)), grpc.StatusCode.INVALID_ARGUMENT, "dtype must be DT_FLOAT"),
        (lambda x: request(images=x[:, :16]), grpc.StatusCode.INVALID_ARGUMENT, "images has shape [B, 32, 32, 3]"),
        (lambda x: request("explain", images=x), grpc.StatusCode.INVALID_ARGUMENT, "missing ['targets']"),
        (lambda x: request("explain", images=x, targets=np.int32([1, 2, 10])), grpc.StatusCode.INVALID_ARGUMENT,
         "targets must be a class index in [0, 10)"),
        (lambda x: request("explain", images=x, targets=np.int32([1, 2, 3]), rho=np.float32([0, 1])),
         grpc.StatusCode.INVALID_ARGUMENT, "rho has shape [B] or [B, 1]"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_requests_get_tf_serving_status_codes(stub, images, message, code, text):
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(message(images), timeout=60)
    assert error.value.code() == code and text in error.value.details()
