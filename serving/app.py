"""The HTTP service: TF Serving's REST API, KServe's `:explain` verb, a browser page.

Routes (`[/versions/<v>]` optional; without it, the latest loaded version):
- `GET  /v1/models/<name>[/versions/<v>]`: TF Serving's model status.
- `GET  /v1/models/<name>[/versions/<v>]/metadata`: signatures and the model card.
- `POST /v1/models/<name>[/versions/<v>]:predict`: TF Serving's predict,
  `signature_name` `serving_default` (default) or `explain` (docs/method.md §5).
- `POST /v1/models/<name>[/versions/<v>]:explain`: the explain signature.
- `GET  /v1/models`: the served models and limits (for the page).
- `GET  /`: the page (upload an image, see the prediction and explanations).

The Open Inference Protocol (V2; `serving.v2_routes`, formats in `serving.open_inference`):
- `GET  /v2/health/live`, `/v2/health/ready`; `GET /v2`: server metadata.
- `GET  /v2/models/<name>[/versions/<v>]`: model metadata; `.../ready`.
- `POST /v2/models/<name>[/versions/<v>]/infer`: predict; `.../explain`: explain.
- The explain endpoint is also the model `<name>-explainer`, so clients that
  know only `/infer` can call it.

With `grpc_port`, TF Serving's gRPC `PredictionService` too (`serving.grpc_service`).

Predict requests that arrive within `batch_window_ms` of each other run as
one batch (`serving.batching`).
"""

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from keras_robust.serving.admission import PATH_ECHO_CHARS, Gate, InflightBytes, Limits, received
from keras_robust.serving.batching import PredictBatcher
from keras_robust.serving.registry import load_models
from keras_robust.serving.rest_requests import ServingError, encode_json, format_response, parse_request
from keras_robust.serving.v2_routes import add_v2_routes, served_model

logger = logging.getLogger("keras_robust.serving")

STATIC = os.path.join(os.path.dirname(__file__), "static")
VERBS = ("predict", "explain")


def create_app(export_dir, backend="onnx", limits=None, device="cpu", grpc_port=None, grpc_host="127.0.0.1"):
    """The FastAPI app serving every model exported under `export_dir`.

    Args:
        export_dir: The `out_dir` of `keras_robust.export.export_model` (one
            folder per model), or one model's folder.
        backend: `"onnx"` (onnxruntime, default) or `"savedmodel"`.
        limits: A `Limits`; None for the defaults.
        device: `"cpu"` or `"cuda"` (see `load_backend`).
        grpc_port: Also serve TF Serving's gRPC `PredictionService` on this
            port (0: any free one, then `app.state.grpc_port`) while the app
            runs; None (default) for HTTP only.
        grpc_host: The gRPC interface.

    Returns:
        A `fastapi.FastAPI` app; every version is loaded before it returns.
    """
    limits = limits or Limits()
    models = load_models(export_dir, backend, device)
    _check_default_steps(models, limits)
    gate = Gate(limits)
    batcher = PredictBatcher(gate, limits.batch_window_ms / 1000, limits.max_batch_size, gate.timed_out)
    inflight = InflightBytes(limits)

    @contextlib.asynccontextmanager
    async def lifespan(app_):
        grpc_server = None
        if grpc_port is not None:
            from keras_robust.serving.grpc_service import start_grpc_server

            grpc_server, app_.state.grpc_port = await start_grpc_server(grpc_port, grpc_host, models, infer, limits)
        yield
        if grpc_server is not None:
            await grpc_server.stop(grace=1)
        gate.close()

    # Only the documented routes: no generated OpenAPI pages.
    app = FastAPI(title="keras-robust serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def model(request):
        name = request.path_params["name"]
        if ":" in name:  # a verb the POST routes did not take, or a GET of a POST verb
            name, verb = name.split(":", 1)
            if verb in VERBS:
                raise ServingError(405, f":{verb} takes POST. Received: {received(request)}")
            raise ServingError(404, f"Unknown verb {verb[:40]!r}; verbs: {', '.join(VERBS)}. "
                                    f"Received: {received(request)}")
        return served_model(models, name, request)

    async def infer(backend_, parse, encode, deadline):
        """Parses, runs and encodes one request by `deadline`, whatever its protocol.

        `parse()` gives `(signature, inputs, details)` and `encode(signature,
        outputs, details)` the answer; both run in the gate's threads, as they
        cost CPU.
        """
        signature, inputs, details = await gate.run(lambda _: parse(), deadline)
        if signature == "serving_default":
            outputs = await batcher.predict(backend_, inputs["images"], deadline)
        else:
            outputs = await gate.run(functools.partial(_explain, backend_, inputs), deadline)
        return await gate.run(lambda _: encode(signature, outputs, details), deadline)

    async def run(request, backend_, parse, encode):
        """Reads an HTTP body, then `infer`s with `parse(body)`, all within timeout_s."""
        with inflight.reserve(request):
            try:
                body = await asyncio.wait_for(_read_body(request, limits.max_request_bytes), limits.timeout_s)
            except asyncio.TimeoutError:
                raise ServingError(
                    408, f"The request body did not arrive within timeout_s={limits.timeout_s:g} s. "
                         f"Received: {received(request)} with a body still incomplete"
                ) from None
            deadline = asyncio.get_running_loop().time() + limits.timeout_s
            return await infer(backend_, lambda: parse(body), encode, deadline)

    async def infer_v1(request, verb):
        backend_ = model(request).backend(request.path_params.get("version"))

        def parse(body):
            return parse_request(body, backend_.card, limits, verb)

        def encode(signature, outputs, columnar):
            names = backend_.card["signatures"][signature]["outputs"]
            return Response(encode_json(format_response(outputs, names, columnar)), media_type="application/json")

        return await run(request, backend_, parse, encode)

    async def status(request: Request):
        served = model(request)
        if request.method == "POST":
            raise ServingError(405, f"POST needs a verb, :predict or :explain. Received: {received(request)}")
        return JSONResponse(served.status(request.path_params.get("version")))

    async def metadata(request: Request):
        return JSONResponse(model(request).metadata(request.path_params.get("version")))

    async def predict(request: Request):
        return await infer_v1(request, "predict")

    async def explain(request: Request):
        return await infer_v1(request, "explain")

    async def listing(_: Request):
        return JSONResponse({
            "models": [served.describe() for served in models.values()],
            "limits": dataclasses.asdict(limits),
        })

    async def page():
        return FileResponse(os.path.join(STATIC, "index.html"))

    app.add_api_route("/v1/models", listing, methods=["GET"])
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}"):
        app.add_api_route(prefix + ":predict", predict, methods=["POST"])
        app.add_api_route(prefix + ":explain", explain, methods=["POST"])
        app.add_api_route(prefix + "/metadata", metadata, methods=["GET"])
        # After the verbs, and with POST, so that an unknown verb is a 404 and a
        # missing one a 405, both in JSON.
        app.add_api_route(prefix, status, methods=["GET", "POST"])
    add_v2_routes(app, models, limits, run)
    app.add_api_route("/", page, methods=["GET"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    return app


def _explain(backend, inputs, cancellation):
    return backend.explain(**inputs, run_options=cancellation.run_options)


def serve(export_dir, host="127.0.0.1", port=8501, backend="onnx", device="cpu", log_level="info",
          grpc_port=None, **limits):
    """Serves `export_dir` with uvicorn until interrupted (TF Serving's REST port, 8501).

    `grpc_port` adds TF Serving's gRPC API on that port (TF Serving's is 8500).
    `limits` are `Limits` fields, e.g. `max_steps=500, timeout_s=120`.
    """
    app = create_app(export_dir, backend=backend, limits=Limits(**limits), device=device,
                     grpc_port=grpc_port, grpc_host=host)
    uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level)).run()


