"""A classifier whose input gradient vanishes: its empty explanations are flagged alike everywhere.

The classifier computes `W·(1e-12·x) + b`: its input gradient (RMSE ~1e-13)
is far below what the attack can follow, so δ never reaches ρ and
`first_met_step` is -1; `b` makes class 1 the top class, so `target_is_top`
is true toward 1 and false toward 4. Python, onnxruntime, the SavedModel and
every protocol (each through its stock client) must answer just that, with
HTTP 200: the caller decides what to do with an empty explanation.
"""

import json
import os
import subprocess
import sys

import grpc
import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import keras_robust
from keras_robust.explanations.outcome import ExplanationOutcomeWarning
from keras_robust.export import export_model
from keras_robust.serving import Limits, create_app
from tests.helpers import TEST_LIMITS, call, run_onnx, running_server

STEPS = 4
TARGETS = np.array([1, 4], np.int32)
EXPECTED = {"first_met_step": [-1, -1], "target_is_top": [True, False]}


def dead_classifier():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1e-12)(inputs))
    bias = keras.initializers.Constant([0.0, 12.0] + [0.0] * 8)  # p(1) = 0.99994
    return keras.Model(inputs, keras.layers.Dense(10, bias_initializer=bias)(flat), name="dead")


@pytest.fixture(scope="module")
def dead(tmp_path_factory):
    """`(export folder, classifier)`: the classifier exported in both formats as "dead"."""
    base = tmp_path_factory.mktemp("dead")
    model = dead_classifier()
    export_model(model, str(base), name="dead", steps=STEPS)
    return base, model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(8).random((2, 32, 32, 3), dtype=np.float32)


def outcome(answer):
    """`{first_met_step, target_is_top}` as plain lists, whatever the client returned."""
    return {name: np.asarray(answer[name]).reshape(-1).tolist() for name in EXPECTED}


def test_python_onnxruntime_and_the_saved_model_flag_it_alike(dead, images):
    base, model = dead
    with pytest.warns(ExplanationOutcomeWarning):
        explained = keras_robust.AdversarialExplainer(model, steps=STEPS, sanity_check=False).explain(
            images, TARGETS[:, None])
    assert outcome({"first_met_step": explained.first_met_step, "target_is_top": explained.target_is_top}) == EXPECTED
    assert explained.outcome.reshape(-1).tolist() == ["held", "vanishing"]
    session = onnxruntime.InferenceSession(str(base / "dead" / "dead-1-explain.onnx"),
                                           providers=["CPUExecutionProvider"])
    onnx_answer = run_onnx(session, images=images, targets=TARGETS)
    assert outcome(onnx_answer) == EXPECTED
    assert onnx_answer["first_met_step"].dtype == np.int32 and onnx_answer["target_is_top"].dtype == bool
    saved = tf.saved_model.load(str(base / "dead" / "1")).signatures["explain"]
    saved_answer = saved(images=images, targets=TARGETS, rho=np.float32([0.1]), steps=np.int32([STEPS]))
    assert outcome({name: value.numpy() for name, value in saved_answer.items()}) == EXPECTED
    assert saved_answer["target_is_top"].dtype == tf.bool and saved_answer["first_met_step"].dtype == tf.int32


@pytest.fixture(scope="module", params=["onnx", "savedmodel"])
def served(request, dead):
    """`(HTTP base URL, gRPC address)` of the export served by each backend, over HTTP and gRPC."""
    app = create_app(str(dead[0]), backend=request.param, limits=Limits(**TEST_LIMITS), grpc_port=0)
    with running_server(app) as url:
        yield url, f"127.0.0.1:{app.state.grpc_port}"


def test_tf_serving_rest_and_kserve_v1_answer_200_with_the_outcome(served, images):
    url, _ = served
    instances = [{"images": image.tolist(), "targets": int(t)} for image, t in zip(images, TARGETS)]
    status, answer = call(f"{url}/v1/models/dead:predict", {"signature_name": "explain", "instances": instances})
    assert status == 200 and outcome({name: [p[name] for p in answer["predictions"]] for name in EXPECTED}) == EXPECTED
    status, answer = call(f"{url}/v1/models/dead:explain", {"inputs": {"images": images.tolist(),
                                                                      "targets": TARGETS.tolist()}})
    assert status == 200 and outcome(answer["outputs"]) == EXPECTED
    assert all(isinstance(value, bool) for value in answer["outputs"]["target_is_top"])


def test_tf_serving_grpc_stub_reads_the_outcome(served, images):
    _, address = served
    message = predict_pb2.PredictRequest()
    message.model_spec.name, message.model_spec.signature_name = "dead", "explain"
    message.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    message.inputs["targets"].CopyFrom(tf.make_tensor_proto(TARGETS))
    with grpc.insecure_channel(address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(message, timeout=60)
    assert response.outputs["target_is_top"].dtype == tf.bool.as_datatype_enum
    assert outcome({name: tf.make_ndarray(response.outputs[name]) for name in EXPECTED}) == EXPECTED


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_and_grpc_read_the_outcome(served, images, binary):
    url, address = served
    for module, client in ((triton_http, triton_http.InferenceServerClient(url.split("//")[1])),
                           (triton_grpc, triton_grpc.InferenceServerClient(address))):
        inputs = [module.InferInput("images", list(images.shape), "FP32"),
                  module.InferInput("targets", [2], "INT32")]
        if module is triton_http:
            inputs[0].set_data_from_numpy(images, binary_data=binary)
            inputs[1].set_data_from_numpy(TARGETS, binary_data=binary)
            outputs = [triton_http.InferRequestedOutput(name, binary_data=binary) for name in EXPECTED]
        else:
            inputs[0].set_data_from_numpy(images)
            inputs[1].set_data_from_numpy(TARGETS)
            outputs = [triton_grpc.InferRequestedOutput(name) for name in EXPECTED]
        result = client.infer("dead-explainer", inputs, outputs=outputs)
        assert result.as_numpy("target_is_top").dtype == bool, module.__name__
        assert outcome({name: result.as_numpy(name) for name in EXPECTED}) == EXPECTED, module.__name__
        client.close()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kserve_sdk_reads_the_outcome(dead, images, tmp_path):
    app = create_app(str(dead[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "targets.npy", TARGETS.astype(np.int64))
    script = os.path.join(os.path.dirname(__file__), "open_inference", "kserve_sdk_calls.py")
    with running_server(app) as url:
        run = subprocess.run([sys.executable, script, url, f"127.0.0.1:{app.state.grpc_port}",
                              str(tmp_path / "images.npy"), str(tmp_path / "targets.npy"), "dead"],
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    v1 = answers.pop("v1_rest")["explain"]
    assert outcome({name: [p[name] for p in v1] for name in EXPECTED}) == EXPECTED
    for client, answer in answers.items():
        assert outcome(answer["explain"]) == EXPECTED, client
