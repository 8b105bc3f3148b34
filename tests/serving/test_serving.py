"""The HTTP service (`keras_robust.serving`) over a real uvicorn server.

Requests follow TF Serving's REST API. Answers are checked against
onnxruntime run directly on the exported graphs, the Keras model, and
`keras_robust.AdversarialExplainer`.
"""

import asyncio
import base64
import concurrent.futures
import io
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import onnxruntime
import PIL.Image
import pytest

import keras_robust
from keras_robust.export import read_card
from keras_robust.serving import Limits, create_app, load_backend
from keras_robust.serving.plane import backends as serving_backends
from keras_robust.serving.plane.data_plane import DataPlane, InferenceRequest
from keras_robust.serving.plane.errors import ServingError
from keras_robust.serving.plane.registry import load_models
from tests.helpers import REPO_ROOT, call, call_announcing, run_onnx

RHO, STEPS = 0.1, 35  # the card's explain defaults (export_model's)
IMAGE = np.full((32, 32, 3), 0.5).tolist()


def columns(predictions):
    """Row-format predictions as columns, to compare with the columnar answer."""
    return {name: np.array([p[name] for p in predictions]) for name in predictions[0]}


def png_b64(array, format="PNG"):
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format=format)
    return base64.b64encode(buffer.getvalue()).decode()


