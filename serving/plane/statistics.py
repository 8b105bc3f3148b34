"""Inference statistics per model version, as Triton's statistics extension reports them.

`DataPlane.infer` counts every request of every protocol here, so
perf_analyzer (and anything else reading `GET /v2/models/<name>/stats` or
gRPC `ModelStatistics`) sees the requests it sent whatever they came
through. A request's time splits at the moments the data plane passes:

- `queue`: from its arrival until its decoding starts (waiting for an
  inference slot);
- `compute_input`: decoding its wire format;
- `compute_infer`: checking its inputs, waiting for a batch and a slot, and
  the run;
- `compute_output`: encoding the answer;

and `success` is the whole, from arrival to the encoded answer. A request
that fails once decoded (a bad value, a timeout, a busy server) counts in
`fail`; one that cannot be decoded never reached a model, as in Triton.
`inference_count` counts examples and `execution_count` requests: a batch
that ran several requests counts once for each of them.
"""

import collections
import dataclasses
import time

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
# Triton's response cache: nothing is cached here, but readers expect both.
CACHE_DURATIONS = ("cache_hit", "cache_miss")


@dataclasses.dataclass
class Duration:
    """How many times something happened, and how long it took in all."""

    count: int = 0
    ns: int = 0

    def add(self, ns):
        self.count += 1
        self.ns += ns


class VersionStatistics:
    """The counts of one signature of one model version."""

    def __init__(self):
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.durations = {name: Duration() for name in DURATIONS}

    def triton_json(self, name, version):
        """One entry of Triton's `model_stats`, named `name` (the model's V2 name)."""
        stats = {key: dataclasses.asdict(duration) for key, duration in self.durations.items()}
        stats.update({key: {"count": 0, "ns": 0} for key in CACHE_DURATIONS})
        return {
            "name": name,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": stats,
            "batch_stats": [],
        }


class Statistics:
    """The `VersionStatistics` of every model version and signature, counted by `count`.

    Only the event loop's thread reads or changes the counts, so they need
    no lock; the worker threads only note the moments of their request.
    """

    def __init__(self):
        self._versions = collections.defaultdict(VersionStatistics)

    def of(self, card, signature):
        """The counts of `signature` of the version whose card is `card`."""
        return self._versions[(card["name"], card["version"], signature)]

    async def count(self, backend, decode, encode, run):
        """`await run(decode, encode)`, with `decode` and `encode` timed, counted for `backend`."""
        clock = _Clock()
        try:
            answer = await run(clock.timed_decode(decode), clock.timed_encode(encode))
        except Exception:
            if clock.request is not None:
                self.of(backend.card, clock.request.signature).durations["fail"].add(clock.elapsed())
            raise
        counts = self.of(backend.card, clock.request.signature)
        for name, ns in clock.phases().items():
            counts.durations[name].add(ns)
        counts.inference_count += len(clock.request.inputs["images"])
        counts.execution_count += 1
        counts.last_inference_ms = time.time_ns() // 1_000_000
        return answer


class _Clock:
    """The moments one request passes: noted in worker threads, read once it is answered."""

    def __init__(self):
        self.arrived = time.perf_counter_ns()
        self.request = None

    def timed_decode(self, decode):
        def timed():
            self.decoding = time.perf_counter_ns()
            request = decode()
            self.decoded = time.perf_counter_ns()
            self.request = request
            return request

        return timed

    def timed_encode(self, encode):
        def timed(response):
            self.encoding = time.perf_counter_ns()
            answer = encode(response)
            self.encoded = time.perf_counter_ns()
            return answer

        return timed

    def elapsed(self):
        return time.perf_counter_ns() - self.arrived

    def phases(self):
        return {
            "success": self.elapsed(),
            "queue": self.decoding - self.arrived,
            "compute_input": self.decoded - self.decoding,
            "compute_infer": self.encoding - self.decoded,
            "compute_output": self.encoded - self.encoding,
        }
