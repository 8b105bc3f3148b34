"""Server memory and responsiveness under aborted uploads and large bodies.

    python benchmarks/server_abuse.py --aborts 56 --big-bodies 4

Exports a ResNet-8, serves it with `keras-robust serve` in a subprocess, then
(1) sends `--aborts` uploads that announce 31 MiB and hang up after 20 MiB,
and (2) sends `--big-bodies` concurrent 30 MiB JSON bodies (under the 32 MiB
cap) while timing `GET /v1/models/NAME` every 50 ms. Prints the server's
resident memory before, after and at its peak, and the slowest status answer.
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

import psutil

MIB = 2**20


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def aborted_upload(port, name):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: bench\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {31 * MIB}\r\n\r\n".encode())
        chunk = b" " * MIB
        for _ in range(20):
            client.sendall(chunk)


def big_body(port, name):
    # Numbers, as a real request holds: parsing them is the costly part.
    pixel = b"0.123456, "
    body = b'{"instances": [[' + pixel * ((30 * MIB - 40) // len(pixel)) + b'0.5]]}'

    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{name}:predict", data=body)
    try:
        urllib.request.urlopen(request, timeout=300).read()
    except urllib.error.HTTPError as error:
        error.read()


class Watch(threading.Thread):
    """Samples the server's RSS and the latency of its status route."""

    def __init__(self, process, url):
        super().__init__(daemon=True)
        self.process, self.url = psutil.Process(process.pid), url
        self.peak_rss, self.slowest, self.running = 0, 0.0, True

    def run(self):
        while self.running:
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            started = time.monotonic()
            urllib.request.urlopen(self.url, timeout=300).read()
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aborts", type=int, default=56)
    parser.add_argument("--big-bodies", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras_robust
    from keras_robust.export import export_model

    with tempfile.TemporaryDirectory() as work:
        export_model(keras_robust.resnet(depth=8), work, name="bench", formats=("onnx",))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "keras_robust.cli", "serve", work, "--port", str(port),
                                   "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        status = f"http://127.0.0.1:{port}/v1/models/bench"
        for _ in range(600):
            try:
                urllib.request.urlopen(status, timeout=5).read()
                break
            except OSError:
                time.sleep(0.1)
        figures = {"rss_start_mb": psutil.Process(server.pid).memory_info().rss / MIB}
        for phase, job, count in (("aborts", aborted_upload, args.aborts), ("big_bodies", big_body, args.big_bodies)):
            watch = Watch(server, status)
            watch.start()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: job(port, "bench"), range(count)))
            time.sleep(1)
            watch.running = False
            watch.join()
            figures[f"{phase}_peak_rss_mb"] = watch.peak_rss / MIB
            figures[f"{phase}_rss_after_mb"] = psutil.Process(server.pid).memory_info().rss / MIB
            figures[f"{phase}_slowest_status_s"] = watch.slowest
        server.terminate()
        log = server.communicate(timeout=30)[1].decode()
        figures["tracebacks_in_log"] = log.count("Traceback")
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}, indent=1))


if __name__ == "__main__":
    main()