def explain_feeds(images, targets, rho=RHO, steps=STEPS):
    n = len(images)
    return dict(
        images=np.asarray(images, np.float32),
        targets=np.asarray(targets, np.int32),
        rho=np.full(n, rho, np.float32),
        steps=np.full(n, steps, np.int32),
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).random((3, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def class_names(tiny_export):
    base, name, _ = tiny_export
    return read_card(str(base / name))["class_names"]


@pytest.fixture(scope="module")
def targets(tiny_export, images):
    """The least likely class of each image: explaining toward it must raise its confidence."""
    logits = np.asarray(tiny_export[2](images, training=False))
    return np.argmin(logits, axis=1).astype(int).tolist()


@pytest.fixture(scope="module")
def reference(tiny_export, images, targets):
    """The library's own explanation (docs/method.md §5) of `images` toward `targets`."""
    explainer = keras_robust.AdversarialExplainer(tiny_export[2], rho=RHO, steps=STEPS, sanity_check=False)
    return explainer.explain(images, [[t] for t in targets])


def check_explanation(outputs, images, reference):
    """Bounded (RMSE ρ), toward the target, and equal to the library's explanation."""
    # The signature's outputs only.
    assert set(outputs) == {"explanations", "delta", "target_confidence", "first_met_step", "target_is_top"}
    delta = np.asarray(outputs["delta"], np.float32)
    np.testing.assert_allclose(np.sqrt((delta**2).mean(axis=(1, 2, 3))), RHO, rtol=0.05)
    np.testing.assert_allclose(outputs["explanations"], images + delta, atol=1e-5)
    np.testing.assert_allclose(delta, reference.delta[:, 0], atol=1e-3)
    confidence = np.asarray(outputs["target_confidence"])
    assert (confidence > reference.confidence_before[:, 0]).all()
    np.testing.assert_allclose(confidence, reference.confidence_after[:, 0], atol=1e-3)
    np.testing.assert_array_equal(outputs["first_met_step"], reference.first_met_step[:, 0])
    np.testing.assert_array_equal(outputs["target_is_top"], reference.target_is_top[:, 0])


# --- predict -----------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layout", ["row", "row-named", "columnar", "columnar-named"])
def test_predict_matches_onnxruntime_and_keras(tiny_server, tiny_export, sessions, images, batch, layout):
    x = images[:batch]
    body = {
        "row": {"instances": x.tolist()},
        "row-named": {"instances": [{"images": image} for image in x.tolist()], "signature_name": "serving_default"},
        "columnar": {"inputs": x.tolist()},
        "columnar-named": {"inputs": {"images": x.tolist()}},
    }[layout]
    status, answer = call(f"{tiny_server}/v1/models/tiny:predict", body)
    assert status == 200, answer
    if layout.startswith("row"):
        assert len(answer["predictions"]) == batch
        assert list(answer["predictions"][0]) == ["logits", "probabilities", "classes"]
        outputs = columns(answer["predictions"])
    else:
        outputs = {name: np.array(value) for name, value in answer["outputs"].items()}
    expected = run_onnx(sessions["predict"], images=x)
    for name in ("logits", "probabilities"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4)
    np.testing.assert_allclose(outputs["logits"], np.asarray(tiny_export[2](x, training=False)), atol=1e-4)
    assert outputs["classes"].dtype.kind == "i"
    np.testing.assert_array_equal(outputs["classes"], expected["classes"])


def test_predict_decodes_b64_images(tiny_server, sessions):
    draw = np.random.default_rng(3)
    exact = draw.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    larger = draw.integers(0, 256, (40, 45, 4), dtype=np.uint8)  # RGBA, resized and converted
    gray = draw.integers(0, 256, (20, 20), dtype=np.uint8)
    body = {
        "instances": [
            {"b64": png_b64(exact)},
            {"images": {"b64": png_b64(larger)}},
            {"b64": png_b64(gray)},
            {"b64": png_b64(exact, "JPEG")},
        ]
    }
    status, answer = call(f"{tiny_server}/v1/models/tiny:predict", body)
    assert status == 200, answer

    def decoded(b64):
        image = PIL.Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
        return np.asarray(image.resize((32, 32), PIL.Image.BILINEAR), np.float32) / 255

    x = np.stack([decoded(instance.get("b64") or instance["images"]["b64"]) for instance in body["instances"]])
    np.testing.assert_array_equal(x[0], exact / np.float32(255))
    expected = run_onnx(sessions["predict"], images=x)
    np.testing.assert_allclose(columns(answer["predictions"])["logits"], expected["logits"], atol=1e-4)


# --- explain -----------------------------------------------------------------


@pytest.mark.parametrize("verb", ["predict", "explain"])
@pytest.mark.parametrize("layout", ["row", "columnar"])
def test_explain_matches_the_library(tiny_server, images, targets, reference, verb, layout):
    if layout == "row":
        instances = [
            {"images": image, "targets": t, "rho": RHO, "steps": STEPS} for image, t in zip(images.tolist(), targets)
        ]
        body = {"instances": instances}
    else:
        body = {"inputs": {"images": images.tolist(), "targets": targets, "rho": [RHO] * 3, "steps": [STEPS] * 3}}
    if verb == "predict":
        body["signature_name"] = "explain"
    status, answer = call(f"{tiny_server}/v1/models/tiny:{verb}", body)
    assert status == 200, answer
    outputs = columns(answer["predictions"]) if layout == "row" else answer["outputs"]
    check_explanation(outputs, images, reference)


def test_explain_defaults_class_names_and_scalars(tiny_server, images, targets, class_names, reference):
    """rho and steps default to the card's; targets may be names; columnar scalars broadcast."""
    url = f"{tiny_server}/v1/models/tiny:explain"
    row = [{"images": image, "targets": class_names[t]} for image, t in zip(images.tolist(), targets)]
    status, by_name = call(url, {"instances": row})
    assert status == 200, by_name
    check_explanation(columns(by_name["predictions"]), images, reference)
    status, broadcast = call(url, {"inputs": {"images": images[:2].tolist(), "targets": targets[0], "rho": RHO}})
    assert status == 200, broadcast
    same_target = dict(images=images[:2].tolist(), targets=[targets[0]] * 2, rho=[RHO] * 2, steps=[STEPS] * 2)
    status, explicit = call(url, {"inputs": same_target})
    assert status == 200, explicit
    np.testing.assert_allclose(broadcast["outputs"]["delta"], explicit["outputs"]["delta"], atol=1e-6)


def test_explain_takes_per_example_rho_and_steps(tiny_server, sessions, images, targets):
    feeds = dict(
        images=images, targets=np.asarray(targets, np.int32),
        rho=np.array([0.05, 0.1, 0.2], np.float32), steps=np.array([35, 10, 35], np.int32),
    )
    instances = [
        {"images": x, "targets": t, "rho": float(r), "steps": int(s)}
        for x, t, r, s in zip(images.tolist(), targets, feeds["rho"], feeds["steps"])
    ]
    status, answer = call(f"{tiny_server}/v1/models/tiny:explain", {"instances": instances})
    assert status == 200, answer
    expected = run_onnx(sessions["explain"], **feeds)
    outputs = columns(answer["predictions"])
    for name in ("delta", "target_confidence"):
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4)
    rmse = np.sqrt((outputs["delta"] ** 2).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(rmse[[0, 2]], [0.05, 0.2], rtol=0.05)


# --- status, metadata, versions ----------------------------------------------


def test_status_and_metadata(tiny_server, class_names):
    for path in ("", "/versions/1"):
        status, answer = call(f"{tiny_server}/v1/models/tiny{path}")
        assert status == 200
        assert answer == {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ],
            "ready": True,  # KServe V1's field, beside TF Serving's
        }
        status, answer = call(f"{tiny_server}/v1/models/tiny{path}/metadata")
        assert status == 200
        assert answer["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
        defs = answer["metadata"]["signature_def"]["signature_def"]
        assert list(defs["explain"]["inputs"]) == ["images", "targets", "rho", "steps"]
        assert list(defs["explain"]["outputs"]) == ["explanations", "delta", "target_confidence", "first_met_step",
                                                    "target_is_top"]
        assert defs["explain"]["outputs"]["target_is_top"]["dtype"] == "DT_BOOL"
        assert defs["explain"]["outputs"]["first_met_step"]["dtype"] == "DT_INT32"
        images = defs["serving_default"]["inputs"]["images"]
        assert images["dtype"] == "DT_FLOAT"
        assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "32", "32", "3"]
        assert defs["serving_default"]["outputs"]["classes"]["dtype"] == "DT_INT64"
        assert defs["explain"]["inputs"]["targets"]["dtype"] == "DT_INT32"
        assert defs["explain"]["method_name"] == "tensorflow/serving/predict"
        card = answer["metadata"]["card"]
        assert card["class_names"] == class_names
        assert card["explain_defaults"]["rho"] == RHO


def test_versioned_requests(tiny_server, images):
    status, versioned = call(f"{tiny_server}/v1/models/tiny/versions/1:predict", {"inputs": images.tolist()})
    assert status == 200
    _, latest = call(f"{tiny_server}/v1/models/tiny:predict", {"inputs": images.tolist()})
    assert versioned == latest
    status, answer = call(
        f"{tiny_server}/v1/models/tiny/versions/1:explain",
        {"instances": [{"images": IMAGE, "targets": 1, "steps": 3}]},
    )
    assert status == 200, answer
    for suffix in ("", "/metadata", ":predict", ":explain"):
        body = {"instances": [IMAGE]} if suffix.startswith(":") else None
        status, answer = call(f"{tiny_server}/v1/models/tiny/versions/7{suffix}", body)
        assert status == 404, suffix
        assert "no version 7" in answer["error"]


def test_several_models_and_versions(tiny_export, tmp_path, start_server, images):
    """Every model folder is served. Version 2 (the latest loaded) answers by
    default; version 3 fails to load (its ONNX files are missing) and is
    reported, not fatal."""
    base, name, _ = tiny_export
    for folder in (tmp_path / name, tmp_path / "other"):
        shutil.copytree(base / name, folder, ignore=shutil.ignore_patterns("1"))  # the ONNX files suffice
    card = read_card(str(tmp_path / name))["versions"]["1"]
    v2 = dict(card, version=2)
    v3 = dict(card, version=3, files={"onnx_predict": "gone.onnx", "onnx_explain": "gone.onnx"})
    (tmp_path / name / "model_card.json").write_text(json.dumps(dict(v3, versions={"1": card, "2": v2, "3": v3})))
    other = dict(card, name="other")
    (tmp_path / "other" / "model_card.json").write_text(json.dumps(dict(other, versions={"1": other})))
    with start_server(create_app(str(tmp_path))) as url:
        status, answer = call(f"{url}/v1/models/tiny")
        assert status == 200
        states = {v["version"]: (v["state"], v["status"]["error_code"]) for v in answer["model_version_status"]}
        assert states == {"3": ("END", "UNKNOWN"), "2": ("AVAILABLE", "OK"), "1": ("AVAILABLE", "OK")}
        assert call(f"{url}/v1/models/tiny/metadata")[1]["model_spec"]["version"] == "2"
        status, answer = call(f"{url}/v1/models/tiny/versions/3:predict", {"inputs": images.tolist()})
        assert status == 503 and "gone.onnx" in answer["error"]
        default = call(f"{url}/v1/models/tiny:predict", {"inputs": images.tolist()})
        assert default[0] == 200
        assert default == call(f"{url}/v1/models/tiny/versions/2:predict", {"inputs": images.tolist()})
        assert call(f"{url}/v1/models")[1]["models"] == [
            {"name": "other", "versions": [1], "default_version": 1, "failed_versions": []},
            {"name": "tiny", "versions": [1, 2], "default_version": 2, "failed_versions": [3]},
        ]
        assert call(f"{url}/v1/models/other:predict", {"inputs": images.tolist()}) == default


# --- errors ------------------------------------------------------------------


def _image_with(value):
    image = np.full((32, 32, 3), 0.5)
    image[3, 4, 1] = value
    return image.tolist()


def _truncated_png():
    data = base64.b64decode(png_b64(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    return base64.b64encode(data[: len(data) // 2]).decode()


def _explain(**instance):
    return {"signature_name": "explain", "instances": [{"images": IMAGE, "targets": 1, **instance}]}


RAGGED = [[[0.5] * 3] * 32] * 31 + [[[0.5] * 3] * 31]
BAD_REQUESTS = [
    # (id, path after /v1/models/, body, status, part of the error)
    ("malformed-json", "tiny:predict", b'{"instances": [', 400, "not valid JSON"),
    ("not-utf8", "tiny:predict", b"\x80\x81{}", 400, "not valid JSON"),
    ("not-an-object", "tiny:predict", b"[1, 2]", 400, "JSON object"),
    ("too-deep", "tiny:predict", b"[" * 100_000, 400, "too deeply"),
    ("no-instances-or-inputs", "tiny:predict", {"signature_name": "serving_default"}, 400, "exactly one"),
    ("instances-and-inputs", "tiny:predict", {"instances": [IMAGE], "inputs": [IMAGE]}, 400, "exactly one"),
    ("unknown-request-key", "tiny:predict", {"instances": [IMAGE], "instance": 1}, 400, "unknown keys"),
    ("instances-not-a-list", "tiny:predict", {"instances": {"images": IMAGE}}, 400, "non-empty list"),
    ("empty-instances", "tiny:predict", {"instances": []}, 400, "non-empty list"),
    ("wrong-shape", "tiny:predict", {"instances": [np.zeros((32, 32)).tolist()]}, 400, "shape [32, 32, 3]"),
    ("missing-batch-dim", "tiny:predict", {"inputs": IMAGE}, 400, "without the batch dimension"),
    ("missing-batch-dim-row", "tiny:predict", {"instances": IMAGE}, 400, "without the batch dimension"),
    ("ragged", "tiny:predict", {"instances": [RAGGED]}, 400, "ragged"),
    ("strings", "tiny:predict", {"instances": [[[["a"] * 3] * 32] * 32]}, 400, "numbers"),
    ("booleans", "tiny:predict", {"instances": [[[[True] * 3] * 32] * 32]}, 400, "numbers"),
    ("nan", "tiny:predict", {"instances": [_image_with(float("nan"))]}, 400, "finite"),
    ("infinity", "tiny:predict", {"instances": [_image_with(float("inf"))]}, 400, "finite"),
    ("above-1", "tiny:predict", {"instances": [_image_with(1.5)]}, 400, "[0, 1]"),
    ("below-0", "tiny:predict", {"inputs": [IMAGE, _image_with(-0.1)]}, 400, "inputs.images[1]"),
    ("bad-base64", "tiny:predict", {"instances": [{"b64": "not base64!"}]}, 400, "not valid base64"),
    ("b64-not-a-string", "tiny:predict", {"instances": [{"images": {"b64": 5}}]}, 400, "b64"),
    ("not-an-image", "tiny:predict", {"instances": [IMAGE, {"b64": base64.b64encode(b"hello").decode()}]},
     400, "instance 1: images.b64 is not an image"),
    ("truncated-image", "tiny:predict", {"instances": [{"b64": _truncated_png()}]}, 400, "not a readable image"),
    ("too-many-examples", "tiny:predict", {"instances": [IMAGE] * 17}, 400, "max_batch=16"),
    ("unknown-signature", "tiny:predict", {"signature_name": "classify", "instances": [IMAGE]}, 400, "signatures"),
    ("signature-not-a-string", "tiny:predict", {"signature_name": 1, "instances": [IMAGE]}, 400, "signatures"),
    ("explain-verb-other-signature", "tiny:explain", {"signature_name": "serving_default", "instances": [IMAGE]},
     400, "'explain' signature"),
    ("missing-targets", "tiny:predict", {"signature_name": "explain", "instances": [{"images": IMAGE}]},
     400, "missing ['targets']"),
    ("unknown-input", "tiny:predict", _explain(strength=2), 400, "unknown ['strength']"),
    ("bare-image-for-explain", "tiny:explain", {"instances": [IMAGE]}, 400, "an instance is an object"),
    ("columnar-explain-not-an-object", "tiny:explain", {"inputs": [IMAGE]}, 400, "'inputs' is an object"),
    ("columnar-length-mismatch", "tiny:explain", {"inputs": {"images": [IMAGE] * 2, "targets": [1]}},
     400, "one entry per image"),
    ("target-too-large", "tiny:predict", _explain(targets=10), 400, "[0, 10)"),
    ("target-negative", "tiny:predict", _explain(targets=-1), 400, "[0, 10)"),
    ("target-unknown-name", "tiny:explain", _explain(targets="zebra"), 400, "class name"),
    ("target-float", "tiny:explain", _explain(targets=2.5), 400, "targets must be"),
    ("target-bool", "tiny:explain", _explain(targets=True), 400, "targets must be"),
    ("rho-zero", "tiny:explain", _explain(rho=0), 400, "rho must be"),
    ("rho-negative", "tiny:explain", _explain(rho=-0.1), 400, "rho must be"),
    ("rho-nan", "tiny:explain", _explain(rho=float("nan")), 400, "rho must be"),
    ("rho-string", "tiny:explain", _explain(rho="0.1"), 400, "rho must be"),
    ("rho-huge", "tiny:explain", _explain(rho=1e19), 400, "rho must be a number in (0, 1]"),
    ("rho-float32-max", "tiny:explain", _explain(rho=3.4e38), 400, "rho must be a number in (0, 1]"),
    ("steps-zero", "tiny:explain", _explain(steps=0), 400, "steps must be"),
    ("steps-above-cap", "tiny:explain", _explain(steps=201), 400, "[1, 200]"),
    ("steps-float", "tiny:explain", _explain(steps=2.5), 400, "steps must be"),
    ("image-steps-above-cap", "tiny:explain",
     {"instances": [{"images": IMAGE, "targets": 1, "steps": 200}] * 13}, 400,
     "max_image_steps=2500 image-steps (the sum over its examples of explanation steps, SmoothGrad samples or "
     "Integrated Gradients points); send fewer images or steps. Received: 13 examples, 2600 image-steps"),
    ("unknown-model", "nope:predict", {"instances": [IMAGE]}, 404, "No model 'nope'"),
    ("unknown-model-status", "nope", None, 404, "No model 'nope'"),
    ("unknown-version", "tiny/versions/7:explain", _explain(), 404, "no version 7"),
    ("non-numeric-version", "tiny/versions/latest/metadata", None, 404, "no version latest"),
]


@pytest.mark.parametrize(
    "path, body, status, message", [case[1:] for case in BAD_REQUESTS], ids=[case[0] for case in BAD_REQUESTS]
)
def test_bad_requests_get_json_errors(tiny_server, path, body, status, message):
    answer_status, answer = call(f"{tiny_server}/v1/models/{path}", body)
    assert answer_status == status, answer
    assert list(answer) == ["error"]
    assert message in answer["error"]
    assert "Received:" in answer["error"]


def test_unknown_routes_and_methods_get_json_errors(tiny_server):
    assert call(f"{tiny_server}/v3/models/tiny")[0] == 404
    status, answer = call(f"{tiny_server}/v1/models/tiny", method="PUT", body=b"{}")
    assert status == 405 and "error" in answer
    status, answer = call(f"{tiny_server}/v1/models/tiny:predict")  # GET
    assert status == 405 and ":predict takes POST" in answer["error"]
    status, answer = call(f"{tiny_server}/v1/models/tiny:classify", {"instances": [IMAGE]})
    assert status == 404 and "Unknown verb 'classify'; verbs: predict, explain" in answer["error"]
    status, answer = call(f"{tiny_server}/v1/models/tiny:classify")  # GET
    assert status == 404 and "Unknown verb 'classify'" in answer["error"]
    status, answer = call(f"{tiny_server}/v1/models/tiny", {"instances": [IMAGE]})  # no verb
    assert status == 405 and "Received: POST /v1/models/tiny" in answer["error"]


@pytest.mark.parametrize("method, path, allow", [
    ("GET", "/v1/models/tiny:predict", "POST"), ("GET", "/v1/models/tiny/versions/1:explain", "POST"),
    ("POST", "/v1/models/tiny", "GET"), ("PUT", "/v2/models/tiny/infer", "POST"), ("DELETE", "/v2", "GET"),
])
def test_405_answers_name_the_methods_allowed(tiny_server, method, path, allow):
    request = urllib.request.Request(tiny_server + path, data=b"{}" if method != "GET" else None, method=method)
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request)
    assert error.value.code == 405 and error.value.headers["Allow"] == allow


def test_error_answers_stay_small_for_huge_urls(tiny_server):
    for path in ("/v1/models/" + "x" * 100_000, "/v9/" + "y" * 100_000):
        request = urllib.request.Request(tiny_server + path)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        answer = refused.value.read()
        assert len(answer) < 1000 and "error" in json.loads(answer)
        # uvicorn may refuse a 100 KB request line itself (400, still JSON) before routing it.
        assert refused.value.code in (400, 404)
        if refused.value.code == 404:
            assert " characters)" in json.loads(answer)["error"]


def test_a_body_that_never_arrives_times_out_and_an_aborted_upload_logs_no_error(tiny_export, caplog):
    from tests.helpers import running_server

    with running_server(create_app(str(tiny_export[0]), limits=Limits(timeout_s=1.0))) as url:
        parts = urllib.parse.urlsplit(url)
        started = time.monotonic()
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as client:
            client.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"instan")
            answer = b""
            while b"}" not in answer:
                answer += client.recv(65536)
            answer = answer.decode()
        assert time.monotonic() - started < 10
        assert answer.startswith("HTTP/1.1 408") and "timeout_s=1 s" in answer
        with caplog.at_level(logging.INFO, logger="keras_robust.serving"):
            with socket.create_connection((parts.hostname, parts.port), timeout=30) as client:
                client.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\n"
                               b"Content-Length: 100000\r\n\r\n" + b" " * 5000)
            time.sleep(0.5)  # the server notices the closed connection
            assert call(url + "/v1/models/tiny")[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Client closed the connection after" in caplog.text


def test_size_caps_answer_413(tiny_server):
    url = f"{tiny_server}/v1/models/tiny:predict"
    status, answer = call_announcing(url, 1_200_000)
    assert status == 413 and "max_request_bytes=1000000" in answer["error"]
    chunks = (b" " * 100_010 for _ in range(10))  # no Content-Length: sent chunked
    status, answer = call(url, chunks, method="POST")
    assert status == 413 and "max_request_bytes" in answer["error"]
    wide = np.zeros((300, 300, 3), np.uint8)  # 90,000 pixels, a small PNG
    status, answer = call(url, {"instances": [{"b64": png_b64(wide)}]})
    assert status == 413 and "max_image_pixels=65536" in answer["error"]
    noise = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)  # ~190 kB
    status, answer = call(url, {"instances": [{"b64": png_b64(noise)}]})
    assert status == 413 and "max_image_bytes=100000" in answer["error"]


def test_unexpected_errors_answer_500_and_the_server_survives(tiny_server, monkeypatch):
    def broken(self, signature, inputs, run_options=None):
        raise RuntimeError("a backend bug")

    monkeypatch.setattr(serving_backends.OnnxBackend, "run", broken)
    status, answer = call(f"{tiny_server}/v1/models/tiny:predict", {"instances": [IMAGE]})
    assert status == 500 and "Internal server error" in answer["error"]
    monkeypatch.undo()
    assert call(f"{tiny_server}/v1/models/tiny:predict", {"instances": [IMAGE]})[0] == 200


# --- load, limits, backends --------------------------------------------------


def test_concurrent_load_shares_one_loaded_model(tiny_server, sessions, images, monkeypatch):
    """50 requests from 8 threads, predictions and short explanations, all right."""
    jobs = []
    for i in range(50):
        x = images[i % 3 : i % 3 + 1]
        if i % 2:
            feeds = explain_feeds(x, [i % 10], rho=0.05, steps=5)
            body = {"signature_name": "explain", "instances": [{"images": x[0].tolist(), "targets": i % 10,
                                                                "rho": 0.05, "steps": 5}]}
            jobs.append((body, run_onnx(sessions["explain"], **feeds), ("delta", "target_confidence")))
        else:
            jobs.append(({"instances": x.tolist()}, run_onnx(sessions["predict"], images=x), ("probabilities",)))

    def no_new_sessions(*args, **kwargs):
        raise AssertionError("a request created an onnxruntime session")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_new_sessions)

    def request(job):
        body, expected, names = job
        status, answer = call(f"{tiny_server}/v1/models/tiny:predict", body)
        assert status == 200, answer
        outputs = columns(answer["predictions"])
        for name in names:
            np.testing.assert_allclose(outputs[name], expected[name], atol=1e-4)
        return status

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(request, jobs)) == [200] * 50


