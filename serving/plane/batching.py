"""Dynamic batching: concurrent predict requests to one model version run as one batch.

The scheme is TF Serving's (`batch_timeout_micros`, `max_batch_size`): the
first request of a batch waits at most a short window for others, a batch
closes early once it holds `max_batch_size` images, and each request gets its
own rows of the batch's outputs back. One run over B images costs less than B
runs over one (larger matrix products, one dispatch), which is the gain.
"""

import asyncio
import dataclasses

import numpy as np


@dataclasses.dataclass
class _Batch:
    """The requests gathered so far: their images, futures and deadlines.

    `due` once its window has passed or it is full; it runs when due and no
    other batch of its backend is running.
    """

    parts: list = dataclasses.field(default_factory=list)
    futures: list = dataclasses.field(default_factory=list)
    deadlines: list = dataclasses.field(default_factory=list)
    rows: int = 0
    due: bool = False


class PredictBatcher:
    """Runs predict requests that arrive within `window_s` of each other as one batch.

    One batch per backend runs at a time, and requests arriving meanwhile
    join the next batch even after its window has passed: under load,
    batches grow instead of runs competing for the cores. Only the event
    loop's thread calls it. Requests holding `max_rows` images or more run
    alone, at once.

    Args:
        gate: The server's `Gate`: a batch takes one inference slot.
        window_s: How long the first request of a batch waits for others;
            0 runs every request alone.
        max_rows: Most images in one batch.
        timed_out: `ServingError` factory for a request past its deadline.
    """

    def __init__(self, gate, window_s, max_rows, timed_out):
        self._gate = gate
        self._window_s = window_s
        self._max_rows = max_rows
        self._timed_out = timed_out
        self._queues = {}  # backend -> its batches in arrival order, the last one open
        self._running = {}  # backend -> the task running its batch

    async def predict(self, backend, images, deadline, client=None):
        """`backend.predict(images)`'s outputs, run in a batch with whatever else arrives; a
        request run alone takes `client`'s turn at the gate, a batch its own."""
        if self._window_s == 0 or len(images) >= self._max_rows:
            return await self._gate.run(_predictor(backend, [images]), deadline, client)
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(backend, [])
        if not queue or queue[-1].rows + len(images) > self._max_rows:
            if queue:
                queue[-1].due = True  # as full as it gets
            queue.append(_Batch())
            loop.call_later(self._window_s, self._window_passed, backend, queue[-1])
        batch = queue[-1]
        future = loop.create_future()
        batch.parts.append(images)
        batch.futures.append(future)
        batch.deadlines.append(deadline)
        batch.rows += len(images)
        batch.due = batch.due or batch.rows >= self._max_rows
        self._start_next(backend)
        try:
            # shield: one request timing out must not cancel its batch-mates' answers.
            return await asyncio.wait_for(asyncio.shield(future), max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise self._timed_out() from None

    def _window_passed(self, backend, batch):
        batch.due = True
        self._start_next(backend)

    def _start_next(self, backend):
        queue = self._queues.get(backend)
        if backend in self._running or not queue or not queue[0].due:
            return
        batch = queue.pop(0)
        if not queue:
            del self._queues[backend]
        task = asyncio.ensure_future(self._run(backend, batch))
        self._running[backend] = task
        task.add_done_callback(lambda _: self._finished(backend))

    def _finished(self, backend):
        del self._running[backend]
        self._start_next(backend)

    async def _run(self, backend, batch):
        try:
            outputs = await self._gate.run(_predictor(backend, batch.parts), max(batch.deadlines), BATCHES)
        except Exception as error:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # marked retrieved: a timed-out request no longer awaits it
            return
        start = 0
        for future, part in zip(batch.futures, batch.parts):
            if not future.done():
                future.set_result({name: value[start:start + len(part)] for name, value in outputs.items()})
            start += len(part)


# The gate's client for batched predictions, which serve several clients at once.
BATCHES = "batched predictions"


def _predictor(backend, parts):
    """The gate's work for one batch: join the requests' images (in the worker
    thread, as it copies them all), then predict."""

    def predict(cancellation):
        images = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return backend.predict(images=images, run_options=cancellation.run_options)

    return predict
