"""Hostile requests on every protocol (issue #23): each is refused by name, fast, before
it allocates what it announces, never with a 500 or a silently wrong answer.

The classes, and the test showing each, are tabled in docs/reliability.md. The
property-based tests at the end generate malformed values for each protocol's
request structure (V2 JSON, V2 binary, TF Serving REST, TF Serving gRPC) and
check that none makes a 500 (or gRPC INTERNAL) and that a valid request is
answered afterwards.
"""

import base64
import gzip
import io
import json
import socket
import time
import tracemalloc
import urllib.parse

import grpc
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_robust.serving import Limits, create_app
from tests.helpers import TEST_LIMITS, call, read_answer, run_onnx, running_server
from tests.serving.fairness_clients import FLOODER, VICTIM, post

IMAGE = np.full((1, 32, 32, 3), 0.5, np.float32)
V2_IMAGES = {"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": IMAGE.reshape(-1).tolist()}
HYPOTHESIS = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def served(tiny_export):
    """`(HTTP base URL, PredictionService stub, the stub's channel)` of one app serving both, with
    `TEST_LIMITS`."""
    app = create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    with running_server(app) as url:
        with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
            yield url, prediction_service_pb2_grpc.PredictionServiceStub(channel), channel


@pytest.fixture(scope="module")
def url(served):
    return served[0]


@pytest.fixture(scope="module")
def stub(served):
    return served[1]


def grpc_request(**tensors):
    """A `PredictRequest` to tiny's default signature with these `TensorProto`s."""
    message = predict_pb2.PredictRequest()
    message.model_spec.name = "tiny"
    for name, proto in tensors.items():
        message.inputs[name].CopyFrom(proto)
    return message


def grpc_status(stub, message):
    """The status code of a Predict call (OK when it is answered)."""
    try:
        stub.Predict(message, timeout=60)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def raw_tensor(dtype, dims, **values):
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


def v2_explain(targets=1, steps=5, datatype="INT32"):
    """A V2 explain body whose targets and steps are JSON tensors of `datatype`."""
    return {"inputs": [
        V2_IMAGES,
        {"name": "targets", "shape": [1], "datatype": datatype, "data": [targets]},
        {"name": "steps", "shape": [1], "datatype": datatype, "data": [steps]},
    ]}


def announce(url, length):
    """A connection that sends a POST's headers announcing `length` body bytes, and no body."""
    parts = urllib.parse.urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=30)
    connection.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length)
    return connection


