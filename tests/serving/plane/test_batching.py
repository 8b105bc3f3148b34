"""Dynamic batching of predict and attribution requests (`serving.plane.batching`)."""

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from keras_robust.serving import Limits, create_app
from keras_robust.serving.plane import backends as serving_backends
from keras_robust.serving.plane.admission import Gate
from keras_robust.serving.plane.batching import Batcher
from keras_robust.serving.plane.errors import ServingError
from tests.helpers import call, running_server


class RecordingBackend:
    """Doubles its images, records each run's batch size; `fail` makes runs raise."""

    def __init__(self, fail=False, hold=0.0):
        self.sizes, self.signatures, self.fail, self.hold = [], [], fail, hold
        self._lock = threading.Lock()

    def run(self, signature, inputs, run_options=None):
        images = inputs["images"]
        with self._lock:
            self.sizes.append(len(images))
            self.signatures.append(signature)
        if self.hold:
            threading.Event().wait(self.hold)
        if self.fail:
            raise RuntimeError("a backend bug")
        extra = {"targets_seen": inputs["targets"]} if "targets" in inputs else {}
        return {"twice": images * 2, "rows": np.arange(len(images)), **extra}


def run_requests(backend, sizes, window_s=0.05, max_rows=8, timeout_s=10.0, deadlines=None):
    """Sends requests of `sizes` rows at once; returns each one's outcome (answer or error)."""

    async def main():
        gate = Gate(Limits(timeout_s=timeout_s))
        batcher = Batcher(gate, window_s, max_rows, gate.timed_out)
        loop = asyncio.get_running_loop()
        requests = [np.full((n, 2), i, np.float32) for i, n in enumerate(sizes)]
        waits = deadlines or [timeout_s] * len(sizes)
        try:
            return requests, await asyncio.gather(
                *(batcher.run(backend, "serving_default", {"images": r}, loop.time() + w)
                  for r, w in zip(requests, waits)),
                return_exceptions=True,
            )
        finally:
            gate.close()

    return asyncio.run(main())


def test_concurrent_requests_run_as_one_batch_and_get_their_own_rows():
    backend = RecordingBackend()
    requests, answers = run_requests(backend, [1, 2, 3])
    assert backend.sizes == [6]
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["twice"], request * 2)
    assert [a["rows"].tolist() for a in answers] == [[0], [1, 2], [3, 4, 5]]


@pytest.mark.slow
def test_a_full_batch_closes_early_and_large_requests_run_alone():
    backend = RecordingBackend()
    started = time.monotonic()
    requests, answers = run_requests(backend, [3, 3, 2, 9, 4, 4, 3], window_s=3.0, max_rows=8)
    # 3 + 3 + 2 fill a batch, 9 runs alone, 4 + 4 fill the next; the last 3
    # would open a third batch that no one fills, so it waits out the window.
    assert sorted(backend.sizes[:3]) == [8, 8, 9] and backend.sizes[3] == 3
    assert 3.0 <= time.monotonic() - started < 6.0
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["twice"], request * 2)


def test_requests_arriving_while_a_batch_runs_wait_for_it_and_run_together():
    backend = RecordingBackend(hold=0.5)

    async def main():
        gate = Gate(Limits())
        batcher = Batcher(gate, 0.01, 8, gate.timed_out)
        deadline = asyncio.get_running_loop().time() + 10

        async def later(delay, value):
            await asyncio.sleep(delay)
            return await batcher.run(backend, "serving_default", {"images": np.full((1, 2), value, np.float32)},
                                     deadline)

        try:
            return await asyncio.gather(later(0, 0), later(0.1, 1), later(0.2, 2))
        finally:
            gate.close()

    answers = asyncio.run(main())
    # The second request's window passes while the first batch runs; the third joins it.
    assert backend.sizes == [1, 2]
    assert [a["twice"][0, 0] for a in answers] == [0, 2, 4]


def test_each_signature_batches_apart_and_every_input_is_joined_by_rows():
    backend = RecordingBackend()

    async def main():
        gate = Gate(Limits())
        batcher = Batcher(gate, 0.05, 8, gate.timed_out)
        deadline = asyncio.get_running_loop().time() + 10

        def request(signature, rows, first_target):
            inputs = {"images": np.full((rows, 2), first_target, np.float32),
                      "targets": np.arange(first_target, first_target + rows, dtype=np.int32)}
            return batcher.run(backend, signature, inputs, deadline, heavy=signature != "serving_default")

        try:
            return await asyncio.gather(request("saliency", 1, 0), request("grad_cam", 2, 10),
                                        request("saliency", 2, 20), request("grad_cam", 1, 30))
        finally:
            gate.close()

    answers = asyncio.run(main())
    assert sorted(zip(backend.signatures, backend.sizes)) == [("grad_cam", 3), ("saliency", 3)]
    assert [a["targets_seen"].tolist() for a in answers] == [[0], [10, 11], [20, 21], [30]]
    assert [a["twice"][:, 0].tolist() for a in answers] == [[0], [20, 20], [40, 40], [60]]


def test_window_zero_runs_every_request_alone():
    backend = RecordingBackend()
    run_requests(backend, [1, 1, 1], window_s=0)
    assert backend.sizes == [1, 1, 1]


def test_a_failed_batch_fails_each_of_its_requests():
    _, answers = run_requests(RecordingBackend(fail=True), [1, 2])
    assert all(isinstance(a, RuntimeError) and "a backend bug" in str(a) for a in answers)


def test_a_request_past_its_deadline_gets_504_and_its_batch_mates_their_answers():
    backend = RecordingBackend(hold=0.5)
    requests, answers = run_requests(backend, [1, 1], deadlines=[0.2, 10.0])
    assert isinstance(answers[0], ServingError) and answers[0].status == 504
    np.testing.assert_array_equal(answers[1]["twice"], requests[1] * 2)


def test_batched_answers_equal_unbatched_ones_over_http(tiny_export, tiny_server, monkeypatch):
    """8 concurrent clients: the same logits to the last bit, with far fewer runs."""
    sizes = []
    run = serving_backends.OnnxBackend.run

    def recorded(self, signature, inputs, run_options=None):
        sizes.append(len(inputs["images"]))
        return run(self, signature, inputs, run_options=run_options)

    batches = [np.random.default_rng(i).random((1 + i % 3, 32, 32, 3), dtype=np.float32) for i in range(8)]
    unbatched = [call(f"{tiny_server}/v1/models/tiny:predict", {"inputs": b.tolist()})[1] for b in batches]
    monkeypatch.setattr(serving_backends.OnnxBackend, "run", recorded)
    with running_server(create_app(str(tiny_export[0]), limits=Limits(batch_window_ms=200))) as url:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            batched = list(pool.map(lambda b: call(f"{url}/v1/models/tiny:predict", {"inputs": b.tolist()}), batches))
    assert all(status == 200 for status, _ in batched)
    assert [answer for _, answer in batched] == unbatched
    assert sum(sizes) == sum(len(b) for b in batches) and len(sizes) < len(batches)


@pytest.mark.parametrize("value", [-1, 1001, "2"])
def test_batch_window_is_checked(value):
    with pytest.raises(ValueError, match=r"batch_window_ms.*Received: batch_window_ms="):
        Limits(batch_window_ms=value)
