"""Fair, bounded admission of inference work to the server's threads: the `Gate`."""

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools

from keras_robust.serving.plane.cancellation import Cancellation
from keras_robust.serving.plane.errors import ServingError


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
