"""Dynamic batching: concurrent requests to one signature of one model version run as one batch.

The scheme is TF Serving's (`batch_timeout_micros`, `max_batch_size`): the
first request of a batch waits at most a short window for others, a batch
closes early once it holds `max_batch_size` images, and each request gets its
own rows of the batch's outputs back. One run over B images costs less than B
runs over one (larger matrix products, one dispatch), which is the gain.
Every input of every signature holds one row per image (`serving.plane.inputs`
expands settings given once), so requests join by stacking each input.
"""

import asyncio
import dataclasses

import numpy as np


@dataclasses.dataclass
class _Batch:
    """The requests gathered so far: their inputs, futures and deadlines.

    `due` once its window has passed or it is full; it runs when due and no
    other batch of its backend and signature is running. `heavy`: its
    signature is an explanation, which may not take the gate's last free slot.
    """

    parts: list = dataclasses.field(default_factory=list)
    futures: list = dataclasses.field(default_factory=list)
    deadlines: list = dataclasses.field(default_factory=list)
    rows: int = 0
    due: bool = False
    heavy: bool = False


class Batcher:
    """Runs requests to one signature that arrive within `window_s` of each other as one batch.

    One batch per backend and signature runs at a time, and requests arriving meanwhile
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
        self._queues = {}  # (backend, signature) -> its batches in arrival order, the last one open
        self._running = {}  # (backend, signature) -> the task running its batch

    async def run(self, backend, signature, inputs, deadline, client=None, heavy=False):
        """`backend.run(signature, inputs)`'s outputs, run in a batch with whatever else arrives; a
        request run alone takes `client`'s turn at the gate, a batch its own. `heavy`: the signature is an
        explanation, which may not take the gate's last free slot."""
        rows = len(inputs["images"])
        if self._window_s == 0 or rows >= self._max_rows:
            return await self._gate.run(_runner(backend, signature, [inputs]), deadline, client, heavy=heavy)
        loop = asyncio.get_running_loop()
        key = (backend, signature)
        queue = self._queues.setdefault(key, [])
        if not queue or queue[-1].rows + rows > self._max_rows:
            if queue:
                queue[-1].due = True  # as full as it gets
            queue.append(_Batch(heavy=heavy))
            loop.call_later(self._window_s, self._window_passed, key, queue[-1])
        batch = queue[-1]
        future = loop.create_future()
        batch.parts.append(inputs)
        batch.futures.append(future)
        batch.deadlines.append(deadline)
        batch.rows += rows
        batch.due = batch.due or batch.rows >= self._max_rows
        self._start_next(key)
        try:
            # shield: one request timing out must not cancel its batch-mates' answers.
            return await asyncio.wait_for(asyncio.shield(future), max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise self._timed_out() from None

    def _window_passed(self, key, batch):
        batch.due = True
        self._start_next(key)

    def _start_next(self, key):
        queue = self._queues.get(key)
        if key in self._running or not queue or not queue[0].due:
            return
        batch = queue.pop(0)
        if not queue:
            del self._queues[key]
        task = asyncio.ensure_future(self._run(key, batch))
        self._running[key] = task
        task.add_done_callback(lambda _: self._finished(key))

    def _finished(self, key):
        del self._running[key]
        self._start_next(key)

    async def _run(self, key, batch):
        backend, signature = key
        try:
            outputs = await self._gate.run(_runner(backend, signature, batch.parts), max(batch.deadlines), BATCHES,
                                           heavy=batch.heavy)
        except Exception as error:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # marked retrieved: a timed-out request no longer awaits it
            return
        start = 0
        for future, part in zip(batch.futures, batch.parts):
            rows = len(part["images"])
            if not future.done():
                future.set_result({name: value[start:start + rows] for name, value in outputs.items()})
            start += rows


# The gate's client for batches, which serve several clients at once.
BATCHES = "batched requests"


def _runner(backend, signature, parts):
    """The gate's work for one batch: join the requests' inputs (in the worker
    thread, as it copies them all), then run the signature."""

    def run(cancellation):
        inputs = parts[0] if len(parts) == 1 else {name: np.concatenate([part[name] for part in parts])
                                                   for name in parts[0]}
        return backend.run(signature, inputs, run_options=cancellation.run_options)

    return run