def test_timeout_504_busy_503_and_the_event_loop_stays_free(tiny_export, start_server, monkeypatch):
    """One slot, no queue: an explanation that outlives timeout_s answers 504
    but keeps its slot until it ends, so the next request gets 503, while
    routes that run no inference still answer."""
    release = threading.Event()
    run = serving_backends.OnnxBackend.run

    def held(self, signature, inputs, run_options=None):  # an explanation that lasts until the test releases it
        release.wait(60)
        return run(self, signature, inputs, run_options)

    monkeypatch.setattr(serving_backends.OnnxBackend, "run", held)
    limits = Limits(max_concurrent=1, max_queue=0, timeout_s=0.3)
    with start_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        status, answer = call(f"{url}/v1/models/tiny:explain", {"instances": [{"images": IMAGE, "targets": 1}]})
        assert status == 504 and "timeout_s=0.3" in answer["error"]
        status, answer = call(f"{url}/v1/models/tiny:predict", {"instances": [IMAGE]})
        assert status == 503 and "busy" in answer["error"]
        assert call(f"{url}/v1/models/tiny")[0] == 200
        release.set()
        deadline = time.monotonic() + 30
        while call(f"{url}/v1/models/tiny:predict", {"instances": [IMAGE]})[0] != 200:
            assert time.monotonic() < deadline, "the timed-out explanation never released its slot"
            time.sleep(0.02)


