"""The Open Inference Protocol over gRPC, called by Triton's own gRPC client.

`tritonclient.grpc` was written against Triton, not against this server: if
it reads our health, metadata and answers, other V2 gRPC clients can too.
Every answer is compared with V2 over HTTP's (the same data plane, so the
same bits) and with onnxruntime run directly on the exported graphs.
"""

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import descriptor_pool
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from keras_robust import __version__
from keras_robust.serving import Limits, create_app
from keras_robust.serving.open_inference import grpc_service as v2_grpc
from tests.helpers import TEST_LIMITS, run_onnx, running_server


@pytest.fixture(scope="module")
def served(tiny_export):
    """`(V2 HTTP client, V2 gRPC client, gRPC channel)` of one app serving both protocols."""
    app = create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    with running_server(app) as url:
        address = f"127.0.0.1:{app.state.grpc_port}"
        http = triton_http.InferenceServerClient(url.removeprefix("http://"))
        client = triton_grpc.InferenceServerClient(address)
        with grpc.insecure_channel(address) as channel:
            yield http, client, channel
        client.close()
        http.close()


@pytest.fixture(scope="module")
def client(served):
    return served[1]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(23).random((3, 32, 32, 3), dtype=np.float32)


DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64", np.dtype(np.int32): "INT32",
             np.dtype(np.int64): "INT64"}


def tensors(module, **arrays):
    """`InferInput`s of `module` (`tritonclient.grpc` or `.http`), binary (raw over gRPC)."""
    return [module.InferInput(name, list(array.shape), DATATYPES[array.dtype]).set_data_from_numpy(array)
            for name, array in arrays.items()]


def test_health_and_server_metadata_match_http(served):
    http, client, _ = served
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "keras-robust" and metadata.version == __version__
    assert list(metadata.extensions) == http.get_server_metadata()["extensions"]


@pytest.mark.parametrize("name", ["tiny", "tiny-explainer"])
def test_model_metadata_matches_http(served, name):
    http, client, _ = served
    metadata, expected = client.get_model_metadata(name), http.get_model_metadata(name)
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        name, expected["versions"], expected["platform"])
    for kind in ("inputs", "outputs"):
        assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(metadata, kind)] == (
            expected[kind])


def test_model_readiness(client):
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny-explainer", "1")
    # A readiness probe answers no, not an error, for what is not there (as Triton does).
    assert not client.is_model_ready("tiny", "2") and not client.is_model_ready("nothing")


def test_predict_equals_v2_http_and_onnxruntime(served, sessions, images):
    http, client, _ = served
    result = client.infer("tiny", tensors(triton_grpc, images=images), request_id="r-23")
    expected = http.infer("tiny", tensors(triton_http, images=images))
    reference = run_onnx(sessions["predict"], images=images)
    for name, value in reference.items():
        np.testing.assert_array_equal(result.as_numpy(name), expected.as_numpy(name), err_msg=name)
        np.testing.assert_allclose(result.as_numpy(name), value, atol=1e-5)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "r-23")
    assert [output.datatype for output in response.outputs] == ["FP32", "FP32", "INT64"]


@pytest.mark.parametrize("as_parameters", [True, False])
def test_explainer_equals_v2_http_and_onnxruntime(served, sessions, images, as_parameters):
    http, client, _ = served
    targets, rho, steps = np.int64([1, 4, 9]), np.float32([0.05, 0.1, 0.2]), np.int32([5])
    if as_parameters:
        inputs, parameters = dict(images=images, targets=targets), {"rho": 0.05, "steps": 5}
        rho = np.float32([0.05] * 3)
    else:
        inputs, parameters = dict(images=images, targets=targets, rho=rho, steps=steps), None
    result = client.infer("tiny-explainer", tensors(triton_grpc, **inputs), parameters=parameters)
    expected = http.infer("tiny-explainer", tensors(triton_http, **inputs), parameters=parameters)
    reference = run_onnx(sessions["explain"], images=images, targets=targets.astype(np.int32), rho=rho,
                         steps=np.full(3, 5, np.int32))
    for name, value in reference.items():
        np.testing.assert_array_equal(result.as_numpy(name), expected.as_numpy(name), err_msg=name)
        np.testing.assert_allclose(result.as_numpy(name), value, atol=1e-5)


def test_typed_contents_answer_as_raw_ones(served, images):
    """Inputs in `contents` (no raw_input_contents), sent with tritonclient's generated stub."""
    _, client, channel = served
    request = service_pb2.ModelInferRequest(model_name="tiny-explainer", model_version="1")
    request.inputs.add(name="images", datatype="FP32", shape=images.shape).contents.fp32_contents.extend(
        images.reshape(-1).tolist())
    request.inputs.add(name="targets", datatype="INT32", shape=[3]).contents.int_contents.extend([2, 2, 7])
    request.inputs.add(name="steps", datatype="INT64", shape=[1]).contents.int64_contents.append(4)
    request.outputs.add(name="target_confidence")
    request.outputs.add(name="delta")
    response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert [(o.name, list(o.shape)) for o in response.outputs] == [
        ("target_confidence", [3]), ("delta", [3, 32, 32, 3])]
    raw = client.infer("tiny-explainer", tensors(triton_grpc, images=images, targets=np.int32([2, 2, 7]),
                                                 steps=np.int64([4])))
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[1], "<f4").reshape(3, 32, 32, 3),
                                  raw.as_numpy("delta"))


def test_tf_serving_predict_answers_alike_on_the_same_port(served, images):
    _, client, channel = served
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    v2 = client.infer("tiny", tensors(triton_grpc, images=images))
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["logits"]), v2.as_numpy("logits"))


