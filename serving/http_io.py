"""What the HTTP protocols share: request bodies read within the limits, JSON in and
out, and every error answered as TF Serving's `{"error": ...}`."""

import asyncio
import contextlib
import json
import logging

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from keras_robust.serving.admission import InflightBytes
from keras_robust.serving.errors import ServingError, bad_request, received

logger = logging.getLogger("keras_robust.serving")


class Bodies:
    """Reads request bodies: at most `max_request_bytes` each (413), within
    `timeout_s` (408), and at most `max_inflight_bytes` at once (503)."""

    def __init__(self, limits):
        self._limits = limits
        self._inflight = InflightBytes(limits)

    @contextlib.asynccontextmanager
    async def read(self, request):
        """The body, its bytes counted in flight until the block ends (once its answer is ready)."""
        with self._inflight.reserve(request):
            try:
                body = await asyncio.wait_for(_read_body(request, self._limits.max_request_bytes),
                                              self._limits.timeout_s)
            except asyncio.TimeoutError:
                raise ServingError(
                    408, f"The request body did not arrive within timeout_s={self._limits.timeout_s:g} s. "
                         f"Received: {received(request)} with a body still incomplete"
                ) from None
            yield body


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


def parse_json(body):
    """The request body as a JSON object (a dict), or a 400 naming what is wrong."""
    try:
        payload = json.loads(body)
    except ValueError as error:  # JSONDecodeError and invalid UTF-8 are both ValueErrors
        raise bad_request(f"The request body is not valid JSON. Received: {error}") from None
    except RecursionError:
        raise bad_request("The request body nests JSON too deeply. Received: over 1000 levels") from None
    if not isinstance(payload, dict):
        raise bad_request(f"The request body must be a JSON object. Received: {type(payload).__name__}")
    return payload


def encode_json(payload):
    return json.dumps(payload, separators=(",", ":")).encode()


def add_error_handlers(app):
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
