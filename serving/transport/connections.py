"""HTTP connections: uvicorn's HTTP/1.1 protocol with the server's connection limits.

A connection is refused at once (503, closed) when `max_connections` are
open or its client already holds `max_client_connections`; one that has not
sent a complete request head within `header_timeout_s` of opening, or of its
last answer, is answered 408 and closed. So silent or trickling connections
cannot pile up to the process's descriptor limit, where the accept loop
would fail for every client. Each condition is logged once a minute with a
count, never a traceback per connection. Unparsable requests (a bad
Content-Length or chunk header) get TF Serving's `{"error": ...}` instead of
uvicorn's plain text.
"""

import json
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from keras_robust.serving.plane.errors import PATH_ECHO_CHARS

logger = logging.getLogger("keras_robust.serving")

# Seconds between two log lines about the same condition.
LOG_INTERVAL_S = 60.0
# Descriptors the process needs besides HTTP connections: models, gRPC, logs, pipes.
RESERVED_DESCRIPTORS = 64
# Connections accepted in one turn of the event loop (the listen backlog, which asyncio's accept loop
# also takes as its batch), each holding a descriptor until refused: uvicorn's default, 2,048, would let
# one burst pass any descriptor limit.
ACCEPT_BACKLOG = 64


def protocol_for(limits):
    """The protocol class uvicorn builds per connection, bound to `limits`."""
    return type("ServingH11Protocol", (ServingH11Protocol,), {"limits": limits})


def check_descriptor_limit(limits):
    """Refuses `max_connections` the process's descriptor limit could not hold (`ulimit -n`)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    others = RESERVED_DESCRIPTORS + ACCEPT_BACKLOG
    if soft != resource.RLIM_INFINITY and limits.max_connections + others > soft:
        raise ValueError(
            f"max_connections={limits.max_connections} connections and {others} other descriptors (a burst of "
            f"{ACCEPT_BACKLOG} accepted connections, files, gRPC) do not fit the process's descriptor limit of "
            f"{soft} (ulimit -n): lower --max-connections or raise the limit. "
            f"Received: max_connections={limits.max_connections}"
        )


def quiet_accept_errors(loop):
    """Makes the event loop log a failed accept (out of descriptors, after all) once a minute in one line,
    where asyncio would log a traceback for every connection it could not take."""
    def handler(loop, context):
        if "accept" in context.get("message", ""):
            _log_once("accept", f"{context['message']}: {context.get('exception')}; new connections wait")
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


class ServingH11Protocol(H11Protocol):
    """uvicorn's `H11Protocol` with connection caps, a request-head timeout and JSON 400s."""

    limits = None  # set by `protocol_for`
    _head_timer = None

    def connection_made(self, transport):
        super().connection_made(transport)
        refusal = self._refusal()
        if refusal:
            self.connections.discard(self)  # not counted against the others while it closes
            _log_once(refusal[0], refusal[1])
            self._answer_and_close(503, "Service Unavailable", refusal[1])
            return
        self._arm_head_timer()

    def data_received(self, data):
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()  # a request head has arrived

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # waiting for the next request head

    def connection_lost(self, exc):
        self._disarm_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg):
        self._answer_and_close(400, "Bad Request", f"{msg[:PATH_ECHO_CHARS]} Received: a malformed HTTP request")

    def _refusal(self):
        """`(condition, message)` if this connection is one too many, else None."""
        if len(self.connections) > self.limits.max_connections:
            return ("max_connections", f"The server holds max_connections={self.limits.max_connections} open "
                                       "connections; retry later. Received: one more connection")
        host = self.client[0] if self.client else None
        same = sum(1 for other in self.connections if other.client and other.client[0] == host)
        if host is not None and same > self.limits.max_client_connections:
            return ("max_client_connections",
                    f"This client holds max_client_connections={self.limits.max_client_connections} open "
                    f"connections; reuse them or close some. Received: one more connection from {host}")
        return None

    def _arm_head_timer(self):
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self):
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        message = (f"No complete request head within header_timeout_s={self.limits.header_timeout_s:g} s; the "
                   "connection is closed. Received: a silent or trickling connection")
        _log_once("header_timeout_s", message)
        self._answer_and_close(408, "Request Timeout", message)

    def _answer_and_close(self, status, reason, message):
        """Writes a JSON error answer and closes, whatever state the request is in (written raw:
        h11 answers only a request it has read, and these may come before one)."""
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        self.transport.close()


_logged = {}  # condition -> (time of its last log line, occurrences since)


def _log_once(condition, message):
    """Logs `message` once per `LOG_INTERVAL_S` for each condition, with how often it happened since."""
    now = time.monotonic()
    last, count = _logged.get(condition, (None, 0))
    if last is not None and now - last < LOG_INTERVAL_S:
        _logged[condition] = (last, count + 1)
        return
    since = f" ({count} more since the last line)" if count else ""
    logger.warning("%s%s", message, since)
    _logged[condition] = (now, 0)