def test_one_deadline_covers_waiting_for_a_slot_and_running(tiny_export, monkeypatch):
    """The data plane gives a request one deadline for everything it goes through:
    B waits 0.5 s for the one slot, then would run 0.6 s, each within its 0.9 s but
    not both, so it answers 504, while A, with the server's 10 s, gets its answer."""
    run = serving_backends.OnnxBackend.run

    def slow(self, signature, inputs, run_options=None):
        time.sleep(0.6)
        return run(self, signature, inputs, run_options=run_options)

    monkeypatch.setattr(serving_backends.OnnxBackend, "run", slow)
    limits = Limits(timeout_s=10, max_concurrent=1, batch_window_ms=0)
    plane = DataPlane(load_models(str(tiny_export[0])), limits)
    backend = plane.model("tiny", "a test").backend()
    request = InferenceRequest("serving_default", {"images": [("images[0]", IMAGE)]})

    async def infer(delay=0.0, timeout=None):
        await asyncio.sleep(delay)
        return await plane.infer(backend, lambda: request, lambda response: response, timeout)

    async def main():
        alone = await infer(timeout=0.9)
        return alone, await asyncio.gather(infer(), infer(0.1, timeout=0.9), return_exceptions=True)

    try:
        alone, (a, b) = asyncio.run(main())
    finally:
        plane.close()
    assert alone.outputs["logits"].shape == (1, 10) and list(alone.outputs) == ["logits", "probabilities", "classes"]
    assert isinstance(b, ServingError) and b.status == 504, b
    np.testing.assert_array_equal(a.outputs["logits"], alone.outputs["logits"])


