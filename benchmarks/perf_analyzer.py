"""Throughput and latency of `keras-robust serve` as Triton's perf_analyzer measures them.

    python benchmarks/perf_analyzer.py [--model runs/robust/model.keras] [--out figures.json]

perf_analyzer is Triton's own load generator: that it runs against this
server at all shows the Open Inference Protocol over HTTP and gRPC and the
model configuration and statistics extensions are what Triton's tools
expect. `benchmarks/get_perf_analyzer.sh` puts it in `--perf-analyzer`'s
folder (~/.cache/keras-robust/perf_analyzer) first when it is not there.

Exports the model (default: an untrained ResNet-20, whose requests cost what
a trained one's do) and starts `keras-robust serve` on it (ONNX Runtime)
twice: dynamic batching off (`--batch-window-ms 0`) and at its default. On
each, perf_analyzer sends `--concurrency` requests at a time of one
CIFAR-sized image in [0, 1], over V2 HTTP (binary tensors), V2 gRPC and TF
Serving's gRPC (`--service-kind tfserving`): predict to the model, explain
to `<model>-explainer` over V2 and to the model's `explain` signature over
TF Serving (a target class, the card's ρ and steps). It prints the CPU, the
commands, and a markdown table of throughput and p50/p95 latency, with the
server's own split of a request (queue and compute, from the statistics
extension).
"""

