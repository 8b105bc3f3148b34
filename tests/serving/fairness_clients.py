"""Clients for the fairness tests and benchmark: a victim timing its predictions, and flooders.

Each client sends pre-encoded bodies over `http.client` from a chosen
loopback source address (the whole 127.0.0.0/8 is this machine), so that
the server sees the flood and the victim as two clients, and encoding costs
the clients nothing while they run.
"""

import http.client
import json
import statistics
import threading
import time

import numpy as np

VICTIM, FLOODER = "127.0.0.1", "127.0.0.2"


def predict_body(image_shape, count=1, seed=0):
    images = np.random.default_rng(seed).random((count, *image_shape), dtype=np.float32)
    return json.dumps({"instances": images.tolist()}).encode()


def explain_body(image_shape, count, steps, seed=1):
    images = np.random.default_rng(seed).random((count, *image_shape), dtype=np.float32)
    return json.dumps({"instances": [{"images": image, "targets": 1, "steps": steps}
                                     for image in images.tolist()]}).encode()


def post(port, path, body, source, timeout=120):
    """`(status, seconds, answer)` of one POST from `source`; status 0 when the connection failed."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        status = response.status
    except OSError as error:
        status, answer = 0, str(error).encode()
    finally:
        connection.close()
    return status, time.perf_counter() - started, answer


class Flood:
    """`connections` threads posting `body` to `path` from `source` back to back, until stopped."""

    def __init__(self, port, path, body, connections, source=FLOODER):
        self.statuses = []
        self.refusals = []  # the first answers other than 200
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(port, path, body, source), daemon=True)
                         for _ in range(connections)]

    def _loop(self, port, path, body, source):
        while not self._stop.is_set():
            status, _, answer = post(port, path, body, source)
            self.statuses.append(status)
            if status != 200 and len(self.refusals) < 5:
                self.refusals.append(answer[:300])

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exception):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        return False


def victim_predictions(port, path, body, count, pause_s=0.02):
    """`{"answered": share of 200s, "median_s", "p95_s", "count"}` of `count` predictions one after another."""
    results = []
    for _ in range(count):
        results.append(post(port, path, body, VICTIM))
        time.sleep(pause_s)
    seconds = sorted(s for status, s, _ in results if status == 200) or [float("nan")]
    return {"answered": sum(status == 200 for status, _, _ in results) / count, "median_s": statistics.median(seconds),
            "p95_s": seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], "count": count}