def test_savedmodel_backend_serves_the_same_answers(tiny_export, start_server, tiny_server, images, targets):
    body = {"inputs": {"images": images.tolist(), "targets": targets, "steps": 20}}
    with start_server(create_app(str(tiny_export[0]), backend="savedmodel")) as url:
        for verb, request in (("predict", {"inputs": images.tolist()}), ("explain", body)):
            status, saved = call(f"{url}/v1/models/tiny:{verb}", request)
            assert status == 200, saved
            _, onnx = call(f"{tiny_server}/v1/models/tiny:{verb}", request)
            for name, value in onnx["outputs"].items():
                np.testing.assert_allclose(saved["outputs"][name], value, atol=1e-3)
        assert call(f"{url}/v1/models/tiny:explain", _explain(targets=10)) == call(
            f"{tiny_server}/v1/models/tiny:explain", _explain(targets=10)
        )


def test_backends_agree(tiny_export, images, targets):
    model_dir = str(tiny_export[0] / tiny_export[1])
    onnx, saved = load_backend(model_dir), load_backend(model_dir, version=1, kind="savedmodel")
    assert (onnx.kind, saved.kind) == ("onnx", "savedmodel")
    for name, value in onnx.predict(images).items():
        np.testing.assert_allclose(saved.predict(images)[name], value, atol=1e-4)
    args = (images, targets, [0.05, 0.1, 0.2], [35, 10, 35])
    explained = saved.explain(*args)
    for name, value in onnx.explain(*args).items():
        np.testing.assert_allclose(explained[name], value, atol=1e-3)
    assert onnx.signature_defs() == saved.signature_defs()


