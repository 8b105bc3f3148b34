"""The HTTP service: TF Serving's REST API, KServe's `:explain` verb, a browser page.

Routes (`[/versions/<v>]` optional; without it, the latest loaded version):
- `GET  /v1/models/<name>[/versions/<v>]`: TF Serving's model status.
- `GET  /v1/models/<name>[/versions/<v>]/metadata`: signatures and the model card.
- `POST /v1/models/<name>[/versions/<v>]:predict`: TF Serving's predict,
  `signature_name` `serving_default` (default) or `explain` (docs/method.md §5).
- `POST /v1/models/<name>[/versions/<v>]:explain`: the explain signature.
- `GET  /v1/models`: the served models and limits (for the page).
- `GET  /`: the page (upload an image, see the prediction and explanations).

The Open Inference Protocol (V2; `serving.open_inference`):
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
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import os

import h11
import onnxruntime
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from keras_robust import __version__
from keras_robust.serving import open_inference
from keras_robust.serving.batching import PredictBatcher
from keras_robust.serving.registry import load_models
from keras_robust.serving.rest_requests import ServingError, encode_json, format_response, parse_request

logger = logging.getLogger("keras_robust.serving")

STATIC = os.path.join(os.path.dirname(__file__), "static")
VERBS = ("predict", "explain")
EXPLAINER_SUFFIX = "-explainer"
V2_EXTENSIONS = ("binary_tensor_data", "parameters", "explain")
# Error messages quote the request's path up to this many characters, so a huge
# URL cannot make a huge answer.
PATH_ECHO_CHARS = 200


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, and how much runs at once.

    Attributes:
        max_request_bytes: Largest request body (larger: 413).
        max_image_bytes: Largest encoded (`{"b64": ...}`) image (larger: 413).
        max_image_pixels: Most pixels of an encoded image before resizing,
            checked before decoding (more: 413).
        max_batch: Most examples in one request (more: 400).
        max_steps: Most explanation steps N per example (more: 400).
        max_image_steps: Most explanation work per request, the sum of its
            examples' steps (more: 400). The default lets a full batch of 64
            take the default 35 steps, and keeps `max_concurrent` such
            requests to a ResNet-44 within `timeout_s` on 2 CPU cores (about
            200 image-steps per second with ONNX Runtime, docs/serving.md).
        timeout_s: Seconds a request may wait and run (longer: 504).
        max_concurrent: Inferences running at once, all sharing one loaded
            model per version.
        max_queue: Requests waiting for a free slot (more: 503).
        max_inflight_bytes: Request bytes being received or parsed at once,
            counted by Content-Length (else `max_request_bytes`) from the
            moment a body starts to arrive until its answer is ready (more:
            503). Bounds the memory of large requests, and how long their
            parsing can keep Python busy. At least `max_request_bytes`.
        batch_window_ms: How long a predict request waits for others to
            run with it as one batch (TF Serving's `batch_timeout_micros`);
            0 runs each request alone. Answers are the same either way.
        max_batch_size: Most images in one batched predict run.
    """

    max_request_bytes: int = 32 * 2**20
    max_image_bytes: int = 8 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_batch: int = 64
    max_steps: int = 200
    max_image_steps: int = 2500
    timeout_s: float = 60.0
    max_concurrent: int = 4
    max_queue: int = 32
    max_inflight_bytes: int = 64 * 2**20
    batch_window_ms: float = 2.0
    max_batch_size: int = 64

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "timeout_s":
                valid, wanted = isinstance(value, (int, float)) and value > 0, "a number > 0"
            elif field.name == "batch_window_ms":
                valid, wanted = isinstance(value, (int, float)) and 0 <= value <= 1000, "a number in [0, 1000]"
            else:
                lowest = 0 if field.name == "max_queue" else 1
                valid, wanted = isinstance(value, int) and value >= lowest, f"an integer >= {lowest}"
            if isinstance(value, bool) or not valid:
                raise ValueError(f"`{field.name}` must be {wanted}. Received: {field.name}={value!r}")
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(
                "`max_inflight_bytes` must be at least max_request_bytes, or a request of the allowed "
                f"size could never be taken. Received: max_inflight_bytes={self.max_inflight_bytes}"
            )


