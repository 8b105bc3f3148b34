"""The Open Inference Protocol (V2) routes, called by Triton's own HTTP client.

`tritonclient.http.InferenceServerClient` was written against Triton, not
against this server: if it can read our health, metadata and answers (JSON
and binary tensors), other V2 clients can too. Answers are checked against
onnxruntime run directly on the exported graphs.
"""

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from keras_robust import __version__
from keras_robust.serving import Limits, create_app
from tests.helpers import call, call_announcing, run_onnx

RHO, STEPS = 0.1, 35  # the card's explain defaults
IMAGE = np.full((1, 32, 32, 3), 0.5, np.float32)


@pytest.fixture(scope="module")
def client(tiny_server):
    client = triton.InferenceServerClient(tiny_server.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(11).random((3, 32, 32, 3), dtype=np.float32)


def tensor(name, array, datatype, binary):
    value = triton.InferInput(name, list(array.shape), datatype)
    return value.set_data_from_numpy(array, binary_data=binary)


def infer_raw(url, body, headers=None):
    """`(status, answer)` of a raw POST whose answer may carry binary outputs."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {}


def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "keras-robust" and metadata["version"] == __version__
    assert {"explain", "binary_tensor_data", "parameters"} <= set(metadata["extensions"])


def test_model_metadata_and_readiness(client):
    predict = client.get_model_metadata("tiny")
    assert predict["versions"] == ["1"] and predict["platform"] == "onnxruntime_onnx"
    assert predict["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 32, 32, 3]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in predict["outputs"]] == [
        ("logits", "FP32", [-1, 10]), ("probabilities", "FP32", [-1, 10]), ("classes", "INT64", [-1]),
    ]
    explainer = client.get_model_metadata("tiny-explainer", model_version="1")
    assert [(i["name"], i["datatype"]) for i in explainer["inputs"]] == [
        ("images", "FP32"), ("targets", "INT32"), ("rho", "FP32"), ("steps", "INT32"),
    ]
    assert [(o["name"], o["datatype"]) for o in explainer["outputs"]] == [
        ("explanations", "FP32"), ("delta", "FP32"), ("target_confidence", "FP32"), ("first_met_step", "INT32"),
        ("target_is_top", "BOOL"),
    ]
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny-explainer", "1")
    assert not client.is_model_ready("tiny", "2") and not client.is_model_ready("nothing")


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_predict_matches_onnxruntime(client, sessions, images, binary_in, binary_out):
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("logits", "classes")]
    result = client.infer("tiny", [tensor("images", images, "FP32", binary_in)], outputs=outputs)
    expected = run_onnx(sessions["predict"], images=images)
    np.testing.assert_allclose(result.as_numpy("logits"), expected["logits"], atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("classes"), expected["classes"])
    assert result.as_numpy("probabilities") is None  # not asked for
    assert result.get_response()["model_name"] == "tiny" and result.get_response()["model_version"] == "1"


def test_predict_answers_every_output_in_binary_by_default(client, sessions, images):
    result = client.infer("tiny", [tensor("images", images, "FP32", True)], model_version="1", request_id="r-7")
    expected = run_onnx(sessions["predict"], images=images)
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, atol=1e-5)
    assert result.get_response()["id"] == "r-7"


@pytest.mark.parametrize("target_type", ["INT32", "INT64"])
def test_explainer_model_matches_onnxruntime(client, sessions, images, target_type):
    targets = np.array([1, 4, 9], np.int32 if target_type == "INT32" else np.int64)
    inputs = [tensor("images", images, "FP32", True), tensor("targets", targets, target_type, False)]
    result = client.infer("tiny-explainer", inputs, parameters={"rho": 0.05, "steps": 7})
    expected = run_onnx(
        sessions["explain"], images=images, targets=targets.astype(np.int32),
        rho=np.full(3, 0.05, np.float32), steps=np.full(3, 7, np.int32),
    )
    for name in ("explanations", "delta", "target_confidence"):
        np.testing.assert_allclose(result.as_numpy(name), expected[name], atol=1e-5)
    for name in ("first_met_step", "target_is_top"):
        assert result.as_numpy(name).dtype == expected[name].dtype
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])


def test_explain_route_takes_card_defaults_and_per_image_tensors(tiny_server, sessions, images):
    targets = [2, 2, 5]
    body = {"inputs": [
        {"name": "images", "shape": [3, 32, 32, 3], "datatype": "FP32", "data": images.tolist()},
        {"name": "targets", "shape": [3, 1], "datatype": "INT64", "data": targets},
    ]}
    status, answer, _ = infer_raw(f"{tiny_server}/v2/models/tiny/explain", body)
    assert status == 200
    delta = {o["name"]: o for o in json.loads(answer)["outputs"]}["delta"]
    assert delta["shape"] == [3, 32, 32, 3] and delta["datatype"] == "FP32"
    expected = run_onnx(sessions["explain"], images=images, targets=np.int32(targets),
                        rho=np.full(3, RHO, np.float32), steps=np.full(3, STEPS, np.int32))
    np.testing.assert_allclose(np.reshape(delta["data"], (3, 32, 32, 3)), expected["delta"], atol=1e-5)
    rho = {"name": "rho", "shape": [3], "datatype": "FP32", "data": [0.05, 0.1, 0.2]}
    steps = {"name": "steps", "shape": [1], "datatype": "INT32", "data": [5]}
    status, answer, _ = infer_raw(f"{tiny_server}/v2/models/tiny/versions/1/explain",
                                  {"inputs": body["inputs"] + [rho, steps]})
    assert status == 200
    delta = {o["name"]: o for o in json.loads(answer)["outputs"]}["delta"]
    expected = run_onnx(sessions["explain"], images=images, targets=np.int32(targets),
                        rho=np.float32([0.05, 0.1, 0.2]), steps=np.full(3, 5, np.int32))
    np.testing.assert_allclose(np.reshape(delta["data"], (3, 32, 32, 3)), expected["delta"], atol=1e-5)


def test_binary_answer_carries_its_header_length(tiny_server, sessions, images):
    body = {"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": images[:1].tolist()}],
            "outputs": [{"name": "classes", "parameters": {"binary_data": True}}]}
    status, answer, headers = infer_raw(f"{tiny_server}/v2/models/tiny/infer", body)
    length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(answer[:length])
    assert status == 200 and header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    classes = np.frombuffer(answer[length:], "<i8")
    np.testing.assert_array_equal(classes, run_onnx(sessions["predict"], images=images[:1])["classes"])


def _images(**changes):
    return {"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": IMAGE.reshape(-1).tolist(),
            **changes}


def _targets(**changes):
    return {"name": "targets", "shape": [1], "datatype": "INT32", "data": [3], **changes}


BAD_REQUESTS = [
    # (route, body, status, message)
    ("tiny/infer", {"inputs": [_images(datatype="FP64")]}, 400, "datatype must be FP32"),
    ("tiny/infer", {"inputs": [_images(shape=[1, 32, 32])]}, 400, "must hold 1024 values for shape [1, 32, 32]. Received: 3072"),
    ("tiny/infer", {"inputs": [_images(shape=[1, 16, 64, 3])]}, 400, "images has shape [B, 32, 32, 3]"),
    ("tiny/infer", {"inputs": [_images(data=[2.0] * 3072)]}, 400, "images must hold pixel values in [0, 1]"),
    ("tiny/infer", {"inputs": [_images(data=["a"] * 3072)]}, 400, "data is a list of numbers"),
    ("tiny/infer", {"inputs": [_images(shape=[17, 32, 32, 3], data=[0.5] * 3072 * 17)]}, 400, "max_batch=16"),
    ("tiny/infer", {"inputs": []}, 400, "non-empty list of tensors"),
    ("tiny/infer", {"inputs": [_images(), _images()]}, 400, "a second 'images'"),
    ("tiny/infer", {"inputs": [_targets()]}, 400, "this endpoint's inputs are images. Received: name='targets'"),
    ("tiny/infer", {"inputs": [_images()], "parameters": {"rho": 0.1}}, 400, "rho and steps are for explanations"),
    ("tiny/infer", {"inputs": [_images()], "outputs": [{"name": "delta"}]}, 400, "outputs are logits"),
    ("tiny/infer", {"inputs": [_images()], "extra": 1}, 400, "unknown keys ['extra']"),
    ("tiny/infer", {"inputs": [{"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32",
                                "parameters": {"binary_data_size": 12288}}]}, 400, "binary part"),
    ("tiny/explain", {"inputs": [_images()]}, 400, "Received: no targets"),
    ("tiny/explain", {"inputs": [_images(), _targets(data=[10])]}, 400, "targets must be a class index in [0, 10)"),
    ("tiny/explain", {"inputs": [_images(), _targets(data=[1.5])]}, 400, "data is a list of integers"),
    ("tiny/explain", {"inputs": [_images(), _targets(shape=[2], data=[1, 2])]}, 400, "targets has shape [B]"),
    ("tiny/explain", {"inputs": [_images(), _targets()], "parameters": {"rho": -1}}, 400, "parameters.rho: rho must"),
    ("tiny/explain", {"inputs": [_images(), _targets()], "parameters": {"steps": 10**6}}, 400, "steps must be an"),
    ("tiny-explainer/infer", {"inputs": [_images(), _targets()], "parameters": {"Rho": 1}}, 400, "unknown ['Rho']"),
    ("tiny-explainer/infer",
     {"inputs": [_images(), _targets(), {"name": "rho", "shape": [1], "datatype": "FP32", "data": [0.1]}],
      "parameters": {"rho": 0.1}}, 400, "not both"),
    ("nothing/infer", {"inputs": [_images()]}, 404, "No model 'nothing' is served"),
    ("tiny/versions/2/infer", {"inputs": [_images()]}, 404, "has no version 2"),
    ("tiny-explainer/explain", {"inputs": [_images()]}, 404, "No model 'tiny-explainer'"),
]


@pytest.mark.parametrize("route, body, status, message", BAD_REQUESTS, ids=[m for *_, m in BAD_REQUESTS])
def test_bad_requests_get_v2_error_bodies(tiny_server, route, body, status, message):
    answer = call(f"{tiny_server}/v2/models/{route}", body)
    assert answer[0] == status and message in answer[1]["error"], answer
    assert set(answer[1]) == {"error"}


def test_the_client_reports_server_errors(client):
    with pytest.raises(InferenceServerException, match=r"images must hold pixel values in \[0, 1\]") as error:
        client.infer("tiny", [tensor("images", np.full((1, 32, 32, 3), 3.0, np.float32), "FP32", True)])
    assert error.value.status() == "400"


def test_a_bad_header_length_is_named(tiny_server):
    status, answer, _ = infer_raw(f"{tiny_server}/v2/models/tiny/infer", {"inputs": [_images()]},
                                  headers={"Inference-Header-Content-Length": "999999"})
    assert status == 400 and "Inference-Header-Content-Length" in answer["error"]


def test_a_model_named_like_another_models_explainer_is_refused(tiny_export, tmp_path):
    import shutil

    base, name, _ = tiny_export
    shutil.copytree(base / name, tmp_path / name)
    shutil.copytree(base / name, tmp_path / f"{name}-explainer")
    card = json.loads((tmp_path / f"{name}-explainer" / "model_card.json").read_text())
    card["name"] = f"{name}-explainer"
    for version in card["versions"].values():
        version["name"] = card["name"]
    (tmp_path / f"{name}-explainer" / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="would hide the explain endpoint"):
        create_app(str(tmp_path), limits=Limits())


def test_size_and_malformed_body_errors_are_v2_error_bodies(tiny_server):
    status, answer = call_announcing(f"{tiny_server}/v2/models/tiny/infer", 1_000_001)
    assert status == 413 and "max_request_bytes=1000000" in answer["error"] and set(answer) == {"error"}
    status, answer = call(f"{tiny_server}/v2/models/tiny/infer", b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]
    status, answer = call(f"{tiny_server}/v2/models/tiny/infer", method="GET")
    assert status == 405 and set(answer) == {"error"}