def test_explain_runs_give_their_arena_back_and_predict_runs_keep_it(tiny_export, images, targets):
    backend = load_backend(str(tiny_export[0] / tiny_export[1]))
    seen = {}

    class Recording:
        def __init__(self, session, signature):
            self._session, self._signature = session, signature

        def __getattr__(self, name):
            return getattr(self._session, name)

        def run(self, names, feeds, run_options=None):
            seen[self._signature] = run_options
            return self._session.run(names, feeds, run_options)

    backend._sessions = {signature: Recording(session, signature) for signature, session in backend._sessions.items()}
    backend.predict(images)
    cancellation = onnxruntime.RunOptions()
    backend.explain(images, targets, [0.1] * len(images), [3] * len(images), run_options=cancellation)
    assert seen["serving_default"] is None
    assert seen["explain"] is cancellation  # the request's own options, which its cancellation stops
    assert cancellation.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_configuration_errors(tiny_export, tmp_path):
    model_dir = str(tiny_export[0] / tiny_export[1])
    with pytest.raises(ValueError, match="kind"):
        load_backend(model_dir, kind="torch")
    with pytest.raises(ValueError, match="device"):
        load_backend(model_dir, device="tpu")
    with pytest.raises(ValueError, match="no version 7"):
        load_backend(model_dir, version=7)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            load_backend(model_dir, device="cuda")
    with pytest.raises(ValueError, match="max_batch"):
        Limits(max_batch=0)
    with pytest.raises(ValueError, match="max_steps"):
        Limits(max_steps=2.5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_app(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="model_card.json"):
        create_app(str(tmp_path))
    with pytest.raises(ValueError, match="35 steps by default"):
        create_app(str(tiny_export[0]), limits=Limits(max_steps=10))
    with pytest.raises(ValueError, match="35 steps by default, above max_image_steps"):
        create_app(str(tiny_export[0]), limits=Limits(max_image_steps=20))


def test_server_is_healthy_after_bad_requests(tiny_server, sessions, images):
    for _, path, body, _, _ in BAD_REQUESTS:
        call(f"{tiny_server}/v1/models/{path}", body)
    assert call(f"{tiny_server}/v1/models/tiny")[1]["model_version_status"][0]["state"] == "AVAILABLE"
    status, answer = call(f"{tiny_server}/v1/models/tiny:predict", {"inputs": images.tolist()})
    assert status == 200
    np.testing.assert_allclose(
        answer["outputs"]["logits"], run_onnx(sessions["predict"], images=images)["logits"], atol=1e-4
    )


def test_a_timed_out_explanation_is_cancelled_and_frees_its_slot(tiny_export):
    from tests.helpers import running_server

    limits = Limits(timeout_s=1.0, max_concurrent=1, max_steps=5000, max_image_steps=40000)
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        long = {"instances": [{"images": IMAGE, "targets": 1, "steps": 5000}] * 8}
        started = time.monotonic()
        status, answer = call(f"{url}/v1/models/tiny:explain", long)
        assert status == 504 and "timeout_s=1" in answer["error"]
        status, _ = call(f"{url}/v1/models/tiny:predict", {"instances": [IMAGE]})
        # Without the cancellation the one slot would stay busy for the whole 5000-step run.
        assert status == 200 and time.monotonic() - started < 5


def test_request_bytes_in_flight_are_bounded(tiny_export):
    from tests.helpers import running_server

    limits = Limits(max_request_bytes=1000, max_inflight_bytes=1500)
    with running_server(create_app(str(tiny_export[0]), limits=limits)) as url:
        parts = urllib.parse.urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as slow:
            # A body that is still arriving holds the 900 bytes it has sent ...
            slow.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\n"
                         b"Content-Length: 1000\r\n\r\n{" + b" " * 899)
            time.sleep(0.5)
            status, answer = call(f"{url}/v1/models/tiny:predict", b" " * 900)
            assert status == 503 and "max_inflight_bytes=1500" in answer["error"]
            assert call(f"{url}/v1/models/tiny")[0] == 200  # status answers meanwhile
        time.sleep(0.5)  # ... until its connection is gone
        status, answer = call(f"{url}/v1/models/tiny:predict", b" " * 900)
        assert status == 400  # taken (and refused as JSON, not as a load problem)
    with pytest.raises(ValueError, match="max_inflight_bytes` must be at least max_request_bytes"):
        Limits(max_request_bytes=1000, max_inflight_bytes=999)


