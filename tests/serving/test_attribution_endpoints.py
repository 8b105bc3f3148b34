"""The attribution methods served over every protocol: TF Serving REST and gRPC, KServe V1 `:explain`'s `method`,
V2 HTTP and gRPC (the models `<name>-saliency`, ...), each answer equal to the Python method."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_robust.explanations import attributions
from keras_robust.export.card import ATTRIBUTION_METHODS
from keras_robust.serving import Limits, create_app
from tests.helpers import TEST_LIMITS, call, running_server

V2_NAMES = {"saliency": "tiny-saliency", "smoothgrad": "tiny-smoothgrad",
            "integrated_gradients": "tiny-integrated-gradients", "grad_cam": "tiny-grad-cam"}
SETTINGS = {"smoothgrad": dict(samples=2, noise=0.1, seed=4), "integrated_gradients": dict(steps=4)}
TARGETS = np.array([2, 7], np.int32)


@pytest.fixture(scope="module")
def served(tiny_export):
    """`(base URL, V2 HTTP client, V2 gRPC client, TF Serving gRPC stub)` of one app."""
    app = create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    with running_server(app) as url:
        http = triton_http.InferenceServerClient(url.removeprefix("http://"))
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        with grpc.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel:
            yield url, http, client, prediction_service_pb2_grpc.PredictionServiceStub(channel)
        client.close()
        http.close()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(8).random((2, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def expected(tiny_export, images):
    model = tiny_export[2]
    return {method: attributions.METHODS[method](model, images, TARGETS, **SETTINGS.get(method, {}))
            for method in ATTRIBUTION_METHODS}


def relative_error(value, reference):
    return np.abs(np.asarray(value) - reference).max() / np.abs(reference).max()


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_tf_serving_rest_and_kserve_explain_answer_each_method(served, images, expected, method):
    url = served[0]
    rows = [{"images": image.tolist(), "targets": int(t), **SETTINGS.get(method, {})}
            for image, t in zip(images, TARGETS)]
    status, answer = call(f"{url}/v1/models/tiny:predict", {"signature_name": method, "instances": rows})
    assert status == 200, answer
    assert relative_error([row["attributions"] for row in answer["predictions"]], expected[method]) <= 1e-4
    status, answer = call(f"{url}/v1/models/tiny:explain", {"method": method, "instances": rows})
    assert status == 200, answer
    assert relative_error([row["attributions"] for row in answer["predictions"]], expected[method]) <= 1e-4


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_v2_http_and_grpc_answer_each_method_as_a_model(served, images, expected, method):
    _, http, client, _ = served
    for module, reader in ((triton_http, http), (triton_grpc, client)):
        inputs = [module.InferInput("images", list(images.shape), "FP32"), module.InferInput("targets", [2], "INT32")]
        inputs[0].set_data_from_numpy(images)
        inputs[1].set_data_from_numpy(TARGETS)
        result = reader.infer(V2_NAMES[method], inputs, parameters=SETTINGS.get(method) or None)
        assert relative_error(result.as_numpy("attributions"), expected[method]) <= 1e-4, module.__name__


def test_v2_settings_may_be_tensors_one_per_image(served, images, tiny_export):
    """SmoothGrad's settings as V2 input tensors, each image its own: each answered as if sent alone."""
    http, model = served[1], tiny_export[2]
    values = {"images": (images, "FP32"), "targets": (TARGETS, "INT32"), "samples": (np.array([1, 3], np.int32), "INT32"),
              "noise": (np.array([0.2, 0.05], np.float32), "FP32"), "seed": (np.array([9, 2], np.int32), "INT32")}
    inputs = []
    for name, (value, datatype) in values.items():
        inputs.append(triton_http.InferInput(name, list(value.shape), datatype))
        inputs[-1].set_data_from_numpy(value)
    answer = http.infer("tiny-smoothgrad", inputs).as_numpy("attributions")
    for i, (samples, noise, seed) in enumerate([(1, 0.2, 9), (3, 0.05, 2)]):
        alone = attributions.smoothgrad(model, images[i:i + 1], TARGETS[i:i + 1], samples=samples, noise=noise,
                                        seed=seed)
        assert relative_error(answer[i:i + 1], alone) <= 1e-4


@pytest.mark.parametrize("method", ["smoothgrad", "grad_cam"])
def test_tf_serving_grpc_answers_a_method_by_its_signature(served, images, expected, method):
    stub = served[3]
    message = predict_pb2.PredictRequest()
    message.model_spec.name = "tiny"
    message.model_spec.signature_name = method
    inputs = dict(images=images, targets=TARGETS, **{k: np.array([v]) for k, v in SETTINGS.get(method, {}).items()})
    for key, value in inputs.items():
        dtype = tf.float32 if key in ("images", "noise") else tf.int32
        message.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    response = stub.Predict(message, timeout=60)
    assert relative_error(tf.make_ndarray(response.outputs["attributions"]), expected[method]) <= 1e-4


