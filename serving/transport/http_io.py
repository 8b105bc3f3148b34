"""What the HTTP protocols share: request bodies read within the limits, JSON in and
out, and every error answered as TF Serving's `{"error": ...}`."""

import asyncio
import contextlib
import json
import logging

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from keras_robust.serving.plane.errors import ServingError, bad_request, received
from keras_robust.serving.plane.inputs import parse_decimal

logger = logging.getLogger("keras_robust.serving")


class Bodies:
    """Reads request bodies: at most `max_request_bytes` each (413), their first bytes and
    each next chunk within `body_start_timeout_s` and all within `timeout_s` (408), and at
    most `max_inflight_bytes` received and not yet answered at once, `max_client_inflight_bytes`
    of them one client's (503)."""

    def __init__(self, limits, inflight):
        self._limits = limits
        self._inflight = inflight

    @contextlib.asynccontextmanager
    async def read(self, request, client=None):
        """The body, its bytes counted in flight (as `client`'s) as they arrive until the block
        ends (once its answer is ready)."""
        with self._inflight.counter(request, client) as count:
            yield await _read_body(request, self._limits, count)


async def _read_body(request, limits, count):
    """The body, refused (413) as soon as it is known to exceed `max_request_bytes`, or (415) when
    compressed; each chunk is passed to `count` as it arrives."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ServingError(415, "Request bodies are read uncompressed: send the body without a "
                                f"Content-Encoding. Received: Content-Encoding {encoding[:40]!r}")
    limit = limits.max_request_bytes
    too_large = f"A request body has at most max_request_bytes={limit} bytes. Received: "
    length = parse_decimal(request.headers.get("content-length", ""))
    if length is not None and length > limit:
        raise ServingError(413, too_large + f"Content-Length {length}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout_s
    stream = request.stream()  # chunked bodies have no Content-Length
    chunks, size = [], 0
    try:
        while True:
            # Each chunk within body_start_timeout_s of the last (or of the headers): a
            # connection that stops sending must not hold its bytes for all of timeout_s.
            wait = min(deadline, loop.time() + limits.body_start_timeout_s) - loop.time()
            try:
                chunk = await asyncio.wait_for(anext(stream, None), wait)
            except asyncio.TimeoutError:
                raise _late(request, limits, size, loop.time() >= deadline) from None
            if chunk is None:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise ServingError(413, too_large + f"over {limit} bytes")
            count(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        # An aborted upload: nobody reads the answer, so no traceback in the log; the
        # chunks are dropped now rather than when the exception's frames are collected.
        logger.info("Client closed the connection after %d body bytes: %s", size, received(request))
        raise ServingError(400, f"The client closed the connection after {size} body bytes") from None
    finally:
        chunks.clear()


def _late(request, limits, size, past_deadline):
    """The 408 of a body whose first or next bytes, or whose end, came too late."""
    if past_deadline:
        return ServingError(
            408, f"The request body did not arrive within timeout_s={limits.timeout_s:g} s. "
                 f"Received: {received(request)} with a body still incomplete"
        )
    what = "did not start" if not size else f"stalled after {size} bytes: no more"
    return ServingError(
        408, f"The request body {what} within body_start_timeout_s={limits.body_start_timeout_s:g} s. "
             f"Received: {received(request)} with " + ("headers and no body bytes" if not size else
                                                       "a body still incomplete")
    )


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
        # After a 408 the connection is closed: what is left of the late body could not be
        # told from a next request, and an idle announcer must not keep its socket.
        headers = {"Connection": "close"} if error.status == 408 else {}
        if error.allow:
            headers["Allow"] = error.allow
        return JSONResponse({"error": error.message}, error.status, headers=headers)

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
