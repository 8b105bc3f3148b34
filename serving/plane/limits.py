"""What one request may ask of the server and how much runs at once: the `Limits`, checked by name."""

import dataclasses


# The longest a limit in seconds may be: past a day, a request is never going to be answered.
MAX_TIMEOUT_S = 86_400.0
# The most bytes a byte limit may be: gRPC's message length is a signed 32-bit integer.
MAX_BYTES = 2**31 - 1


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
        timeout_s: Seconds a request's body may take to arrive (longer: 408),
            and then seconds it may wait and run (longer: 504).
        body_start_timeout_s: Seconds between a request's headers and the
            first bytes of its body (longer: 408), so that a connection that
            announces a body and sends nothing is closed early.
        header_timeout_s: Seconds a connection has to send a complete request
            head, from its opening or its last answer (longer: 408, closed;
            `serving.transport.connections`).
        max_connections: Open HTTP connections (more: 503, closed); with 64
            other descriptors it must fit the process's descriptor limit.
        max_client_connections: Open HTTP connections of one client (more:
            503, closed).
        max_concurrent: Inferences running at once, all sharing one loaded
            model per version.
        max_queue: Requests waiting for a free slot (more: 503).
        max_inflight_bytes: Request bytes received or being parsed at once,
            each counted as it arrives (not as a Content-Length announces
            it) until its request's answer is ready (more: 503). Bounds the
            memory of large requests, and how long their parsing can keep
            Python busy, while connections that announce large bodies and
            send nothing hold nothing. At least `max_request_bytes`.
        max_client_inflight_bytes: Of those, the most one client's requests
            may hold (more: 503), so that one client's stalled uploads
            cannot hold them all. From `max_request_bytes` to
            `max_inflight_bytes`; None (default): half of
            `max_inflight_bytes`, at least `max_request_bytes`.
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
    body_start_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    max_connections: int = 512
    max_client_connections: int = 64
    max_concurrent: int = 4
    max_queue: int = 32
    max_per_client: int = 8
    max_inflight_bytes: int = 64 * 2**20
    max_client_inflight_bytes: int = None
    batch_window_ms: float = 2.0
    max_batch_size: int = 64

    def __post_init__(self):
        if self.max_client_inflight_bytes is None and isinstance(self.max_inflight_bytes, int):
            share = max(self.max_inflight_bytes // 2, self.max_request_bytes)
            object.__setattr__(self, "max_client_inflight_bytes", share)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("timeout_s"):
                valid = isinstance(value, (int, float)) and 0 < value <= MAX_TIMEOUT_S
                wanted = f"a number of seconds in (0, {MAX_TIMEOUT_S:g}]"
            elif field.name.endswith("_bytes"):
                valid = isinstance(value, int) and 1 <= value <= MAX_BYTES
                wanted = f"an integer in [1, {MAX_BYTES}] (gRPC's message length is a 32-bit integer)"
            elif field.name == "batch_window_ms":
                valid, wanted = isinstance(value, (int, float)) and 0 <= value <= 1000, "a number in [0, 1000]"
            else:
                lowest = 0 if field.name == "max_queue" else 1
                valid, wanted = isinstance(value, int) and value >= lowest, f"an integer >= {lowest}"
            if isinstance(value, bool) or not valid:
                raise ValueError(f"`{field.name}` must be {wanted}. Received: {field.name}={value!r}")
        if self.max_client_connections > self.max_connections:
            raise ValueError(
                "`max_client_connections` must be at most max_connections. "
                f"Received: max_client_connections={self.max_client_connections}"
            )
        if self.max_inflight_bytes < self.max_request_bytes:
            raise ValueError(
                "`max_inflight_bytes` must be at least max_request_bytes, or a request of the allowed "
                f"size could never be taken. Received: max_inflight_bytes={self.max_inflight_bytes}"
            )
        if not self.max_request_bytes <= self.max_client_inflight_bytes <= self.max_inflight_bytes:
            raise ValueError(
                "`max_client_inflight_bytes` must be from max_request_bytes (or a request of the allowed size "
                "could never be taken) to max_inflight_bytes. "
                f"Received: max_client_inflight_bytes={self.max_client_inflight_bytes}"
            )
