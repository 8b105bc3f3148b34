"""What the server admits: the `Limits`, the inference slots (`Gate`), request
bytes in flight, and the cancellation of timed-out onnxruntime runs."""

import asyncio
import collections
import concurrent.futures
import ctypes
import ctypes.util
import contextlib
import contextvars
import dataclasses
import functools

import onnxruntime

from keras_robust.serving.errors import ServingError, received


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
            `serving.connections`).
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


# The client whose place in the server the running request (its asyncio task) holds.
_ADMITTED = contextvars.ContextVar("admitted_client", default=None)


class Gate:
    """Fair, bounded concurrency: `max_concurrent` inferences run, `max_queue` wait.

    Waiting work is served round robin across clients (the client that got a
    slot last goes to the back), so one client's backlog does not delay
    another's next request; a client has at most `max_per_client` requests
    in the server at once (`client_admission`). Explanation runs ("heavy"
    work) take at most `max_concurrent - 1` slots, so one is always left for
    predictions, decoding and encoding, which take milliseconds where an
    explanation takes seconds. This is Triton's rate limiter with two
    priority levels and fair queueing in place of one FIFO (docs/serving.md).

    A timed-out request answers 504 at once and its inference is cancelled:
    `function` receives a `Cancellation`, which stops an onnxruntime run
    within a few operators. Work that cannot be stopped (the SavedModel
    backend) keeps its slot until it really ends, so timed-out work never
    piles up beyond `max_concurrent`. Only the event loop's thread calls it.
    """

    def __init__(self, limits):
        self._limits = limits
        self._free = limits.max_concurrent
        self._heavy_running = 0
        self._heavy_cap = max(1, limits.max_concurrent - 1)
        self._waiting = collections.OrderedDict()  # client -> its waiting (ticket, heavy), in round-robin order
        self._admitted = 0  # waiting or running
        self._in_server = collections.Counter()  # client -> its requests anywhere in the server
        self._place_waiters = {}  # client -> futures of its requests waiting for a place, oldest first
        self._executor = concurrent.futures.ThreadPoolExecutor(
            limits.max_concurrent, thread_name_prefix="keras-robust-serving"
        )

    @contextlib.asynccontextmanager
    async def client_admission(self, client, deadline):
        """Holds one of `client`'s `max_per_client` places in the server for a whole request.

        A request beyond the share waits, without its body read, until one of
        its client's requests is answered (503 if none is by `deadline`):
        a waiting request costs the server nothing, where an immediate 503
        would invite a flooding client to resend at once. Within a block
        that holds a place already (the same request, its task), holds
        nothing more.
        """
        if _ADMITTED.get() == client:
            yield
            return
        while self._in_server[client] >= self._limits.max_per_client:
            await self._wait_for_place(client, deadline)
        self._in_server[client] += 1
        token = _ADMITTED.set(client)
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            self._in_server[client] -= 1
            if not self._in_server[client]:
                del self._in_server[client]
            # The oldest waiter not woken yet: another release may have woken one that has not run since.
            waiter = next((w for w in self._place_waiters.get(client, ()) if not w.done()), None)
            if waiter is not None:
                waiter.set_result(None)

    async def _wait_for_place(self, client, deadline):
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiters = self._place_waiters.setdefault(client, collections.deque())
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise ServingError(
                503, f"This client kept its share of the server (max_per_client={self._limits.max_per_client} "
                     f"requests) for timeout_s={self._limits.timeout_s:g} s; send fewer requests at once. "
                     f"Received: a request from {client}"
            ) from None
        finally:
            waiters.remove(waiter)
            if not waiters:
                del self._place_waiters[client]

    async def run(self, function, deadline, client=None, heavy=False):
        """Runs `function(cancellation)` in a worker thread by `deadline` (the event
        loop's clock), in `client`'s turn; 503 when full, 504 past the deadline.
        `heavy`: an explanation, which may not take the last free slot."""
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
            return await asyncio.wait_for(self._run(functools.partial(function, cancellation), client, heavy),
                                          remaining)
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on
            cancellation.cancel()
            raise self.timed_out() from None

    def timed_out(self):
        """The 504 of a request past its deadline."""
        return ServingError(
            504, f"The request took longer than timeout_s={self._limits.timeout_s:g} s; "
                 "send fewer images or steps. Received: a request still waiting or running"
        )

    async def _run(self, function, client, heavy):
        ticket = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, collections.deque()).append((ticket, heavy))
        self._dispatch()
        try:
            await ticket
            future = asyncio.get_running_loop().run_in_executor(self._executor, function)
        except BaseException:  # timed out while waiting, or shutting down: no inference started
            if ticket.done() and not ticket.cancelled():
                self._release(heavy)  # granted a slot just before: give it back
            else:
                self._forget(client, ticket)
            self._admitted -= 1
            raise
        future.add_done_callback(functools.partial(self._finished, heavy))
        return await asyncio.shield(future)  # a timeout must not cancel the running inference

    def _dispatch(self):
        """Gives free slots to waiting work: the first client in round-robin order whose next work may run."""
        while self._free:
            for client, queue in self._waiting.items():
                ticket, heavy = queue[0]
                if not heavy or self._heavy_running < self._heavy_cap:
                    break
            else:
                return  # nothing waiting, or only explanations while they hold their share
            queue.popleft()
            if queue:
                self._waiting.move_to_end(client)
            else:
                del self._waiting[client]
            if ticket.cancelled():
                continue
            self._free -= 1
            self._heavy_running += heavy
            ticket.set_result(None)

    def _forget(self, client, ticket):
        """Takes a ticket that will never run out of its client's queue (`_dispatch` skips it, but a
        cancelled explanation at the head would hold up its client's next work)."""
        queue = self._waiting.get(client, ())
        for entry in queue:
            if entry[0] is ticket:
                queue.remove(entry)
                break
        if client in self._waiting and not queue:
            del self._waiting[client]

    def _release(self, heavy):
        self._free += 1
        self._heavy_running -= heavy
        self._dispatch()

    def _finished(self, heavy, future):
        self._admitted -= 1
        self._release(heavy)
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled run's error has no one left to answer

    def close(self):
        self._executor.shutdown(wait=False, cancel_futures=True)


