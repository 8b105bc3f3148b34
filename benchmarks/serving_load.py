"""Latency and throughput of `keras-robust serve` per protocol, with and without batching.

    python benchmarks/serving_load.py --model runs/robust/model.keras \
        --data ../shared/data/cifar10-jpeg.tar.gz --out docs/figures/serving_load.json

Exports the model to a temporary folder and starts `keras-robust serve` on it
in a subprocess (ONNX Runtime backend unless --backend savedmodel), twice:
with dynamic batching off (`--batch-window-ms 0`) and at its default. Each
request is one JPEG CIFAR-10 test image:
- predict over TF Serving's REST API, the Open Inference Protocol (V2) with
  JSON and with binary tensors, and TF Serving's gRPC API;
- explain toward one class, 35 steps, ρ 0.1 (the defaults), over REST, V2
  binary and gRPC.
From `--clients` threads at once (and, for predict, from one client, which
isolates each protocol's own cost), it prints requests/s and p50/p95/max
latency per kind, and, with --markdown, the tables of docs/serving.md.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)

PREDICT_PROTOCOLS = ("rest", "v2-json", "v2-binary", "grpc")
EXPLAIN_PROTOCOLS = ("rest", "v2-binary", "grpc")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--backend", default="onnx", choices=["onnx", "savedmodel"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--predict-requests", type=int, default=400)
    parser.add_argument("--explain-requests", type=int, default=40)
    parser.add_argument("--out", default=None)
    parser.add_argument("--markdown", default=None, help="also write the figures as markdown tables here")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_robust.common.machine import cpu_summary
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import evaluation_indices
    from keras_robust.export import export_model

    data = load_dataset(args.data, "test", batch_size=1000)
    images, _ = data.arrays()
    images = images[evaluation_indices(len(images), 64)].round(4)
    figures = {"machine": cpu_summary(), "data": "JPEG CIFAR-10 test split", "backend": args.backend,
               "clients": args.clients}
    with tempfile.TemporaryDirectory() as out:
        model = keras.saving.load_model(args.model, compile=False)
        export_model(model, out, name="model", class_names=data.class_names)
        with _server(out, args.backend, batch_window_ms=0) as ports:
            figures["unbatched"] = {f"predict {p}": _load(ports, "predict", p, images, args.predict_requests,
                                                          args.clients) for p in PREDICT_PROTOCOLS}
        with _server(out, args.backend) as ports:
            figures["one client"] = {f"predict {p}": _load(ports, "predict", p, images, args.predict_requests // 4, 1)
                                     for p in PREDICT_PROTOCOLS}
            figures["batched"] = {f"predict {p}": _load(ports, "predict", p, images, args.predict_requests,
                                                        args.clients) for p in PREDICT_PROTOCOLS}
            figures["batched"].update({f"explain {p}": _load(ports, "explain", p, images, args.explain_requests,
                                                             args.clients) for p in EXPLAIN_PROTOCOLS})
    print(json.dumps(figures, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(figures))


def markdown(figures):
    """The figures as the tables of docs/serving.md."""
    clients = figures["clients"]
    lines = [
        f"{figures['machine']}; {figures['data']}, one image per request; {figures['backend']} backend.",
        "",
        f"Predict from {clients} clients at once, dynamic batching off (`--batch-window-ms 0`) and on "
        "(default), and from one client (batching on):",
        "",
        "| protocol | off: requests/s | p50 / p95 ms | on: requests/s | p50 / p95 ms | gain | 1 client p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for protocol in PREDICT_PROTOCOLS:
        key = f"predict {protocol}"
        off, on, alone = figures["unbatched"][key], figures["batched"][key], figures["one client"][key]
        lines.append(
            f"| {protocol} | {off['requests_per_s']} | {off['p50_ms']} / {off['p95_ms']} | {on['requests_per_s']} | "
            f"{on['p50_ms']} / {on['p95_ms']} | {on['requests_per_s'] / off['requests_per_s']:.2f}× | "
            f"{alone['p50_ms']} |"
        )
    lines += ["", f"Explain (35 steps, ρ 0.1) from {clients} clients at once:", "",
              "| protocol | requests/s | p50 ms | p95 ms |", "|---|---|---|---|"]
    for protocol in EXPLAIN_PROTOCOLS:
        load = figures["batched"][f"explain {protocol}"]
        lines.append(f"| {protocol} | {load['requests_per_s']} | {load['p50_ms']} | {load['p95_ms']} |")
    return "\n".join(lines) + "\n"


class _server:
    """`keras-robust serve` in a subprocess; entering gives `(http port, grpc port)`."""

    def __init__(self, folder, backend, **limits):
        self.ports = (_free_port(), _free_port())
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in limits.items()]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keras_robust.cli", "serve", folder, "--port", str(self.ports[0]),
             "--grpc-port", str(self.ports[1]), "--backend", backend, "--log-level", "warning", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def __enter__(self):
        _wait_until_up(f"http://127.0.0.1:{self.ports[0]}/v2/health/ready")
        return self.ports

    def __exit__(self, *_):
        self.process.terminate()
        self.process.wait(30)


def _requests(kind, protocol, images, count):
    """`count` ready-to-send requests: bytes and headers for HTTP, protos for gRPC."""
    requests = []
    for i in range(count):
        image, target = images[i % len(images)][None], np.array([i % 10], np.int32)
        if protocol == "rest":
            instance = {"images": image[0].tolist(), "targets": int(target[0])} if kind == "explain" else image[0].tolist()
            body = {"instances": [instance], **({"signature_name": "explain"} if kind == "explain" else {})}
            requests.append((json.dumps(body).encode(), {}))
        elif protocol.startswith("v2"):
            requests.append(_v2_request(kind, image, target, binary=protocol == "v2-binary"))
        else:
            requests.append(_grpc_request(kind, image, target))
    return requests


def _v2_request(kind, image, target, binary):
    tensors = [("images", "FP32", image)] + ([("targets", "INT32", target)] if kind == "explain" else [])
    header, chunks = {"inputs": []}, []
    for name, datatype, value in tensors:
        tensor = {"name": name, "shape": list(value.shape), "datatype": datatype}
        if binary:
            tensor["parameters"] = {"binary_data_size": value.nbytes}
            chunks.append(value.tobytes())
        else:
            tensor["data"] = value.reshape(-1).tolist()
        header["inputs"].append(tensor)
    if binary:
        header["parameters"] = {"binary_data_output": True}
    text = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(text))} if binary else {}
    return text + b"".join(chunks), headers


def _grpc_request(kind, image, target):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "model"
    request.model_spec.signature_name = "explain" if kind == "explain" else "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image))
    if kind == "explain":
        request.inputs["targets"].CopyFrom(tf.make_tensor_proto(target))
    return request


def _sender(ports, kind, protocol):
    """A function sending one request and returning True on success (one per thread)."""
    if protocol == "grpc":
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{ports[1]}"))

        def send(request):
            stub.Predict(request, timeout=600)
            return True

        return send
    base = f"http://127.0.0.1:{ports[0]}"
    if protocol == "rest":
        url = f"{base}/v1/models/model:predict"
    else:
        url = f"{base}/v2/models/model/{'explain' if kind == 'explain' else 'infer'}"

    def send(request):
        body, headers = request
        message = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(message, timeout=600) as response:
            response.read()
            return response.status == 200

    return send


def _load(ports, kind, protocol, images, requests, clients):
    bodies = _requests(kind, protocol, images, requests)
    _sender(ports, kind, protocol)(bodies[0])  # warm-up
    latencies, errors, lock = [], [], threading.Lock()
    queue = iter(range(requests))

    def client():
        send = _sender(ports, kind, protocol)
        while True:
            with lock:
                index = next(queue, None)
            if index is None:
                return
            start = time.perf_counter()
            try:
                ok = send(bodies[index])
            except Exception:  # an HTTP or gRPC error: counted, the load goes on
                ok = False
            elapsed = time.perf_counter() - start
            with lock:
                (latencies if ok else errors).append(elapsed)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "errors": len(errors),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def _wait_until_up(url, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"The server at {url} did not come up within {timeout} s")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