def test_perf_analyzers_request_is_answered(served, images):
    """perf_analyzer's ModelInfer: raw inputs, named outputs, and a parameter that
    tritonclient reserves for itself, so it is sent with the generated stub."""
    _, _, channel = served
    request = service_pb2.ModelInferRequest(model_name="tiny")
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    request.inputs.add(name="images", datatype="FP32", shape=images.shape)
    request.outputs.add(name="classes")
    request.raw_input_contents.append(images.tobytes())
    response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("classes", "INT64", [3])]
    assert len(response.raw_output_contents) == 1 and len(response.raw_output_contents[0]) == 3 * 8


def test_messages_live_in_a_pool_of_their_own():
    """tritonclient.grpc (imported here) and KServe's SDK register the same message
    names in protobuf's default pool; the server's must not clash with them."""
    request = v2_grpc.message("ModelInferRequest")
    assert request.DESCRIPTOR.file.pool is not descriptor_pool.Default()
    assert request.DESCRIPTOR.full_name == service_pb2.ModelInferRequest.DESCRIPTOR.full_name


IMAGE = np.full((1, 32, 32, 3), 0.5, np.float32)
TARGET = np.int32([3])
BAD_REQUESTS = [
    # (model, inputs, keyword arguments of infer, status, message)
    ("nothing", dict(images=IMAGE), {}, "NOT_FOUND", "No model 'nothing' is served"),
    ("tiny", dict(images=IMAGE), {"model_version": "2"}, "NOT_FOUND", "has no version 2"),
    ("tiny", dict(images=IMAGE * 3), {}, "INVALID_ARGUMENT", "images[0]: images must hold pixel values in [0, 1]"),
    ("tiny", dict(images=IMAGE.astype(np.float64)), {}, "INVALID_ARGUMENT", "datatype must be FP32"),
    ("tiny", dict(images=IMAGE[:, :16]), {}, "INVALID_ARGUMENT", "images has shape [B, 32, 32, 3]"),
    ("tiny", dict(images=np.full((17, 32, 32, 3), 0.5, np.float32)), {}, "INVALID_ARGUMENT", "max_batch=16"),
    ("tiny", dict(images=IMAGE, targets=TARGET), {}, "INVALID_ARGUMENT", "this model's inputs are images"),
    ("tiny", dict(images=IMAGE), {"parameters": {"rho": 0.1}}, "INVALID_ARGUMENT",
     "rho and steps are for explanations"),
    ("tiny", dict(images=IMAGE), {"outputs": [triton_grpc.InferRequestedOutput("delta")]}, "INVALID_ARGUMENT",
     "outputs[0]: this model's outputs are logits"),
    ("tiny", dict(images=IMAGE), {"outputs": [triton_grpc.InferRequestedOutput("logits", class_count=3)]},
     "INVALID_ARGUMENT", "no classification"),
    ("tiny-explainer", dict(images=IMAGE), {}, "INVALID_ARGUMENT", "Received: no targets"),
    ("tiny-explainer", dict(images=IMAGE, targets=np.int32([10])), {}, "INVALID_ARGUMENT",
     "targets must be a class index in [0, 10)"),
    ("tiny-explainer", dict(images=IMAGE, targets=TARGET), {"parameters": {"steps": 10**6}}, "INVALID_ARGUMENT",
     "parameters.steps: steps must be an integer in [1, 200]"),
    ("tiny-explainer", dict(images=IMAGE, targets=TARGET, rho=np.float32([0.1])), {"parameters": {"rho": 0.1}},
     "INVALID_ARGUMENT", "not both"),
]


@pytest.mark.parametrize("model, inputs, options, status, message", BAD_REQUESTS, ids=[m for *_, m in BAD_REQUESTS])
def test_bad_requests_get_the_http_messages_and_grpc_status_codes(client, model, inputs, options, status, message):
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, tensors(triton_grpc, **inputs), **options)
    assert error.value.status() == f"StatusCode.{status}" and message in error.value.message()


def test_raw_contents_must_match_the_shape(served):
    _, _, channel = served
    request = service_pb2.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="images", datatype="FP32", shape=[1, 32, 32, 3])
    request.raw_input_contents.append(b"\0" * 100)
    with pytest.raises(grpc.RpcError) as error:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "holds 12288 bytes (3072 FP32 values for shape [1, 32, 32, 3]). Received: 100" in error.value.details()


@pytest.mark.parametrize("parameters, raw, message", [
    ({"binary_data_size": 12288}, True, None),  # KServe's SDK sends it with raw contents
    ({"binary_data_size": 100}, True, "binary_data_size must be the length of its raw_input_contents buffer (12288)"),
    ({"binary_data_size": 12288}, False, "raw_input_contents buffer (none)"),
    ({"shared_memory_region": "r"}, True, "no parameter but binary_data_size (no shared memory)"),
])
def test_tensor_parameters(served, parameters, raw, message):
    _, _, channel = served
    request = service_pb2.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add(name="images", datatype="FP32", shape=[1, 32, 32, 3])
    for name, value in parameters.items():
        field = "int64_param" if isinstance(value, int) else "string_param"
        setattr(tensor.parameters[name], field, value)
    if raw:
        request.raw_input_contents.append(IMAGE.tobytes())
    else:
        tensor.contents.fp32_contents.extend(IMAGE.reshape(-1).tolist())
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    if message is None:
        assert [output.name for output in stub.ModelInfer(request, timeout=60).outputs][0] == "logits"
        return
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request, timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()
