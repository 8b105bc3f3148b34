"""The Open Inference Protocol's routes (the formats are `serving.open_inference`)."""

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from keras_robust import __version__
from keras_robust.serving import open_inference
from keras_robust.serving.admission import received
from keras_robust.serving.rest_requests import ServingError

EXPLAINER_SUFFIX = "-explainer"
V2_EXTENSIONS = ("binary_tensor_data", "parameters", "explain")


def add_v2_routes(app, models, limits, run):
    """Adds the Open Inference Protocol's routes; `run` is `create_app`'s inference path."""
    check_explainer_names(models)

    def endpoint(request, verb=None):
        """`(served model, signature, name in the URL)`; `<name>-explainer` is explain."""
        name = request.path_params["name"]
        if name not in models and name.endswith(EXPLAINER_SUFFIX) and verb != "explain":
            return served_model(models, name[:-len(EXPLAINER_SUFFIX)], request), "explain", name
        signature = "explain" if verb == "explain" else "serving_default"
        return served_model(models, name, request), signature, name

    async def live(_: Request):
        return JSONResponse({"live": True})

    async def ready(_: Request):
        return JSONResponse({"ready": any(served.backends for served in models.values())})

    async def server_metadata(_: Request):
        return JSONResponse({"name": "keras-robust", "version": __version__, "extensions": list(V2_EXTENSIONS)})

    async def model_metadata(request: Request):
        served, signature, name = endpoint(request)
        backend_ = served.backend(request.path_params.get("version"))
        platform = {"onnx": "onnxruntime_onnx", "savedmodel": "tensorflow_savedmodel"}[backend_.kind]
        return JSONResponse(open_inference.model_metadata(
            name, sorted(served.backends), platform, backend_.signature_defs()[signature],
            backend_.card["signatures"][signature],
        ))

    async def model_ready(request: Request):
        served, _, name = endpoint(request)
        served.backend(request.path_params.get("version"))  # 404 or 503 unless loaded
        return JSONResponse({"name": name, "ready": True})

    async def infer(request: Request, verb=None):
        served, signature, name = endpoint(request, verb)
        backend_ = served.backend(request.path_params.get("version"))
        header_length = request.headers.get(open_inference.HEADER_LENGTH)

        def parse(body):
            inputs, requested, request_id = open_inference.parse_infer_request(
                body, header_length, backend_.card, limits, signature
            )
            return signature, inputs, (requested, request_id)

        def encode(_, outputs, details):
            requested, request_id = details
            body, header = open_inference.encode_infer_response(
                name, backend_.card["version"], outputs, requested, request_id
            )
            if header is None:
                return Response(body, media_type="application/json")
            return Response(body, media_type="application/octet-stream",
                            headers={open_inference.HEADER_LENGTH: str(header)})

        return await run(request, backend_, parse, encode)

    async def explain(request: Request):
        return await infer(request, "explain")

    app.add_api_route("/v2/health/live", live, methods=["GET"])
    app.add_api_route("/v2/health/ready", ready, methods=["GET"])
    app.add_api_route("/v2", server_metadata, methods=["GET"])
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_api_route(prefix, model_metadata, methods=["GET"])
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"])
        app.add_api_route(prefix + "/infer", infer, methods=["POST"])
        app.add_api_route(prefix + "/explain", explain, methods=["POST"])


def served_model(models, name, request):
    if name not in models:
        raise ServingError(
            404, f"No model {name[:80]!r} is served; served: {', '.join(models)}. Received: {received(request)}"
        )
    return models[name]


def check_explainer_names(models):
    """`<name>-explainer` is the explain endpoint of `<name>`; no model may take that name."""
    for name in models:
        if name.endswith(EXPLAINER_SUFFIX) and name[:-len(EXPLAINER_SUFFIX)] in models:
            raise ValueError(
                f"Model {name!r} would hide the explain endpoint of model {name[:-len(EXPLAINER_SUFFIX)]!r} "
                f"over the Open Inference Protocol; export it under another name. Received: {name!r}"
            )
