"""TF Serving's REST routes and KServe V1's `:explain` verb (formats in `serving.tf_serving.rest_formats`).

Routes (`[/versions/<v>]` optional; without it, the latest loaded version):
- `GET  /v1/models/<name>[/versions/<v>]`: TF Serving's model status.
- `GET  /v1/models/<name>[/versions/<v>]/metadata`: signatures and the model card.
- `POST /v1/models/<name>[/versions/<v>]:predict`: TF Serving's predict,
  `signature_name` `serving_default` (default) or `explain` (docs/method.md §5).
- `POST /v1/models/<name>[/versions/<v>]:explain`: the explain signature.
- `GET  /v1/models`: the served models and limits (for the page).
"""

import dataclasses

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from keras_robust.serving.plane.clients import http_client
from keras_robust.serving.plane.errors import ServingError, received
from keras_robust.serving.tf_serving.rest_formats import format_response, parse_request
from keras_robust.serving.transport.http_io import encode_json

VERBS = ("predict", "explain")


def add_rest_routes(app, plane, bodies):
    """Adds TF Serving's REST routes over `plane` (a `DataPlane`), reading bodies
    with `bodies` (`serving.transport.http_io.Bodies`)."""

    def model(request):
        last = request.path_params.get("version", request.path_params["name"])
        if ":" in last:  # a GET of a verb
            raise _verb_error(last.split(":", 1)[1], request)
        return plane.model(request.path_params["name"], received(request))

    async def infer(request, verb):
        backend = model(request).backend(request.path_params.get("version"))
        client = http_client(request, plane.client_header)
        async with plane.admission(client):
            async with bodies.read(request, client) as body:
                return await plane.infer(
                    backend,
                    lambda: parse_request(body, backend.card, plane.limits, verb),
                    lambda response: Response(encode_json(format_response(response)), media_type="application/json"),
                    client=client,
                )

    async def status(request: Request):
        return JSONResponse(model(request).status(request.path_params.get("version")))

    async def unknown_verb(request: Request):
        raise _verb_error(request.path_params["verb"], request)

    async def metadata(request: Request):
        return JSONResponse(model(request).metadata(request.path_params.get("version")))

    async def predict(request: Request):
        return await infer(request, "predict")

    async def explain(request: Request):
        return await infer(request, "explain")

    async def listing(_: Request):
        return JSONResponse({
            "models": [served.describe() for served in plane.models.values()],
            "limits": dataclasses.asdict(plane.limits),
        })

    app.add_api_route("/v1/models", listing, methods=["GET"])
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        app.add_api_route(prefix + ":predict", predict, methods=["POST"])
        app.add_api_route(prefix + ":explain", explain, methods=["POST"])
        app.add_api_route(prefix + ":{verb}", unknown_verb, methods=["POST"])  # after the verbs served
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        app.add_api_route(prefix, status, methods=["GET"])


def _verb_error(verb, request):
    """The 405 of a verb asked with GET, or the 404 of a verb not served."""
    if verb in VERBS:
        return ServingError(405, f":{verb} takes POST. Received: {received(request)}", allow="POST")
    return ServingError(404, f"Unknown verb {verb[:40]!r}; verbs: {', '.join(VERBS)}. Received: {received(request)}")