@pytest.mark.parametrize("request_head", [
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_malformed_http_gets_a_json_error(tiny_server, request_head):
    parts = urllib.parse.urlsplit(tiny_server)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as client:
        client.sendall(request_head)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    assert "Received: a malformed HTTP request" in json.loads(body)["error"]


BLOCK_TENSORFLOW = """
import importlib.abc, sys

class Unavailable(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "tensorflow_serving"):
            raise ImportError(f"{name} is unavailable in this test")

sys.meta_path.insert(0, Unavailable())
"""


@pytest.mark.multiprocess
def test_the_onnx_server_runs_without_tensorflow(tiny_export, sessions, images):
    """The ONNX path must not import TensorFlow: it would cost the server seconds and
    hundreds of MB at start-up. Here TensorFlow and Keras cannot be imported at all."""
    base, name, _ = tiny_export
    script = BLOCK_TENSORFLOW + f"""
import json, numpy as np
from keras_robust.serving import create_app, load_backend
create_app({str(base)!r})
backend = load_backend({str(base / name)!r})
images = np.asarray(json.loads(sys.stdin.read()), np.float32)
print(json.dumps(backend.predict(images)["logits"].tolist()))
"""
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(images.tolist()), capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(json.loads(done.stdout), run_onnx(sessions["predict"], images=images)["logits"],
                               atol=1e-6)