class Gate:
    """Bounded concurrency: `max_concurrent` inferences run, `max_queue` wait.

    A timed-out request answers 504 at once and its inference is cancelled:
    `function` receives a `Cancellation`, which stops an onnxruntime run
    within a few operators. Work that cannot be stopped (the SavedModel
    backend) keeps its slot until it really ends, so timed-out work never
    piles up beyond `max_concurrent`.
    """

    def __init__(self, limits):
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._admitted = 0  # waiting or running; only the event loop's thread touches it
        self._executor = concurrent.futures.ThreadPoolExecutor(
            limits.max_concurrent, thread_name_prefix="keras-robust-serving"
        )

    async def run(self, function, deadline):
        """Runs `function(cancellation)` in a worker thread by `deadline` (the event
        loop's clock); 503 when full, 504 past the deadline."""
        capacity = self._limits.max_concurrent + self._limits.max_queue
        if self._admitted >= capacity:
            raise ServingError(
                503, "The server is busy; retry later. Received: a request beyond "
                     f"max_concurrent + max_queue = {capacity} running or waiting"
            )
        self._admitted += 1
        cancellation = Cancellation()
        remaining = max(deadline - asyncio.get_running_loop().time(), 0)
        try:
            return await asyncio.wait_for(self._run(functools.partial(function, cancellation)), remaining)
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on
            cancellation.cancel()
            raise self.timed_out() from None

    def timed_out(self):
        """The 504 of a request past its deadline."""
        return ServingError(
            504, f"The request took longer than timeout_s={self._limits.timeout_s:g} s; "
                 "send fewer images or steps. Received: a request still waiting or running"
        )

    async def _run(self, function):
        acquired = False
        try:
            await self._slots.acquire()
            acquired = True
            future = asyncio.get_running_loop().run_in_executor(self._executor, function)
        except BaseException:  # timed out while waiting, or shutting down: no inference started
            if acquired:
                self._slots.release()
            self._admitted -= 1
            raise
        future.add_done_callback(self._release)
        return await asyncio.shield(future)  # a timeout must not cancel the running inference

    def _release(self, future):
        self._slots.release()
        self._admitted -= 1
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled run's error has no one left to answer

    def close(self):
        self._executor.shutdown(wait=False, cancel_futures=True)


class InflightBytes:
    """Counts the request bytes being received or parsed; refuses (503) beyond the limit.

    Used only from the event loop's thread, so a plain counter is enough.
    """

    def __init__(self, limits):
        self._limits = limits
        self._bytes = 0

    @contextlib.contextmanager
    def reserve(self, request):
        length = request.headers.get("content-length", "")
        size = min(int(length), self._limits.max_request_bytes) if length.isdigit() else self._limits.max_request_bytes
        if self._bytes + size > self._limits.max_inflight_bytes:
            raise ServingError(
                503, f"The server is receiving or parsing {self._bytes} request bytes, and this request "
                     f"would pass max_inflight_bytes={self._limits.max_inflight_bytes}; retry later. "
                     f"Received: {_received(request)} of {size} bytes"
            )
        self._bytes += size
        try:
            yield
        finally:
            self._bytes -= size


class Cancellation:
    """Lets the event loop stop a worker's onnxruntime run (`RunOptions.terminate`)."""

    def __init__(self):
        self.run_options = onnxruntime.RunOptions()

    def cancel(self):
        self.run_options.terminate = True


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
    _check_explainer_names(models)
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
                raise ServingError(405, f":{verb} takes POST. Received: {_received(request)}")
            raise ServingError(404, f"Unknown verb {verb[:40]!r}; verbs: {', '.join(VERBS)}. "
                                    f"Received: {_received(request)}")
        return _served(models, name, request)

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
                         f"Received: {_received(request)} with a body still incomplete"
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
            raise ServingError(405, f"POST needs a verb, :predict or :explain. Received: {_received(request)}")
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
    _add_v2_routes(app, models, limits, run)
    app.add_api_route("/", page, methods=["GET"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    return app


def _add_v2_routes(app, models, limits, run):
    """The Open Inference Protocol's routes; `run` is `create_app`'s inference path."""

    def endpoint(request, verb=None):
        """`(served model, signature, name in the URL)`; `<name>-explainer` is explain."""
        name = request.path_params["name"]
        if name not in models and name.endswith(EXPLAINER_SUFFIX) and verb != "explain":
            return _served(models, name[:-len(EXPLAINER_SUFFIX)], request), "explain", name
        signature = "explain" if verb == "explain" else "serving_default"
        return _served(models, name, request), signature, name

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


def _served(models, name, request):
    if name not in models:
        raise ServingError(
            404, f"No model {name[:80]!r} is served; served: {', '.join(models)}. Received: {_received(request)}"
        )
    return models[name]


def _check_explainer_names(models):
    """`<name>-explainer` is the explain endpoint of `<name>`; no model may take that name."""
    for name in models:
        if name.endswith(EXPLAINER_SUFFIX) and name[:-len(EXPLAINER_SUFFIX)] in models:
            raise ValueError(
                f"Model {name!r} would hide the explain endpoint of model {name[:-len(EXPLAINER_SUFFIX)]!r} "
                f"over the Open Inference Protocol; export it under another name. Received: {name!r}"
            )


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
        logger.info("Client closed the connection after %d body bytes: %s", size, _received(request))
        raise ServingError(400, f"The client closed the connection after {size} body bytes") from None
    finally:
        chunks.clear()


def _received(request):
    """`METHOD path` for an error message, the path cut to PATH_ECHO_CHARS."""
    path = request.url.path
    if len(path) > PATH_ECHO_CHARS:
        path = path[:PATH_ECHO_CHARS] + f"... ({len(path)} characters)"
    return f"{request.method} {path}"


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
            {"error": f"{error.detail}. Received: {_received(request)}"},
            error.status_code,
            headers=getattr(error, "headers", None),
        )

    async def unexpected(request, call_next):
        try:
            return await call_next(request)
        except Exception:
            logger.exception("Unexpected error answering %s %s", request.method, request.url.path)
            return JSONResponse({"error": f"Internal server error (logged). Received: {_received(request)}"}, 500)

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(HTTPException, http_error)
    app.middleware("http")(unexpected)
