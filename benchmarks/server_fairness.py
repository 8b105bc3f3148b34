"""Another client's predictions while one client attacks the server, and the server's memory.

    python benchmarks/server_fairness.py            # measures, writes docs/figures/server_fairness.json
    python benchmarks/server_fairness.py --report   # writes its table into docs/reliability.md

Exports a ResNet-8 (ONNX), serves it with `keras-robust serve` (default
limits, gRPC on) in a subprocess, and times a victim's predictions, one image
each, one after another, from 127.0.0.1, unloaded and while a flooder on
127.0.0.2 runs each attack of issue 35: explain floods at the work cap (36
and 4 connections), two uploads of max_request_bytes − 600 bytes that stall,
600 silent connections, and 32 concurrent 30.5 MiB gRPC PredictRequests.
Records, per attack, the share of the victim's predictions answered 200,
their median and 95th-percentile latency, and the server's resident memory
before, at its peak and 3 s after.
"""

import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_robust.common.atomic import write_atomically  # noqa: E402 (keras_robust before TensorFlow)
from keras_robust.common.machine import cpu_summary  # noqa: E402
from tests.serving.fairness_clients import (  # noqa: E402
    FLOODER,
    Flood,
    explain_body,
    predict_body,
    victim_predictions,
)

MIB = 2**20
JSON = "docs/figures/server_fairness.json"
DOC = "docs/reliability.md"
BEGIN, END = "<!-- server_fairness:begin -->", "<!-- server_fairness:end -->"
IMAGE_SHAPE = (32, 32, 3)
# Memory within this of its size before an attack counts as returned.
RETURNED_MB = 50
PREDICT, EXPLAIN = "/v1/models/bench:predict", "/v1/models/bench:explain"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Memory(threading.Thread):
    """Samples the server's resident memory every 50 ms."""

    def __init__(self, pid):
        import psutil  # the measuring run's alone: the report and its test do without it

        super().__init__(daemon=True)
        self.process, self.peak, self.running = psutil.Process(pid), 0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def rss(self):
        return self.process.memory_info().rss


def stalled_uploads(port, count=2, size=32 * MIB - 600):
    """Connections that send `size` body bytes of a larger announced body, then nothing."""
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=60, source_address=(FLOODER, 0))
        connection.sendall(b"POST %s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n" % (PREDICT.encode(), 32 * MIB))
        chunk = b" " * MIB
        sent = 0
        while sent < size:
            part = chunk[: min(MIB, size - sent)]
            try:
                connection.sendall(part)
            except OSError:
                break  # refused and closed under us
            sent += len(part)
        connections.append(connection)
    return connections


def silent_connections(port, count=600):
    connections = []
    for _ in range(count):
        try:
            connections.append(socket.create_connection(("127.0.0.1", port), timeout=5,
                                                        source_address=(FLOODER, 0)))
        except OSError:
            break
    return connections