class InflightBytes:
    """Counts the request bytes received and not yet answered; refuses (503) beyond the limit.

    Bytes count as they arrive, not as a Content-Length announces them: a
    connection that announces 32 MiB and sends nothing holds nothing, so
    idle announcers cannot make every other request wait. Used only from
    the event loop's thread, so a plain counter is enough.
    """

    def __init__(self, limits):
        self._limits = limits
        self._bytes = 0
        self._by_client = collections.Counter()
        self._peak = 0  # the most bytes held since the server last returned freed memory

    @contextlib.contextmanager
    def counter(self, request, client=None):
        """Yields `add(size)`, which counts `size` more bytes of `request` (a Starlette request, or a
        description of one), from `client`; they are released when the block ends."""
        held = 0
        where = request if isinstance(request, str) else received(request)

        def add(size):
            nonlocal held
            if self._bytes + size > self._limits.max_inflight_bytes:
                raise ServingError(
                    503, f"The server holds {self._bytes} request bytes received or being parsed, and this "
                         f"request's would pass max_inflight_bytes={self._limits.max_inflight_bytes}; retry "
                         f"later. Received: {where} with {held + size} bytes so far"
                )
            if self._by_client[client] + size > self._limits.max_client_inflight_bytes:
                raise ServingError(
                    503, f"This client's requests hold {self._by_client[client]} bytes received or being parsed, "
                         f"and this one's would pass max_client_inflight_bytes="
                         f"{self._limits.max_client_inflight_bytes}; send them one after another. Received: "
                         f"{where} from {client} with {held + size} bytes so far"
                )
            self._bytes += size
            self._by_client[client] += size
            self._peak = max(self._peak, self._bytes)
            held += size

        try:
            yield add
        finally:
            self._bytes -= held
            self._by_client[client] -= held
            if not self._by_client[client]:
                del self._by_client[client]
            if not self._bytes and self._peak >= TRIM_AFTER_BYTES:
                self._peak = 0
                release_freed_memory()


# After a burst of at least this many request bytes, once none is held, freed memory goes back to the
# system: glibc keeps large freed blocks in its arenas, so a burst of large requests left the
# process gigabytes larger for good.
TRIM_AFTER_BYTES = 16 * 2**20


def release_freed_memory():
    """Returns the C heap's free memory to the system (glibc's `malloc_trim`); nothing elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, looked up once (`find_library` runs ldconfig: not on every burst, in the event
    loop), or None off glibc."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class Cancelled(Exception):
    """Work stopped because its request is past its deadline (already answered 504)."""


class Cancellation:
    """Lets the event loop stop a worker's work: an onnxruntime run (`RunOptions.terminate`), or
    Python work that calls `stop_if_cancelled` as it goes (decoding images)."""

    def __init__(self):
        self.run_options = onnxruntime.RunOptions()
        self.cancelled = False

    def cancel(self):
        self.cancelled = True
        self.run_options.terminate = True

    def stop_if_cancelled(self):
        if self.cancelled:
            raise Cancelled()
