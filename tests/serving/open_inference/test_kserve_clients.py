"""KServe's Python SDK: its V1 and V2 REST and V2 gRPC clients, and its requests pinned down.

`test_kserve_sdk_clients_unchanged` runs KServe's own clients
(`tests/serving/open_inference/kserve_sdk_calls.py`, in a process of its own: kserve and
tritonclient cannot share one). The other tests send what KServe 0.21's
`InferenceRESTClient` sends: JSON with `Content-Type: application/json` and
httpx's `Accept: */*`; it reads fields other V2 servers answer:
`{"status": "alive"}` at `GET /`, `"ready"` in V1's model status,
`"model_name"` in a V2 answer (its `InferResponse.from_rest` requires it).
Answers are checked against onnxruntime run on the exported graphs.
"""

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from keras_robust.serving import Limits, create_app
from tests.helpers import TEST_LIMITS, call, run_onnx, running_server

# What httpx, KServe's HTTP library, sends with every request.
HEADERS = {"Accept": "*/*", "Content-Type": "application/json", "User-Agent": "python-httpx/0.28.1"}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(21).random((2, 32, 32, 3), dtype=np.float32)


def kserve_call(url, body=None):
    return call(url, body, method="POST" if body is not None else "GET", headers=HEADERS)


def test_v1_server_and_model_readiness(tiny_server):
    assert kserve_call(f"{tiny_server}/") == (200, {"status": "alive"})
    status, answer = kserve_call(f"{tiny_server}/v1/models/tiny")
    assert status == 200 and answer["ready"] is True
    assert answer["model_version_status"][0]["state"] == "AVAILABLE"  # TF Serving's fields stay


def test_a_browser_still_gets_the_page(tiny_server):
    import urllib.request

    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    with urllib.request.urlopen(urllib.request.Request(f"{tiny_server}/", headers={"Accept": accept})) as page:
        assert page.headers["Content-Type"].startswith("text/html") and b"<html" in page.read().lower()


def test_v1_predict_and_explain(tiny_server, sessions, images):
    status, answer = kserve_call(f"{tiny_server}/v1/models/tiny:predict", {"instances": images.tolist()})
    assert status == 200
    expected = run_onnx(sessions["predict"], images=images)
    np.testing.assert_allclose([p["logits"] for p in answer["predictions"]], expected["logits"], atol=1e-4)
    body = {"instances": [{"images": image.tolist(), "targets": 3, "steps": 4} for image in images]}
    status, answer = kserve_call(f"{tiny_server}/v1/models/tiny:explain", body)
    assert status == 200
    expected = run_onnx(sessions["explain"], images=images, targets=np.array([3, 3], np.int32),
                        rho=np.full(2, 0.1, np.float32), steps=np.full(2, 4, np.int32))
    np.testing.assert_allclose([p["delta"] for p in answer["predictions"]], expected["delta"], atol=1e-4)


def test_v2_health_and_model_readiness(tiny_server):
    assert kserve_call(f"{tiny_server}/v2/health/live")[1]["live"] is True
    assert kserve_call(f"{tiny_server}/v2/health/ready")[1]["ready"] is True
    assert 200 <= kserve_call(f"{tiny_server}/v2/models/tiny/ready")[0] < 300


def test_v2_infer_with_id_and_model_name(tiny_server, sessions, images):
    request_id = str(uuid.uuid4())
    body = {"id": request_id, "model_name": "tiny", "inputs": [
        {"name": "images", "shape": list(images.shape), "datatype": "FP32", "data": images.reshape(-1).tolist()},
    ]}
    status, answer = kserve_call(f"{tiny_server}/v2/models/tiny/infer", body)
    assert status == 200, answer
    # InferResponse.from_rest reads these.
    assert answer["model_name"] == "tiny" and answer["id"] == request_id and answer["model_version"] == "1"
    logits = next(o for o in answer["outputs"] if o["name"] == "logits")
    np.testing.assert_allclose(np.reshape(logits["data"], logits["shape"]),
                               run_onnx(sessions["predict"], images=images)["logits"], atol=1e-4)


@pytest.mark.parametrize("field, value", [("model_name", "other"), ("model_version", "2"), ("model_name", 5)])
def test_v2_body_naming_another_model_is_refused(tiny_server, images, field, value):
    body = {field: value, "inputs": [
        {"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": images[0].reshape(-1).tolist()},
    ]}
    status, answer = kserve_call(f"{tiny_server}/v2/models/tiny/infer", body)
    assert status == 400 and f"Received: {field}={value!r}" in answer["error"], answer


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kserve_sdk_clients_unchanged(tiny_export, sessions, images, tmp_path):
    app = create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    targets = np.int64([3, 8])
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "targets.npy", targets)
    script = os.path.join(os.path.dirname(__file__), "kserve_sdk_calls.py")
    with running_server(app) as url:
        run = subprocess.run([sys.executable, script, url, f"127.0.0.1:{app.state.grpc_port}",
                              str(tmp_path / "images.npy"), str(tmp_path / "targets.npy")],
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    predicted = run_onnx(sessions["predict"], images=images)
    explained = run_onnx(sessions["explain"], images=images, targets=targets.astype(np.int32),
                         rho=np.full(2, 0.1, np.float32), steps=np.full(2, 4, np.int32))
    v1 = answers.pop("v1_rest")
    assert v1["live"] is True and v1["ready"] is True
    np.testing.assert_allclose([p["logits"] for p in v1["predict"]], predicted["logits"], atol=1e-4)
    np.testing.assert_allclose([p["delta"] for p in v1["explain"]], explained["delta"], atol=1e-4)
    assert sorted(answers) == ["v2_grpc", "v2_rest_binary", "v2_rest_json"]
    for client, answer in answers.items():
        assert answer["live"] is True and answer["ready"] is True and answer["model_ready"] is True, client
        for name, value in predicted.items():
            np.testing.assert_allclose(answer["predict"][name], value, atol=1e-4, err_msg=f"{client} {name}")
        for name, value in explained.items():
            np.testing.assert_allclose(answer["explain"][name], value, atol=1e-4, err_msg=f"{client} {name}")