def grpc_burst(grpc_port, count=32, size=int(30.5 * MIB)):
    """`count` concurrent PredictRequests of `size` bytes; returns their status codes' names."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    images = np.zeros((size // (4 * 32 * 32 * 3), *IMAGE_SHAPE), np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "bench"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
    options = [("grpc.max_send_message_length", 64 * MIB)]

    def send(_):
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
            try:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=120)
                return "OK"
            except grpc.RpcError as error:
                return error.code().name

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(send, range(count)))


# Each attack by name, from `(HTTP port, gRPC port)`; they run in this order, on one server.
SCENARIOS = {
    "none": lambda port, grpc_port: _Idle(),
    "explain flood, 36 connections": lambda port, grpc_port: _Flooding(port, 36),
    "explain flood, 4 connections": lambda port, grpc_port: _Flooding(port, 4),
    "2 uploads of 32 MiB - 600 B that stall": lambda port, grpc_port: _Holding(lambda: stalled_uploads(port)),
    "600 silent connections": lambda port, grpc_port: _Holding(lambda: silent_connections(port)),
    "32 concurrent 30.5 MiB gRPC requests": lambda port, grpc_port: _Bursting(grpc_port),
    "the same gRPC burst again": lambda port, grpc_port: _Bursting(grpc_port),
}
# An attack that repeats an earlier one: whether memory the first left behind grows further.
REPEATS = {"explain flood, 4 connections": "explain flood, 36 connections",
           "the same gRPC burst again": "32 concurrent 30.5 MiB gRPC requests"}


def measure(port, grpc_port, server_pid, victims, names=tuple(SCENARIOS)):
    body = predict_body(IMAGE_SHAPE)
    rows = []

    def scenario(name, attack):
        memory = Memory(server_pid)
        before = memory.rss()
        memory.start()
        with attack() as attacker:
            time.sleep(1.5)
            victim = victim_predictions(port, PREDICT, body, victims)
        time.sleep(3)
        memory.running = False
        memory.join()
        rows.append({"attack": name, **victim, "rss_before_mb": before / MIB, "rss_peak_mb": memory.peak / MIB,
                     "rss_after_mb": memory.rss() / MIB, "attacker": attacker.summary()})
        print(json.dumps(rows[-1]), flush=True)

    for name in names:
        scenario(name, lambda: SCENARIOS[name](port, grpc_port))
    return rows


class _Idle:
    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False

    def summary(self):
        return ""


class _Flooding(Flood):
    def __init__(self, port, connections):
        super().__init__(port, EXPLAIN, explain_body(IMAGE_SHAPE, 64, 35), connections)

    def summary(self):
        return {str(status): self.statuses.count(status) for status in sorted(set(self.statuses))}


class _Holding:
    def __init__(self, open_connections):
        self._open = open_connections

    def __enter__(self):
        self.connections = self._open()
        return self

    def __exit__(self, *exception):
        for connection in self.connections:
            connection.close()
        return False

    def summary(self):
        return f"{len(self.connections)} connections opened"


class _Bursting:
    def __init__(self, grpc_port):
        self._port, self.codes = grpc_port, []
        self._thread = threading.Thread(target=lambda: self.codes.extend(grpc_burst(grpc_port)), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exception):
        self._thread.join(timeout=300)
        return False

    def summary(self):
        return {code: self.codes.count(code) for code in sorted(set(self.codes))}


def report_markdown(record):
    lines = [f"`python benchmarks/server_fairness.py` ({record['time']}): a ResNet-8 served by `keras-robust serve` "
             f"with its default limits on {record['machine']}; the victim sends {record['victims']} one-image "
             "predictions one after another from 127.0.0.1 while the attacker runs from 127.0.0.2 (explanations of "
             "64 images at 35 steps, the work cap).", "",
             "| attack | victim answered | victim median | victim p95 | median × unloaded | server RSS before / peak "
             "/ 3 s after | attacker's answers |", "|---|---|---|---|---|---|---|"]
    unloaded = record["rows"][0]["median_s"]
    for row in record["rows"]:
        lines.append(f"| {row['attack']} | {100 * row['answered']:.0f} % | {1000 * row['median_s']:.1f} ms | "
                     f"{1000 * row['p95_s']:.1f} ms | {row['median_s'] / unloaded:.1f}× | "
                     f"{row['rss_before_mb']:.0f} / {row['rss_peak_mb']:.0f} / {row['rss_after_mb']:.0f} MB | "
                     f"{_attacker(row['attacker'])} |")
    attacks = record["rows"][1:]
    worst = max(attacks, key=lambda row: row["median_s"])
    lowest = min(attacks, key=lambda row: row["answered"])
    answered = ("every one of the victim's predictions was answered" if lowest["answered"] == 1 else
                f"the victim's predictions were answered at least {100 * lowest['answered']:.0f} % of the time "
                f"({lowest['attack']})")
    lines += ["", f"Under every attack {answered}, with a median at most {worst['median_s'] / unloaded:.1f}× its "
                  f"unloaded {1000 * unloaded:.1f} ms ({worst['attack']}). {memory_sentence(attacks)} The server's "
                  f"log held {record['tracebacks_in_log']} tracebacks."]
    return "\n".join(lines)


def memory_sentence(attacks):
    """What the server's resident memory did after each attack, and whether repeating one grew it further."""
    growth = {row["attack"]: row["rss_after_mb"] - row["rss_before_mb"] for row in attacks}
    kept = {name: grown for name, grown in growth.items() if grown > RETURNED_MB}
    if not kept:
        return f"3 s after every attack the server was within {RETURNED_MB} MB of its size before it."
    first = "; ".join(f"{name} +{grown:.0f} MB" for name, grown in kept.items())
    repeats = {name: growth[name] for name, original in REPEATS.items() if original in kept and name in growth}
    if not repeats:
        return f"3 s after some attacks the server was larger than before them: {first}."
    again = "; ".join(f"{name} {grown:+.0f} MB" for name, grown in repeats.items())
    settled = all(grown <= RETURNED_MB for grown in repeats.values())
    return (f"3 s after some attacks the server was larger than before them ({first}); "
            f"repeating them {'did not grow it further' if settled else 'grew it again'} ({again}).")


def _attacker(summary):
    if isinstance(summary, dict):
        return ", ".join(f"{count} × {status}" for status, count in summary.items())
    return summary


def write_report(record, doc=DOC):
    text = open(doc, encoding="utf-8").read()
    before, rest = text.split(BEGIN)
    _, after = rest.split(END)
    write_atomically(doc, before + BEGIN + "\n" + report_markdown(record) + "\n" + END + after)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victims", type=int, default=40, help="victim predictions per attack (40)")
    parser.add_argument("--json", default=JSON)
    parser.add_argument("--report", action="store_true", help="write the table of --json into docs/reliability.md")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS), metavar="ATTACK",
                        help="run these attacks only, after 'none' (a trial: the table wants them all)")
    args = parser.parse_args(argv)
    if args.report:
        write_report(json.load(open(args.json, encoding="utf-8")))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras_robust
    from keras_robust.export import export_model

    with tempfile.TemporaryDirectory() as work:
        export_model(keras_robust.resnet(depth=8), work, name="bench", formats=("onnx",))
        port, grpc_port = free_port(), free_port()
        server = subprocess.Popen([sys.executable, "-m", "keras_robust.cli", "serve", work, "--port", str(port),
                                   "--grpc-port", str(grpc_port), "--log-level", "warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/bench", timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.1)
            rows = measure(port, grpc_port, server.pid, args.victims, ["none", *[a for a in args.only if a != "none"]])
        finally:
            server.terminate()
            log = server.communicate(timeout=60)[1].decode()
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": cpu_summary(),
              "victims": args.victims, "rows": rows, "tracebacks_in_log": log.count("Traceback")}
    write_atomically(args.json, json.dumps(record, indent=2))
    print(report_markdown(record))


if __name__ == "__main__":
    main()