def server_config(app, **options):
    """uvicorn's configuration for `app`, with errors below the app answered in JSON too.

    The event loop is asyncio's own, which the gRPC server shares (grpc.aio
    is built for it), not uvloop, which uvicorn would pick when installed.
    """
    return uvicorn.Config(app, http=JsonErrorH11Protocol, loop="asyncio", **options)


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, answering unparsable requests (a bad Content-Length or
    chunk header) with TF Serving's `{"error": ...}` instead of plain text."""

    def send_400_response(self, msg):
        body = json.dumps({"error": f"{msg[:PATH_ECHO_CHARS]} Received: a malformed HTTP request"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


async def _read_body(request, limit):
    """The body, refused (413) as soon as it is known to exceed `limit` bytes."""
    too_large = f"A request body has at most max_request_bytes={limit} bytes. Received: "
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ServingError(413, too_large + f"Content-Length {length}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():  # chunked bodies have no Content-Length
            size += len(chunk)
            if size > limit:
                raise ServingError(413, too_large + f"over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except ClientDisconnect:
        # An aborted upload: nobody reads the answer, so no traceback in the log; the
        # chunks are dropped now rather than when the exception's frames are collected.
        logger.info("Client closed the connection after %d body bytes: %s", size, received(request))
        raise ServingError(400, f"The client closed the connection after {size} body bytes") from None
    finally:
        chunks.clear()


def _check_default_steps(models, limits):
    """A request that leaves out steps must not be refused by the step cap."""
    for served in models.values():
        for backend in served.backends.values():
            steps = backend.card["explain_defaults"]["steps"]
            for name in ("max_steps", "max_image_steps"):
                if steps > getattr(limits, name):
                    raise ValueError(
                        f"Version {backend.card['version']} of {served.name!r} explains with {steps} "
                        f"steps by default, above {name}. Received: {name}={getattr(limits, name)}"
                    )


def _add_error_handlers(app):
    """Every error is TF Serving's `{"error": "..."}`, unexpected ones a logged 500."""

    async def serving_error(_, error):
        return JSONResponse({"error": error.message}, error.status)

    async def http_error(request, error):  # unknown routes (404), wrong methods (405)
        return JSONResponse(
            {"error": f"{error.detail}. Received: {received(request)}"},
            error.status_code,
            headers=getattr(error, "headers", None),
        )

    async def unexpected(request, call_next):
        try:
            return await call_next(request)
        except Exception:
            logger.exception("Unexpected error answering %s %s", request.method, request.url.path)
            return JSONResponse({"error": f"Internal server error (logged). Received: {received(request)}"}, 500)

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(HTTPException, http_error)
    app.middleware("http")(unexpected)