import argparse
import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "keras-robust", "perf_analyzer")
# perf_analyzer's protocol: V2 over HTTP, V2 over gRPC, TF Serving's gRPC.
PROTOCOLS = ("http", "grpc", "tfserving")
PROTOCOL_NAMES = {"http": "V2 HTTP (binary)", "grpc": "V2 gRPC", "tfserving": "TF Serving gRPC"}
KINDS = ("predict", "explain")
# The server's split of a request, as perf_analyzer reports it in microseconds (its CSV's columns).
SERVER_COLUMNS = ("Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a .keras classifier; default an untrained ResNet-20")
    parser.add_argument("--perf-analyzer", default=os.path.join(CACHE, "perf_analyzer"))
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--interval-ms", type=int, default=5000, help="a predict measurement window")
    parser.add_argument("--explain-requests", type=int, default=48, help="an explain measurement window")
    parser.add_argument("--stability-percentage", type=int, default=20,
                        help="perf_analyzer's: how far 3 windows may differ to count as stable")
    parser.add_argument("--out", default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    binary = _perf_analyzer(args.perf_analyzer)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_robust.common.machine import cpu_summary

    figures = {"machine": cpu_summary(), "concurrency": args.concurrency, "runs": []}
    print(figures["machine"], flush=True)
    with tempfile.TemporaryDirectory() as folder:
        _export(args.model, folder)
        data = _input_data(folder)
        for batching, limits in (("off", ["--batch-window-ms", "0"]), ("on", [])):
            with _server(folder, limits) as ports:
                for kind in KINDS:
                    for protocol in PROTOCOLS:
                        inputs = data[f"{kind}-tfserving" if protocol == "tfserving" else kind]
                        command = _command(binary, kind, protocol, ports, inputs, args)
                        print("$", " ".join(command), flush=True)
                        figures["runs"].append({"kind": kind, "protocol": protocol, "batching": batching,
                                                **_measure(command, binary)})
    table = markdown(figures)
    print(table)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump(figures, file, indent=2)


def markdown(figures):
    lines = [
        f"{figures['machine']}; {figures['concurrency']} concurrent requests of one 32×32×3 image; onnx backend.",
        "",
        "| request | protocol | batching | infer/s | p50 ms | p95 ms | server queue / compute ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in figures["runs"]:
        request = f"| {run['kind']} | {PROTOCOL_NAMES[run['protocol']]} | {run['batching']} |"
        if "error" in run:
            lines.append(f"{request} {run['error']} | | | |")
        else:
            server = (f"{run['server_queue_ms']} / {run['server_compute_ms']}" if "server_queue_ms" in run
                      else "not reported")
            lines.append(f"{request} {run['infer_per_s']} | {run['p50_ms']} | {run['p95_ms']} | {server} |")
    return "\n".join(lines) + "\n"


def _perf_analyzer(path):
    if not os.path.exists(path):
        print(f"perf_analyzer is not at {path}: fetching it", flush=True)
        subprocess.run(["bash", os.path.join(HERE, "get_perf_analyzer.sh"), os.path.dirname(path)], check=True)
    return path


def _export(model_path, folder):
    """Exports the model as `model` under `folder`."""
    import keras

    import keras_robust
    from keras_robust.export import export_model
    from keras_robust.models.zoo.catalog import CIFAR10_CLASS_NAMES

    model = keras.saving.load_model(model_path, compile=False) if model_path else keras_robust.resnet(20)
    export_model(model, folder, name="model", class_names=list(CIFAR10_CLASS_NAMES))


def _input_data(folder):
    """perf_analyzer's `--input-data` files: one image (and, to explain, one target class).

    Its default data are random bytes, not pixels in [0, 1], which the server
    refuses. The explainer's shapes are given whole, as its configuration has
    no implicit batch dimension; rho and steps are left out (optional: the
    card's defaults apply).
    """
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32).round(4)
    contents = {
        "predict": {"images": image.reshape(-1).tolist()},
        "explain": {"images": {"content": image.reshape(-1).tolist(), "shape": [1, 32, 32, 3]},
                    "targets": {"content": [3], "shape": [1]}},
    }
    paths = {}
    for kind, data in contents.items():
        paths[kind] = os.path.join(folder, f"{kind}.json")
        with open(paths[kind], "w", encoding="utf-8") as file:
            json.dump({"data": [data]}, file)
    # perf_analyzer 2.51's TF Serving client sends no values from a JSON file, but reads a
    # folder of raw little-endian files, one per input. A signature has no optional inputs,
    # so the explain signature gets all four (the card's rho and steps).
    raw = {"predict-tfserving": {"images": image},
           "explain-tfserving": {"images": image, "targets": np.int32([3]), "rho": np.float32([0.1]),
                                 "steps": np.int32([35])}}
    for kind, arrays in raw.items():
        paths[kind] = os.path.join(folder, kind)
        os.makedirs(paths[kind])
        for name, array in arrays.items():
            array.astype(array.dtype.newbyteorder("<")).tofile(os.path.join(paths[kind], name))
    return paths


def _command(binary, kind, protocol, ports, data, args):
    port = ports[0] if protocol == "http" else ports[1]
    if kind == "predict":
        model, window = "model", ["--measurement-interval", str(args.interval_ms)]
    else:  # a few explanations a second: windows of a request count, not of a time, stabilise
        model = "model-explainer"
        window = ["--measurement-mode", "count_windows", "--measurement-request-count", str(args.explain_requests)]
    options = []
    if protocol == "tfserving":  # signatures have dynamic shapes, which it must be told
        signature = "serving_default" if kind == "predict" else "explain"
        model, protocol = "model", "grpc"
        options = ["--service-kind", "tfserving", "--model-signature-name", signature, "--shape", "images:1,32,32,3"]
        if kind == "explain":
            options += ["--shape", "targets:1", "--shape", "rho:1", "--shape", "steps:1"]
    return [binary, "-m", model, "-i", protocol, *options, "-u", f"127.0.0.1:{port}", "--input-data", data,
            "--concurrency-range", str(args.concurrency), *window, "--stability-percentage",
            str(args.stability_percentage), "--max-trials", "10", "-f", os.path.join(os.path.dirname(data), "pa.csv")]


def _measure(command, binary):
    """perf_analyzer's figures of one run, from its CSV, or `{"error": its last line}`.

    A run that fails (no stable measurement on a busy machine, most often)
    is reported, and the others still run.
    """
    env = {**os.environ, "LD_LIBRARY_PATH": os.path.dirname(binary)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines() or ["no output"]
        print(f"perf_analyzer failed ({result.returncode}): {lines[-1]}", flush=True)
        return {"error": lines[-1]}
    with open(command[-1], encoding="utf-8") as file:
        row = next(csv.DictReader(io.StringIO(file.read())))
    figures = {
        "infer_per_s": round(float(row["Inferences/Second"]), 1),
        "p50_ms": round(int(row["p50 latency"]) / 1000, 1),
        "p95_ms": round(int(row["p95 latency"]) / 1000, 1),
    }
    if all(row.get(column) for column in SERVER_COLUMNS):  # TF Serving's API has no statistics to ask
        figures["server_queue_ms"] = round(int(row["Server Queue"]) / 1000, 2)
        figures["server_compute_ms"] = round(sum(int(row[c]) for c in SERVER_COLUMNS[1:]) / 1000, 2)
    return figures


@contextlib.contextmanager
def _server(folder, flags):
    """`keras-robust serve` in a subprocess; yields `(http port, grpc port)`."""
    ports = (_free_port(), _free_port())
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_robust.cli", "serve", folder, "--port", str(ports[0]),
         "--grpc-port", str(ports[1]), "--log-level", "warning", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(f"http://127.0.0.1:{ports[0]}/v2/health/ready", process)
        yield ports
    finally:
        process.terminate()
        process.wait(30)


def _wait_until_up(url, process, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"The server at {url} did not come up (exit code {process.poll()})")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