def stalled_upload(port, source, length, sent):
    """A connection from `source` announcing a `length`-byte predict body, sending `sent` bytes of it, then
    nothing."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    connection.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n{"
                       % length + b" " * (sent - 1))
    return connection


def assert_predicts(url, stub, sessions):
    """The server still answers valid requests, over HTTP and gRPC."""
    status, answer = call(f"{url}/v1/models/tiny:predict", {"instances": IMAGE.tolist()})
    assert status == 200
    expected = run_onnx(sessions["predict"], images=IMAGE)["logits"]
    np.testing.assert_allclose(answer["predictions"][0]["logits"], expected[0], atol=1e-4)
    response = stub.Predict(grpc_request(images=tf.make_tensor_proto(IMAGE)), timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["logits"]), expected, atol=1e-4)


# Inflight bytes: counted as they arrive, not as announced.

def test_idle_announcers_of_large_bodies_do_not_block_other_requests(tiny_export):
    limits = Limits(max_request_bytes=100_000, max_inflight_bytes=150_000, body_start_timeout_s=1.0)
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        # Two connections announcing 100 KB each: counted as announced, they would hold
        # 200 KB of the 150 KB allowed and make the small request below a 503.
        idle = [announce(url, 100_000), announce(url, 100_000)]
        try:
            time.sleep(0.3)
            status, answer = call(f"{url}/v1/models/tiny:predict", {"instances": IMAGE.tolist()})
            assert status == 200, answer
            # And an announcer that sends nothing is closed after body_start_timeout_s, not timeout_s.
            started = time.monotonic()
            status, answer = read_answer(idle[0])
            assert status == 408 and "body_start_timeout_s=1" in answer["error"]
            assert time.monotonic() - started < 5
        finally:
            for connection in idle:
                connection.close()


def test_one_clients_stalled_uploads_hold_only_its_share_and_only_until_they_stall_too_long(tiny_export):
    """The issue-35 attack: connections that send almost max_request_bytes each and stall. One client's
    bytes in flight are capped at its share; a stalled body is dropped body_start_timeout_s after its
    last bytes; another client is served throughout."""
    limits = Limits(max_request_bytes=100_000, max_inflight_bytes=200_000, body_start_timeout_s=1.0)
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        port = int(url.rsplit(":", 1)[1])
        stalled = [stalled_upload(port, FLOODER, 100_000, 99_000) for _ in range(2)]
        try:
            time.sleep(0.3)
            status, _, _ = post(port, "/v1/models/tiny:predict", json.dumps({"instances": IMAGE.tolist()}).encode(),
                                VICTIM)
            assert status == 200
            # The second upload would pass the client's share of half the bytes in flight.
            status, answer = read_answer(stalled[1])
            assert status == 503 and "max_client_inflight_bytes=100000" in answer["error"]
            started = time.monotonic()
            status, answer = read_answer(stalled[0])
            assert status == 408 and "stalled after 99000 bytes" in answer["error"]
            assert time.monotonic() - started < 5
        finally:
            for connection in stalled:
                connection.close()


def test_body_start_timeout_is_validated():
    with pytest.raises(ValueError, match="body_start_timeout_s"):
        Limits(body_start_timeout_s=0)


# Sizes checked before allocation.

def test_a_tiny_grpc_request_announcing_a_huge_tensor_is_refused_without_allocating(stub):
    # 48 bytes on the wire; TF Serving would fill 100000 x 32 x 32 x 3 floats (1.2 GB) with the one value.
    message = grpc_request(images=raw_tensor(types_pb2.DT_FLOAT, [100000, 32, 32, 3], float_val=[0.5]))
    tracemalloc.start()
    started = time.monotonic()
    try:
        code, details = grpc_status(stub, message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), details
    assert "max_batch=16" in details and "Received:" in details
    assert time.monotonic() - started < 2 and peak < 20 * 2**20


@pytest.mark.parametrize("dims, values, code, message", [
    ([16, 1000, 1000, 3], dict(float_val=[0.5]), "RESOURCE_EXHAUSTED", "max_request_bytes=1000000"),
    ([1, 2**62, 2**62, 3], dict(float_val=[0.5]), "RESOURCE_EXHAUSTED", "max_request_bytes"),
    ([1, 32, 32, 3], dict(float_val=[0.5]), "INVALID_ARGUMENT", "holds 3072 values, each given once"),
    ([1, 32, 32, 3], dict(tensor_content=b"\0" * 12), "INVALID_ARGUMENT", "Received: 12 tensor_content bytes"),
    ([1, 32, 32, 3], dict(float_val=[0.5] * 3073), "INVALID_ARGUMENT", "Received: 3073 float_val values"),
])
def test_grpc_tensor_sizes_are_checked_against_the_values_given(stub, dims, values, code, message):
    status, details = grpc_status(stub, grpc_request(images=raw_tensor(types_pb2.DT_FLOAT, dims, **values)))
    assert status == grpc.StatusCode[code] and message in details, details


V2_SIZES = [
    # (id, images tensor fields, status, part of the error)
    ("batch-above-max", {"shape": [100000, 32, 32, 3]}, 400, "max_batch=16"),
    ("bytes-above-max", {"shape": [16, 1000, 1000, 3]}, 413, "max_request_bytes=1000000"),
    ("product-overflows-int64", {"shape": [1, 2**62, 2**62, 3]}, 413, "max_request_bytes"),
    ("zero-then-huge", {"shape": [0, 10**30, 1, 1]}, 413, "max_request_bytes"),
    ("float-size", {"shape": [1.0, 32, 32, 3]}, 400, "shape is a list of at most 8 integer sizes"),
    ("negative-size", {"shape": [-1, 32, 32, 3]}, 400, "shape is a list"),
    ("too-many-dims", {"shape": [1] * 65}, 400, "at most 8"),
    ("data-count-mismatch", {"data": [0.5]}, 400, "data must hold 3072 values"),
]


@pytest.mark.parametrize("fields, status, message", [c[1:] for c in V2_SIZES], ids=[c[0] for c in V2_SIZES])
def test_v2_json_tensor_sizes_are_checked_before_allocation(url, fields, status, message):
    answer_status, answer = call(f"{url}/v2/models/tiny/infer", {"inputs": [{**V2_IMAGES, **fields}]})
    assert answer_status == status and message in answer["error"], answer


@pytest.mark.parametrize("size, message", [
    (12288.0, "binary_data_size must be 12288"),  # a float where a byte count is due
    (12, "binary_data_size must be 12288"),
    (2**70, "binary_data_size must be 12288"),
])
def test_v2_binary_sizes_are_checked(url, size, message):
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32",
                                     "parameters": {"binary_data_size": size}}]}).encode()
    status, answer = call(f"{url}/v2/models/tiny/infer", header + IMAGE.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and message in answer["error"], answer


# No 500s: malformed values are refused by name.

NO_500 = [
    # (id, method, path, body, headers, status, part of the error)
    ("arabic-indic-version", "GET", "/v1/models/tiny/versions/\u0661", None, {}, 404, "ASCII digits"),
    ("superscript-version", "GET", "/v1/models/tiny/versions/\u00b2/metadata", None, {}, 404, "ASCII digits"),
    ("huge-version", "GET", "/v1/models/tiny/versions/" + "9" * 400, None, {}, 404, "no version"),
    ("v2-non-ascii-version", "POST", "/v2/models/tiny/versions/\u0661/infer", {"inputs": [V2_IMAGES]}, {},
     404, "ASCII digits"),
    ("non-ascii-header-length", "POST", "/v2/models/tiny/infer", {"inputs": [V2_IMAGES]},
     {"Inference-Header-Content-Length": "\u0661\u0662"}, 400, "Inference-Header-Content-Length"),
    ("superscript-header-length", "POST", "/v2/models/tiny/infer", {"inputs": [V2_IMAGES]},
     {"Inference-Header-Content-Length": "\u00b2"}, 400, "Inference-Header-Content-Length"),
    ("list-model-name", "POST", "/v2/models/tiny/infer", {"model_name": ["tiny"], "inputs": [V2_IMAGES]}, {},
     400, "Received: model_name=['tiny']"),
    ("object-id", "POST", "/v2/models/tiny/infer", {"id": {"a": 1}, "inputs": [V2_IMAGES]}, {},
     400, "Received: id={'a': 1}"),
    ("list-tensor-name", "POST", "/v2/models/tiny/infer", {"inputs": [{**V2_IMAGES, "name": ["images"]}]}, {},
     400, "Received: name=['images']"),
    ("object-datatype", "POST", "/v2/models/tiny/infer", {"inputs": [{**V2_IMAGES, "datatype": {"FP32": 1}}]},
     {}, 400, "Received: datatype={'FP32': 1}"),
    ("list-signature-name", "POST", "/v1/models/tiny:predict", {"signature_name": ["explain"], "instances": []},
     {}, 400, "Received: signature_name=['explain']"),
    ("object-b64", "POST", "/v1/models/tiny:predict", {"instances": [{"b64": {"x": 1}}]}, {}, 400, "b64"),
]


@pytest.mark.parametrize("method, path, body, headers, status, message", [c[1:] for c in NO_500],
                         ids=[c[0] for c in NO_500])
def test_malformed_values_are_refused_by_name(url, method, path, body, headers, status, message):
    # Header values go out as UTF-8 bytes, which the server reads as Latin-1.
    headers = {key: value.encode().decode("latin-1") for key, value in headers.items()}
    answer_status, answer = call(f"{url}{urllib.parse.quote(path)}", body, method=method, headers=headers)
    assert answer_status == status and message in answer["error"], answer
    assert "Received:" in answer["error"]


@pytest.mark.parametrize("method, message", [
    ("/tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictRequest"),
    ("/inference.GRPCInferenceService/ModelInfer", "inference.ModelInferRequest"),
])
def test_bytes_that_are_no_request_message_are_invalid_argument_naming_the_decode_error(served, method, message):
    # Raw bytes: field 1 announced as 100 bytes long, then the message ends.
    call = served[2].unary_unary(method)
    with pytest.raises(grpc.RpcError) as raised:
        call(b"\x0a\x64truncated", timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"The request is not a valid {message} message (")


def test_an_unknown_grpc_dtype_number_is_invalid_argument(stub):
    code, details = grpc_status(stub, grpc_request(images=raw_tensor(999, [1], float_val=[0.5])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "dtype must be DT_FLOAT. Received: dtype=an unknown DataType number 999" in details


def test_a_grpc_tensor_of_unknown_rank_is_invalid_argument(stub):
    proto = raw_tensor(types_pb2.DT_FLOAT, [], float_val=[0.5])
    proto.tensor_shape.unknown_rank = True
    code, details = grpc_status(stub, grpc_request(images=proto))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown_rank" in details


# No silent wrong answers.

@pytest.mark.parametrize("fields, message", [
    (dict(targets=2**32 + 3), "each in [-2147483648, 2147483647] for INT32"),
    (dict(steps=2**32 + 35), "each in [-2147483648, 2147483647] for INT32"),
    (dict(targets=2**64 + 3, datatype="INT64"), "for INT64"),
])
def test_v2_integers_out_of_their_datatype_are_refused_not_wrapped(url, fields, message):
    status, answer = call(f"{url}/v2/models/tiny-explainer/infer", v2_explain(**fields))
    assert status == 400 and message in answer["error"], answer


def test_out_of_range_integers_are_refused_on_rest_and_grpc(url, stub):
    body = {"instances": [{"images": IMAGE[0].tolist(), "targets": 2**32 + 3, "steps": 5}]}
    status, answer = call(f"{url}/v1/models/tiny:explain", body)
    assert status == 400 and "targets must be a class index in [0, 10)" in answer["error"]
    body["instances"][0].update(targets=1, steps=2**32 + 35)
    status, answer = call(f"{url}/v1/models/tiny:explain", body)
    assert status == 400 and "steps must be an integer in [1, 200]" in answer["error"]
    message = grpc_request(images=tf.make_tensor_proto(IMAGE),
                           targets=tf.make_tensor_proto(np.array([2**32 + 3], np.int64)))
    message.model_spec.signature_name = "explain"
    code, details = grpc_status(stub, message)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "targets" in details


def _encoded(mode, value, format):
    image = PIL.Image.new(mode, (32, 32), value)
    data = io.BytesIO()
    image.save(data, format=format)
    return base64.b64encode(data.getvalue()).decode()


@pytest.mark.parametrize("mode, value, format", [
    ("I;16", 32768, "PNG"),  # a 16-bit grayscale PNG as Pillow opens it
    ("I", 32768, "PPM"),  # a 16-bit PGM
    ("F", 0.5, "TIFF"),
])
def test_high_depth_images_are_scaled_by_their_depth(url, sessions, mode, value, format):
    status, answer = call(f"{url}/v1/models/tiny:predict", {"instances": [{"b64": _encoded(mode, value, format)}]})
    assert status == 200, answer
    # Clipped at 255, a half-grey 16-bit image would be all white.
    gray = np.full((1, 32, 32, 3), value / (65535 if mode != "F" else 1), np.float32)
    expected = run_onnx(sessions["predict"], images=gray)["logits"]
    np.testing.assert_allclose(answer["predictions"][0]["logits"], expected[0], atol=1e-3)


def test_handler_arguments_are_never_read_from_the_query_string(url):
    status, answer = call(f"{url}/v2/models/tiny/infer?verb=explain", {"inputs": [V2_IMAGES]})
    assert status == 200 and [o["name"] for o in answer["outputs"]] == ["logits", "probabilities", "classes"]


# Property-based: generated malformed values never make a 500.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SIZES = st.integers(min_value=-2, max_value=2**64) | st.sampled_from([0, 1, 3, 16, 17, 32, 2**31, 2**63])
SHAPES = st.lists(SIZES, max_size=6) | JSON_VALUES


def _replace(body, path, value):
    """A copy of the JSON `body` with the value at `path` (keys and indexes) replaced."""
    body = json.loads(json.dumps(body))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


V2_FIELDS = [("id",), ("model_name",), ("model_version",), ("inputs",), ("outputs",), ("parameters",),
             ("unknown",), ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "shape"),
             ("inputs", 0, "datatype"), ("inputs", 0, "data"), ("inputs", 0, "parameters"),
             ("inputs", 1, "data"), ("inputs", 1, "shape"), ("inputs", 1, "datatype")]
REST_FIELDS = [("signature_name",), ("instances",), ("instances", 0), ("instances", 0, "images"),
               ("instances", 0, "targets"), ("instances", 0, "rho"), ("instances", 0, "steps"),
               ("instances", 0, "images", 0), ("instances", 0, "other")]


@HYPOTHESIS
@given(field=st.sampled_from(V2_FIELDS), value=JSON_VALUES | SHAPES,
       route=st.sampled_from(["tiny", "tiny-explainer"]))
def test_property_v2_json_never_500(served, sessions, field, value, route):
    url, _, _ = served
    body = _replace(v2_explain(), field, value)
    status, answer = call(f"{url}/v2/models/{route}/infer", body)
    assert status < 500, answer


@HYPOTHESIS
# Control characters cannot be sent in a header at all (http.client refuses them).
@given(header_length=st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=6)
       | st.integers(-5, 20000).map(str),
       size=SIZES | JSON_VALUES, shape=SHAPES, datatype=st.sampled_from(["FP32", "INT32", "BYTES", "fp32"]),
       binary=st.binary(max_size=64) | st.just(IMAGE.tobytes()))
def test_property_v2_binary_never_500(served, header_length, size, shape, datatype, binary):
    url, _, _ = served
    header = json.dumps({"inputs": [{"name": "images", "shape": shape, "datatype": datatype,
                                     "parameters": {"binary_data_size": size}}]}).encode()
    headers = {"Inference-Header-Content-Length": header_length.encode("utf-8").decode("latin-1")}
    status, answer = call(f"{url}/v2/models/tiny/infer", header + binary, headers=headers)
    assert status < 500, answer


@HYPOTHESIS
@given(field=st.sampled_from(REST_FIELDS), value=JSON_VALUES | SHAPES, verb=st.sampled_from(["predict", "explain"]))
def test_property_tf_serving_rest_never_500(served, field, value, verb):
    url, _, _ = served
    body = {"signature_name": "explain", "instances": [{"images": IMAGE[0].tolist(), "targets": 1, "steps": 5}]}
    status, answer = call(f"{url}/v1/models/tiny:{verb}", _replace(body, field, value))
    assert status < 500, answer


@HYPOTHESIS
@given(dtype=st.integers(0, 1000) | st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT64]),
       dims=st.lists(st.integers(-3, 2**63 - 1) | st.sampled_from([0, 1, 3, 32]), max_size=6),
       unknown_rank=st.booleans(),
       values=st.fixed_dictionaries({}, optional={
           "float_val": st.lists(st.floats(width=32), max_size=8),
           "int_val": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
           "int64_val": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
           "tensor_content": st.binary(max_size=64),
       }),
       name=st.sampled_from(["images", "targets", "steps", "rho", "other"]),
       signature=st.sampled_from(["", "explain"]))
def test_property_grpc_tensor_proto_never_internal(served, dtype, dims, unknown_rank, values, name, signature):
    _, stub, _ = served
    proto = raw_tensor(dtype, dims, **values)
    proto.tensor_shape.unknown_rank = unknown_rank
    tensors = {"images": tf.make_tensor_proto(IMAGE), "targets": tf.make_tensor_proto(np.array([1], np.int32))}
    message = grpc_request(**{**tensors, name: proto})
    message.model_spec.signature_name = signature
    code, details = grpc_status(stub, message)
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details


def test_valid_requests_are_answered_after_the_generated_ones(served, sessions):
    """Runs after the property-based tests in this module (pytest keeps the file's order)."""
    assert_predicts(*served[:2], sessions)


def test_a_compressed_body_is_refused_naming_its_encoding(url):
    body = gzip.compress(json.dumps({"instances": IMAGE.tolist()}).encode())
    status, answer = call(f"{url}/v1/models/tiny:predict", body, headers={"Content-Encoding": "gzip"})
    assert status == 415 and "Received: Content-Encoding 'gzip'" in answer["error"]


def test_a_v2_tensor_with_json_data_and_binary_bytes_is_refused(url):
    raw = IMAGE.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{**V2_IMAGES, "parameters": {"binary_data_size": len(raw)}}]}).encode()
    status, answer = call(f"{url}/v2/models/tiny/infer", header + raw,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "a tensor's values come once, as JSON data or binary_data_size" in answer["error"]


def test_grpc_messages_count_toward_the_bytes_in_flight_with_http_bodies(tiny_export):
    limits = Limits(max_request_bytes=400_000, max_inflight_bytes=800_000, body_start_timeout_s=5.0)
    app = create_app(str(tiny_export[0]), limits=limits, grpc_port=0)
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        # Two clients' uploads hold 399,000 bytes each of the 800,000 in flight.
        stalled = [stalled_upload(port, source, 400_000, 399_000) for source in (FLOODER, "127.0.0.3")]
        try:
            time.sleep(0.3)
            with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                with pytest.raises(grpc.RpcError) as raised:
                    stub.Predict(grpc_request(images=tf.make_tensor_proto(IMAGE)), timeout=30)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "max_inflight_bytes=800000" in raised.value.details()
                assert "a gRPC Predict message" in raised.value.details()
                for connection in stalled:
                    connection.close()
                time.sleep(0.5)  # their bytes are released with their connections
                response = stub.Predict(grpc_request(images=tf.make_tensor_proto(IMAGE)), timeout=30)
                assert list(response.outputs) and "logits" in response.outputs
        finally:
            for connection in stalled:
                connection.close()


def _flat_png(size=4096, depth=16):
    """A flat 16-bit grey PNG of `size`² pixels: a few kilobytes that take a while to decode and resize."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.full((size, size), 30000, np.uint16)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_decoding_stops_at_the_deadline_and_frees_its_worker(tiny_export):
    limits = Limits(timeout_s=1.0, max_concurrent=1)
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        images = [{"b64": _flat_png()}] * 24
        decode_one = time.monotonic()
        status, _ = call(f"{url}/v1/models/tiny:predict", {"instances": [{"b64": _flat_png()}]})
        decode_one = time.monotonic() - decode_one
        assert status == 200
        status, answer = call(f"{url}/v1/models/tiny:predict", {"instances": images})
        assert status == 504, answer
        answered = time.monotonic()
        # The one worker is free within about one image's decoding, not after all 24 of them.
        status, _ = call(f"{url}/v1/models/tiny:predict", {"instances": IMAGE.tolist()})
        assert status == 200
        assert time.monotonic() - answered < 2 * decode_one + 1.0, (time.monotonic() - answered, decode_one)
        # Without stopping, the other 22 or so images would keep it longer than that bound.
        assert 22 * decode_one > 2 * decode_one + 1.0, decode_one
