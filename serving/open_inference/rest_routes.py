"""The Open Inference Protocol's routes (the formats are `serving.open_inference.formats`).

- `GET  /v2/health/live`, `/v2/health/ready`; `GET /v2`: server metadata.
- `GET  /v2/models/<name>[/versions/<v>]`: model metadata; `.../ready`.
- `POST /v2/models/<name>[/versions/<v>]/infer`: predict; `.../explain`: explain.
- The explain endpoint is also the model `<name>-explainer`, so clients that
  know only `/infer` can call it.
"""

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from keras_robust import __version__
from keras_robust.serving.open_inference import formats
from keras_robust.serving.open_inference.names import check_explainer_names, v2_model
from keras_robust.serving.open_inference.wire import HEADER_LENGTH, PLATFORMS, V2_EXTENSIONS
from keras_robust.serving.plane.clients import http_client
from keras_robust.serving.plane.errors import received


def add_v2_routes(app, plane, bodies):
    """Adds the Open Inference Protocol's routes over `plane` (a `DataPlane`), reading
    bodies with `bodies` (`serving.transport.http_io.Bodies`)."""
    check_explainer_names(plane.models)

    def endpoint(request, verb=None):
        """`(served model, signature, name in the URL)`; `<name>-explainer` is explain."""
        name = request.path_params["name"]
        if verb == "explain":
            return plane.model(name, received(request)), "explain", name
        return (*v2_model(plane, name, received(request)), name)

    async def live(_: Request):
        return JSONResponse({"live": True})

    async def ready(_: Request):
        return JSONResponse({"ready": any(served.backends for served in plane.models.values())})

    async def server_metadata(_: Request):
        return JSONResponse({"name": "keras-robust", "version": __version__, "extensions": list(V2_EXTENSIONS)})

    async def model_metadata(request: Request):
        served, signature, name = endpoint(request)
        backend = served.backend(request.path_params.get("version"))
        return JSONResponse(formats.model_metadata(
            name, sorted(served.backends), PLATFORMS[backend.kind], backend.signature_defs()[signature],
            backend.card["signatures"][signature],
        ))

    async def model_ready(request: Request):
        served, _, name = endpoint(request)
        served.backend(request.path_params.get("version"))  # 404 or 503 unless loaded
        return JSONResponse({"name": name, "ready": True})

    async def answer(request, verb):
        served, signature, name = endpoint(request, verb)
        backend = served.backend(request.path_params.get("version"))
        header_length = request.headers.get(HEADER_LENGTH)
        client = http_client(request, plane.client_header)
        async with plane.admission(client):
            async with bodies.read(request, client) as body:
                return await plane.infer(
                    backend,
                    lambda: formats.parse_infer_request(
                        body, header_length, backend.card, plane.limits, signature, name
                    ),
                    lambda response: _answer(*formats.encode_infer_response(name, response)),
                    client=client,
                )

    # A route handler's only argument is the request: FastAPI would fill any other
    # from the query string, and `?verb=explain` must not turn a prediction into an explanation.
    async def infer(request: Request):
        return await answer(request, None)

    async def explain(request: Request):
        return await answer(request, "explain")

    app.add_api_route("/v2/health/live", live, methods=["GET"])
    app.add_api_route("/v2/health/ready", ready, methods=["GET"])
    app.add_api_route("/v2", server_metadata, methods=["GET"])
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_metadata, methods=["GET"])
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"])
        app.add_api_route(prefix + "/infer", infer, methods=["POST"])
        app.add_api_route(prefix + "/explain", explain, methods=["POST"])


def _answer(body, header_length):
    """The HTTP response of an encoded answer: JSON alone, or a JSON header and binary outputs."""
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(header_length)})

