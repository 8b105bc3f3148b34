"""The service put together: the models, the data plane, every protocol's routes, a page.

- TF Serving's REST API and KServe V1's `:explain` (`serving.tf_serving.rest_routes`).
- The Open Inference Protocol, V2 (`serving.open_inference.rest_routes`), with Triton's model
  configuration and statistics (`serving.open_inference.triton`).
- With `grpc_port`, TF Serving's gRPC `PredictionService` and V2's
  `GRPCInferenceService` (`serving.transport.grpc_server`).
- `GET /openapi.json`: the OpenAPI document of every route (`serving.openapi`).
- `GET /`: the page (upload an image, see the prediction and explanations) for
  a browser; KServe V1's liveness answer, `{"status": "alive"}`, for a client
  that does not ask for HTML.

Every protocol's inference requests go through one `DataPlane`
(`serving.plane.data_plane`): the same checks, inference slots, batching and
deadline.
"""

import asyncio
import contextlib
import os

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from keras_robust.serving.plane.limits import Limits
from keras_robust.serving.transport.connections import (
    ACCEPT_BACKLOG,
    check_descriptor_limit,
    protocol_for,
    quiet_accept_errors,
)
from keras_robust.serving.open_inference.rest_routes import add_v2_routes
from keras_robust.serving.open_inference.triton import add_triton_routes
from keras_robust.serving.openapi import openapi_document
from keras_robust.serving.plane.data_plane import DataPlane
from keras_robust.serving.plane.inflight import keep_memory_returnable
from keras_robust.serving.plane.registry import load_models
from keras_robust.serving.tf_serving.rest_routes import add_rest_routes
from keras_robust.serving.transport.http_io import Bodies, add_error_handlers
from keras_robust.serving.transport.ports import check_ports

STATIC = os.path.join(os.path.dirname(__file__), "static")


def create_app(export_dir, backend="onnx", limits=None, device="cpu", grpc_port=None, grpc_host="127.0.0.1",
               client_header=None):
    """The FastAPI app serving every model exported under `export_dir`.

    Args:
        export_dir: The `out_dir` of `keras_robust.export.export_model` (one
            folder per model), or one model's folder.
        backend: `"onnx"` (onnxruntime, default) or `"savedmodel"`.
        limits: A `Limits`; None for the defaults.
        device: `"cpu"` or `"cuda"` (see `load_backend`).
        grpc_port: Also serve TF Serving's gRPC `PredictionService` and V2's
            `GRPCInferenceService` on this port (0: any free one, then
            `app.state.grpc_port`) while the app runs; None (default) for
            HTTP only.
        grpc_host: The gRPC interface.
        client_header: The header (gRPC: metadata key) a trusted proxy sets
            to name each client, for fair admission; None: each
            connection's peer address (`serving.plane.clients`).

    Returns:
        A `fastapi.FastAPI` app; every version is loaded before it returns.
    """
    limits = limits or Limits()
    check_descriptor_limit(limits)
    plane = DataPlane(load_models(export_dir, backend, device), limits, client_header)

    @contextlib.asynccontextmanager
    async def lifespan(app_):
        quiet_accept_errors(asyncio.get_running_loop())
        grpc_server = None
        if grpc_port is not None:
            from keras_robust.serving.transport.grpc_server import start_grpc_server

            grpc_server, app_.state.grpc_port = await start_grpc_server(grpc_port, grpc_host, plane)
        if getattr(app_.state, "owns_process", False):
            # Not for an app inside another program (tests, a notebook): it sets process-wide policy.
            keep_memory_returnable()
        yield
        if grpc_server is not None:
            await grpc_server.stop(grace=1)
        plane.close()

    # The routes read raw requests, so FastAPI's generated document would not describe them.
    app = FastAPI(title="keras-robust serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    document = openapi_document([plane.models[name].card for name in sorted(plane.models)])
    app.add_api_route("/openapi.json", lambda: JSONResponse(document), methods=["GET"])
    bodies = Bodies(limits, plane.inflight)
    add_rest_routes(app, plane, bodies)
    add_triton_routes(app, plane, bodies)  # first: /v2/models/stats is not the metadata of a model "stats"
    add_v2_routes(app, plane, bodies)
    app.add_api_route("/", _page, methods=["GET"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_error_handlers(app)
    app.state.limits = limits
    return app


async def _page(request: Request):
    """The page for a browser (its Accept names text/html), else KServe V1's liveness JSON.

    KServe's client sends `Accept: */*` and reads `{"status": "alive"}`; one
    that names both application/json and text/html gets the JSON.
    """
    accept = request.headers.get("accept", "").lower()
    vary = {"Vary": "Accept"}  # a cache must not hand the page to a client that wants JSON
    if "text/html" in accept and "application/json" not in accept:
        return FileResponse(os.path.join(STATIC, "index.html"), headers=vary)
    return JSONResponse({"status": "alive"}, headers=vary)


def serve(export_dir, host="127.0.0.1", port=8501, backend="onnx", device="cpu", log_level="info",
          grpc_port=None, client_header=None, **limits):
    """Serves `export_dir` with uvicorn until interrupted (TF Serving's REST port, 8501).

    `grpc_port` adds TF Serving's gRPC API on that port (TF Serving's is 8500).
    `client_header` names the header a trusted proxy sets to the client, for
    fair admission (`create_app`).
    `limits` are `Limits` fields, e.g. `max_steps=500, timeout_s=120`.
    A port in use raises `OSError`, and one port for both `ValueError`, before any model loads.
    """
    check_ports(host, port, grpc_port)
    app = create_app(export_dir, backend=backend, limits=Limits(**limits), device=device,
                     grpc_port=grpc_port, grpc_host=host, client_header=client_header)
    app.state.owns_process = True
    uvicorn.Server(server_config(app, host=host, port=port, log_level=log_level)).run()


def server_config(app, **options):
    """uvicorn's configuration for `app`: its connection limits (`serving.transport.connections`), and errors
    below the app answered in JSON too.

    The event loop is asyncio's own, which the gRPC server shares (grpc.aio
    is built for it), not uvloop, which uvicorn would pick when installed.
    """
    return uvicorn.Config(app, http=protocol_for(app.state.limits), loop="asyncio", backlog=ACCEPT_BACKLOG, **options)
