"""Triton's model configuration and statistics extensions of the Open Inference Protocol.

Load generators written for Triton, perf_analyzer first, read a model's
configuration before sending anything and its statistics after each
measurement window; both are listed in the server metadata's `extensions`.

- `GET /v2/models/<name>[/versions/<v>]/config`: Triton's `ModelConfig` as
  JSON: the platform, the loaded versions, every input and output with its
  type and dimensions, `max_batch_size` (predict: the server's `max_batch`,
  the dimensions then leaving out the batch's; the explainer: 0, shapes
  whole), and `dynamic_batching` while predictions are batched.
- `GET /v2/models/<name>[/versions/<v>]/stats`, `GET /v2/models/stats`
  (every model): Triton's `{"model_stats": [...]}`, one entry per loaded
  version, counted by the data plane (`serving.plane.statistics`).

As everywhere in V2, `<name>-explainer` is the model's explain endpoint and
`<name>-saliency` (`-smoothgrad`, `-integrated-gradients`, `-grad-cam`) its
attribution methods, each a model of its own with its own configuration and
statistics. gRPC's
`ModelConfig` and `ModelStatistics` (`serving.open_inference.grpc_service`) answer the
same, as protos.
"""

from fastapi import Request
from fastapi.responses import JSONResponse

from keras_robust.serving.open_inference.names import v2_model, v2_name
from keras_robust.serving.open_inference.wire import PLATFORMS, SIGNATURE_DATATYPES
from keras_robust.serving.plane.clients import http_client
from keras_robust.serving.plane.errors import bad_request, received, show
from keras_robust.serving.plane.inputs import REQUIRED
from keras_robust.serving.transport.http_io import parse_json

def add_triton_routes(app, plane, bodies):
    """Adds the configuration, statistics and repository index routes over `plane` (a `DataPlane`),
    reading bodies with `bodies` (`serving.transport.http_io.Bodies`).

    Called before `add_v2_routes`, whose model metadata route would take
    `/v2/models/stats` for the metadata of a model named `stats`.
    """

    async def config(request: Request):
        return JSONResponse(model_config(
            plane, request.path_params["name"], request.path_params.get("version"), received(request)
        ))

    async def statistics(request: Request):
        return JSONResponse(model_statistics(
            plane, request.path_params.get("name", ""), request.path_params.get("version"), received(request)
        ))

    async def index(request: Request):
        async with bodies.read(request, http_client(request, plane.client_header)) as body:
            return JSONResponse(repository_index(plane, _ready_only(body)))

    app.add_api_route("/v2/repository/index", index, methods=["POST"])
    app.add_api_route("/v2/models/stats", statistics, methods=["GET"])
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix + "/config", config, methods=["GET"])
        app.add_api_route(prefix + "/stats", statistics, methods=["GET"])


def repository_index(plane, ready_only=False):
    """Triton's repository index: each V2 model (a served model, its explainer and attribution methods) per
    version, READY
    or UNAVAILABLE with the reason its version did not load; `ready_only` lists the READY ones only."""
    entries = []
    for served in plane.models.values():
        states = [(version, "READY", "") for version in sorted(served.backends)]
        states += [] if ready_only else [(v, "UNAVAILABLE", reason) for v, reason in sorted(served.failures.items())]
        for name in [v2_name(served, signature) for signature in served_signatures(served)]:
            entries += [{"name": name, "version": str(version), "state": state, "reason": reason}
                        for version, state, reason in states]
    return entries


def _ready_only(body):
    """The index request's `{"ready": bool}`; tritonclient sends no body."""
    if not body.strip():
        return False
    payload = parse_json(body)
    ready = payload.get("ready", False)
    if not isinstance(ready, bool) or set(payload) - {"ready"}:
        raise bad_request(f"A repository index request is {{\"ready\": true|false}} or empty. Received: {show(payload)}")
    return ready


def model_config(plane, name, version, received):
    """Triton's `ModelConfig` JSON of the V2 model `name`.

    Args:
        plane: The server's `DataPlane`.
        name: The model's V2 name (`<name>-explainer` for explanations).
        version: A version (a string), or None for the latest loaded.
        received: Where the name came from, for the 404 of an unknown one.
    """
    served, signature = v2_model(plane, name, received)
    backend = served.backend(version)
    defs = backend.signature_defs()[signature]
    spec = backend.card["signatures"][signature]
    # Triton's batch dimension is implicit only for tensors of at least one more
    # dimension; the explainer's targets, rho and steps are one value per example,
    # so its shapes are written whole, batch first, as Triton writes a model that
    # batches by itself (max_batch_size 0).
    batched = signature == "serving_default"
    config = {
        "name": name,
        "platform": PLATFORMS[backend.kind],
        "max_batch_size": plane.limits.max_batch if batched else 0,
        "version_policy": {"specific": {"versions": sorted(served.backends)}},
        "input": [{**_tensor_config(n, *defs["inputs"][n], batched), "optional": n not in REQUIRED}
                  for n in spec["inputs"]],
        "output": [_tensor_config(n, *defs["outputs"][n], batched) for n in spec["outputs"]],
        "model_transaction_policy": {"decoupled": False},
    }
    if batched and plane.limits.batch_window_ms > 0:
        # Triton's scheduler knob of the same meaning; only its presence tells a
        # client that concurrent requests may run as one batch.
        config["dynamic_batching"] = {"max_queue_delay_microseconds": round(plane.limits.batch_window_ms * 1000)}
    return config


def model_statistics(plane, name, version, received):
    """Triton's `{"model_stats": [...]}`: every loaded version of the V2 model `name`
    (or only `version`, a string), or of every model and explainer when `name` is empty."""
    if not name:
        if version:
            raise bad_request(f"Statistics of a version need the model's name. Received: version={version!r}, no name")
        entries = [(served, signature, backend) for served in plane.models.values()
                   for _, backend in sorted(served.backends.items()) for signature in backend.card["signatures"]]
    else:
        served, signature = v2_model(plane, name, received)
        backends = [served.backend(version)] if version else [b for _, b in sorted(served.backends.items())]
        entries = [(served, signature, backend) for backend in backends]
    return {"model_stats": [
        plane.statistics.of(backend.card, signature).triton_json(v2_name(served, signature), backend.card["version"])
        for served, signature, backend in entries
    ]}


def served_signatures(served):
    """The signatures of the model's versions (loaded or not: a failed version is listed UNAVAILABLE), predict
    first; each is a V2 model."""
    signatures = ["serving_default", "explain"]
    for backend in served.backends.values():
        signatures += [s for s in backend.card["signatures"] if s not in signatures]
    return signatures


def _tensor_config(name, dtype, shape, batched):
    """A `ModelInput`/`ModelOutput` of a tensor of metadata shape `[-1, ...]`.

    `batched` (`max_batch_size` > 0) leaves the batch dimension out, and
    writes an output of one value per example (`classes`) as Triton does,
    dims `[1]` reshaped to `[]`.
    """
    tensor = {"name": name, "data_type": "TYPE_" + SIGNATURE_DATATYPES[dtype],
              "dims": (list(shape[1:]) or [1]) if batched else list(shape)}
    if batched and len(shape) == 1:
        tensor["reshape"] = {"shape": []}
    return tensor