def test_a_baseline_is_an_image_or_one_number(served, images, tiny_export):
    url, model = served[0], tiny_export[2]
    grey = np.full((32, 32, 3), 0.5, np.float32)
    columns = {"images": images.tolist(), "targets": TARGETS.tolist(), "steps": 3, "baseline": grey.tolist()}
    status, answer = call(f"{url}/v1/models/tiny:explain", {"method": "integrated_gradients", "inputs": columns})
    assert status == 200, answer
    reference = attributions.integrated_gradients(model, images, TARGETS, baseline=grey, steps=3)
    assert relative_error(answer["outputs"]["attributions"], reference) <= 1e-4
    status, answer = call(f"{url}/v1/models/tiny:explain",
                          {"method": "integrated_gradients", "inputs": dict(columns, baseline=0.5)})
    assert status == 200 and relative_error(answer["outputs"]["attributions"], reference) <= 1e-4


@pytest.mark.parametrize("body, message", [
    ({"method": "smoothgrad", "instances": [{"images": "IMAGE", "targets": 1, "samples": 0}]},
     "samples must be an integer in [1, 200]"),
    ({"method": "smoothgrad", "instances": [{"images": "IMAGE", "targets": 1, "seed": -1}]},
     "seed must be an integer in [0, 2147483647]"),
    ({"method": "smoothgrad", "instances": [{"images": "IMAGE", "targets": 1, "noise": -0.5}]},
     "noise must be a number >= 0"),
    ({"method": "integrated_gradients", "instances": [{"images": "IMAGE", "targets": 1, "baseline": [[0.5]]}]},
     "baseline is an image of shape [32, 32, 3] or one number"),
    ({"method": "lime", "instances": [{"images": "IMAGE", "targets": 1}]},
     "method is one of adversarial, saliency, smoothgrad, integrated_gradients, grad_cam"),
    ({"method": "saliency", "signature_name": "explain", "instances": [{"images": "IMAGE", "targets": 1}]},
     "runs the 'explain' signature or the 'method' named"),
    ({"method": "smoothgrad", "instances": [{"images": "IMAGE", "targets": 1, "samples": 200}] * 13},
     "max_image_steps=2500 image-steps"),
])
def test_bad_settings_are_named(served, body, message):
    image = np.full((32, 32, 3), 0.5).tolist()
    body = dict(body, instances=[dict(row, images=image) for row in body["instances"]])
    status, answer = call(f"{served[0]}/v1/models/tiny:explain", body)
    assert status == 400 and message in answer["error"], answer


def test_predict_takes_no_method(served):
    status, answer = call(f"{served[0]}/v1/models/tiny:predict",
                          {"method": "saliency", "instances": [np.full((32, 32, 3), 0.5).tolist()]})
    assert status == 400 and "'method' chooses an explanation of the :explain verb" in answer["error"]


@pytest.mark.slow
def test_the_saved_model_backend_serves_the_methods(tiny_export, images, expected):
    with running_server(create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), backend="savedmodel")) as url:
        rows = [{"images": image.tolist(), "targets": int(t), **SETTINGS["smoothgrad"]}
                for image, t in zip(images, TARGETS)]
        status, answer = call(f"{url}/v1/models/tiny:explain", {"method": "smoothgrad", "instances": rows})
    assert status == 200, answer
    assert relative_error([row["attributions"] for row in answer["predictions"]], expected["smoothgrad"]) <= 1e-4


def test_concurrent_requests_for_a_method_run_in_batches_and_get_their_own_answers(tiny_export, images, expected,
                                                                                   monkeypatch):
    """Eight clients ask for SmoothGrad with their own settings at once: each answer is its own, in fewer runs."""
    import concurrent.futures

    from keras_robust.serving.plane import backends as serving_backends

    runs = []
    run = serving_backends.OnnxBackend.run

    def recorded(self, signature, inputs, run_options=None):
        runs.append((signature, len(inputs["images"])))
        return run(self, signature, inputs, run_options=run_options)

    monkeypatch.setattr(serving_backends.OnnxBackend, "run", recorded)
    requests = [{"signature_name": "smoothgrad", "instances": [
        {"images": images[i % 2].tolist(), "targets": int(TARGETS[i % 2]), **SETTINGS["smoothgrad"],
         "seed": SETTINGS["smoothgrad"]["seed"] + i // 2}]} for i in range(8)]
    with running_server(create_app(str(tiny_export[0]), limits=Limits(**{**TEST_LIMITS, "batch_window_ms": 200}))) \
            as url, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: call(f"{url}/v1/models/tiny:predict", body), requests))
    assert all(status == 200 for status, _ in answers), answers
    smoothgrad_runs = [rows for signature, rows in runs if signature == "smoothgrad"]
    assert sum(smoothgrad_runs) == 8 and len(smoothgrad_runs) < 8
    for i in (0, 1):  # the seed each of the first two asked for is the one `expected` used
        got = np.asarray(answers[i][1]["predictions"][0]["attributions"])
        assert relative_error(got, expected["smoothgrad"][i]) <= 1e-4
    first, third = (np.asarray(answers[i][1]["predictions"][0]["attributions"]) for i in (0, 2))
    assert relative_error(first, third) > 1e-3  # same image and target, another seed: its own draws
