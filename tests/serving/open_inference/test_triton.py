"""Triton's model configuration and statistics extensions, as perf_analyzer reads them.

perf_analyzer asks for a model's metadata, then its configuration, then the
server's extensions, and reads the statistics around every measurement
window. These tests hold both answers, over HTTP and gRPC (Triton's own
clients), to the fields it uses: inputs and outputs named as in the
metadata, `max_batch_size` > 0 (predict) only where every input's metadata
shape leads with -1 and has more dimensions, `dynamic_batching` only where
requests are batched, no `sequence_batching`, a `decoupled` false, and
statistics whose counts rise with the requests sent, under a version that
parses as an integer.
"""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from keras_robust.serving import Limits, create_app
from keras_robust.serving.open_inference.triton import model_config
from keras_robust.serving.plane.data_plane import DataPlane
from keras_robust.serving.plane.registry import load_models
from tests.helpers import TEST_LIMITS, call, running_server

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")
IMAGES = np.full((2, 32, 32, 3), 0.5, np.float32)


@pytest.fixture(scope="module")
def served(tiny_export):
    """`(base URL, V2 HTTP client, V2 gRPC client)` of one app serving both protocols."""
    app = create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS), grpc_port=0)
    with running_server(app) as url:
        http = triton_http.InferenceServerClient(url.removeprefix("http://"))
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        yield url, http, client
        client.close()
        http.close()


def test_both_extensions_are_listed(served):
    _, http, client = served
    for extensions in (http.get_server_metadata()["extensions"], client.get_server_metadata().extensions):
        assert {"model_configuration", "statistics"} <= set(extensions)


@pytest.mark.parametrize("name, batched", [("tiny", True), ("tiny-explainer", False)])
def test_configuration_has_what_perf_analyzer_reads(served, name, batched):
    _, http, client = served
    config, metadata = http.get_model_config(name), http.get_model_metadata(name)
    assert config["name"] == name and config["platform"] == metadata["platform"] != "ensemble"
    # With max_batch_size > 0, perf_analyzer drops the first metadata dimension (the
    # batch's) and refuses an input left without any: the explainer's targets are [-1].
    assert config["max_batch_size"] == (TEST_LIMITS["max_batch"] if batched else 0)
    for kind, tensors in (("inputs", config["input"]), ("outputs", config["output"])):
        assert [t["name"] for t in tensors] == [t["name"] for t in metadata[kind]]
        for tensor, described in zip(tensors, metadata[kind]):
            assert described["shape"][0] == -1
            assert tensor["data_type"] == "TYPE_" + described["datatype"]
            if not batched:
                assert tensor["dims"] == described["shape"] and "reshape" not in tensor
            elif len(described["shape"]) > 1 or kind == "outputs":
                assert tensor["dims"] == (described["shape"][1:] or [1])
                assert tensor.get("reshape") == ({"shape": []} if len(described["shape"]) == 1 else None)
            else:
                pytest.fail(f"{tensor['name']}: an input perf_analyzer cannot shape")
    assert [(t["name"], t["optional"]) for t in config["input"]][1:] == (
        [] if name == "tiny" else [("targets", False), ("rho", True), ("steps", True)])
    assert ("dynamic_batching" in config) == batched and "sequence_batching" not in config
    assert config["model_transaction_policy"] == {"decoupled": False}
    assert config["version_policy"] == {"specific": {"versions": [1]}}
    # The gRPC answer is the same configuration.
    assert client.get_model_config(name, "1").config == json_format.ParseDict(config, model_config_pb2.ModelConfig())


def test_configuration_without_batching_has_no_dynamic_batching(tiny_export):
    plane = DataPlane(load_models(str(tiny_export[0])), Limits(batch_window_ms=0))
    try:
        config = model_config(plane, "tiny", None, "test")
    finally:
        plane.close()
    assert "dynamic_batching" not in config and config["max_batch_size"] == Limits().max_batch


def statistics(served, name):
    """`(HTTP, gRPC)` statistics of the model `name`, one entry each."""
    _, http, client = served
    over_http = http.get_inference_statistics(name)["model_stats"]
    over_grpc = client.get_inference_statistics(name).model_stats
    assert len(over_http) == len(over_grpc) == 1
    return over_http[0], over_grpc[0]


