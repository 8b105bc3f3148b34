"""Start-up cost: `keras-robust --help`, and `keras-robust serve` on the ONNX backend.

    python benchmarks/startup.py [--repeats 5]

Prints, as the median over repeats, the seconds `keras-robust --help` takes;
the seconds from starting `keras-robust serve` on an exported ResNet-20 until
`/v2/health/ready` answers, the server's resident memory then, and whether
it loaded TensorFlow (a `libtensorflow` file mapped into the process).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, os.path.dirname(HERE))
    from keras_robust.common.machine import cpu_summary

    figures = {"machine": cpu_summary(), "help_s": statistics.median(_help_seconds() for _ in range(args.repeats))}
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-c", _EXPORT, out], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        starts = [_serve_start(out) for _ in range(args.repeats)]
    figures["serve_ready_s"] = statistics.median(s["ready_s"] for s in starts)
    figures["serve_rss_mb"] = statistics.median(s["rss_mb"] for s in starts)
    figures["serve_loads_tensorflow"] = any(s["tensorflow"] for s in starts)
    print(json.dumps(figures))


_EXPORT = (
    "import sys, keras_robust\n"
    "from keras_robust.export import export_model\n"
    "export_model(keras_robust.resnet(20), sys.argv[1], name='model', formats=('onnx',))\n"
)


def _help_seconds():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from keras_robust.cli import main; sys.exit(main(['--help']))"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _serve_start(folder):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-c", "import sys; from keras_robust.cli import main; sys.exit(main())",
                               "serve", folder, "--port", str(port), "--log-level", "warning"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("keras-robust serve exited before it was ready")
                time.sleep(0.02)
        ready = time.perf_counter() - start
        with open(f"/proc/{server.pid}/status", encoding="utf-8") as file:
            rss_kb = next(int(line.split()[1]) for line in file if line.startswith("VmRSS:"))
        with open(f"/proc/{server.pid}/maps", encoding="utf-8") as file:
            tensorflow = "libtensorflow" in file.read()
        return {"ready_s": ready, "rss_mb": rss_kb / 1024, "tensorflow": tensorflow}
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