def test_statistics_count_every_protocols_requests(served):
    _, http, client = served
    before = {name: statistics(served, name)[0] for name in ("tiny", "tiny-explainer")}
    for _ in range(2):
        client.infer("tiny", [triton_grpc.InferInput("images", [2, 32, 32, 3], "FP32").set_data_from_numpy(IMAGES)])
    http.infer("tiny", [triton_http.InferInput("images", [2, 32, 32, 3], "FP32").set_data_from_numpy(IMAGES)])
    targets = triton_grpc.InferInput("targets", [2], "INT32").set_data_from_numpy(np.int32([1, 2]))
    images = triton_grpc.InferInput("images", [2, 32, 32, 3], "FP32").set_data_from_numpy(IMAGES)
    client.infer("tiny-explainer", [images, targets], parameters={"steps": 3})
    for name, requests in (("tiny", 3), ("tiny-explainer", 1)):
        after, over_grpc = statistics(served, name)
        assert after["name"] == name and int(after["version"]) == 1
        assert set(after["inference_stats"]) >= set(DURATIONS)
        change = {key: after["inference_stats"][key]["count"] - before[name]["inference_stats"][key]["count"]
                  for key in DURATIONS}
        assert change == {**dict.fromkeys(DURATIONS, requests), "fail": 0, "cache_hit": 0, "cache_miss": 0}
        assert after["inference_count"] - before[name]["inference_count"] == 2 * requests
        assert after["execution_count"] - before[name]["execution_count"] == requests
        phases = sum(after["inference_stats"][key]["ns"] for key in DURATIONS[2:6])
        assert 0 < phases <= after["inference_stats"]["success"]["ns"]
        assert over_grpc == json_format.ParseDict(after, service_pb2.ModelStatistics())


def test_failures_count_once_a_request_reached_the_model(served):
    _, http, _ = served
    before = statistics(served, "tiny")[0]["inference_stats"]
    too_bright = triton_http.InferInput("images", [2, 32, 32, 3], "FP32").set_data_from_numpy(IMAGES * 3)
    with pytest.raises(InferenceServerException, match=r"pixel values in \[0, 1\]"):
        http.infer("tiny", [too_bright])  # decoded, then refused by the checks: a failure of the model
    unknown = triton_http.InferInput("targets", [1], "INT32").set_data_from_numpy(np.int32([1]))
    with pytest.raises(InferenceServerException, match="this endpoint's inputs are images"):
        http.infer("tiny", [unknown])  # never decoded: it did not reach the model
    after = statistics(served, "tiny")[0]["inference_stats"]
    assert after["fail"]["count"] == before["fail"]["count"] + 1 and after["fail"]["ns"] > before["fail"]["ns"]
    assert after["success"] == before["success"]


def test_all_models_statistics_route_is_not_a_models_metadata(served):
    url, http, client = served
    status, answer = call(f"{url}/v2/models/stats")
    names = ["tiny", "tiny-explainer", "tiny-saliency", "tiny-smoothgrad", "tiny-integrated-gradients", "tiny-grad-cam"]
    assert status == 200 and [(s["name"], s["version"]) for s in answer["model_stats"]] == [(n, "1") for n in names]
    assert [s.name for s in client.get_inference_statistics().model_stats] == names
    assert call(f"{url}/v2/models/tiny/versions/1/stats")[1] == http.get_inference_statistics("tiny", "1")


@pytest.mark.parametrize("route, status, message", [
    ("nothing/config", 404, "No model 'nothing' is served"),
    ("tiny/versions/2/config", 404, "has no version 2"),
    ("nothing/stats", 404, "No model 'nothing' is served"),
    ("tiny-explainer/versions/2/stats", 404, "has no version 2"),
])
def test_unknown_models_and_versions_are_named(served, route, status, message):
    answer = call(f"{served[0]}/v2/models/{route}")
    assert answer[0] == status and message in answer[1]["error"], answer


def test_grpc_errors_carry_status_codes(served):
    _, _, client = served
    with pytest.raises(InferenceServerException, match="No model 'nothing'") as error:
        client.get_model_config("nothing")
    assert error.value.status() == str(grpc.StatusCode.NOT_FOUND)
    with pytest.raises(InferenceServerException, match="need the model's name") as error:
        client.get_inference_statistics("", "1")
    assert error.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)


def test_tritonclient_reads_the_repository_index_over_http_and_grpc(served):
    url, http, client = served
    for reader in (http, client):
        index = reader.get_model_repository_index()
        entries = index if isinstance(index, list) else json_format.MessageToDict(index)["models"]
        assert [(e["name"], e["version"], e["state"]) for e in entries] == [
            (name, "1", "READY") for name in ("tiny", "tiny-explainer", "tiny-saliency", "tiny-smoothgrad",
                                              "tiny-integrated-gradients", "tiny-grad-cam")], type(reader)
    assert call(f"{url}/v2/repository/index", {"ready": True})[1][0]["state"] == "READY"
    status, answer = call(f"{url}/v2/repository/index", {"ready": "yes"})
    assert status == 400 and "Received: {'ready': 'yes'}" in answer["error"]
