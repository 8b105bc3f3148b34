"""What the tests share besides fixtures: paths, a tiny network, a test server and HTTP calls.

Imported everywhere as `tests.helpers` (the repository root is on pytest's
path), so it loads once; `conftest.py` holds the fixtures and the TensorFlow
set-up.
"""

import contextlib
import http.client
import json
import os
import pathlib
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_ARCHIVE = pathlib.Path(
    os.environ.get(
        "KERAS_ROBUST_CIFAR10", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    )
)
PRETRAINED_DIR = pathlib.Path(
    os.environ.get("KERAS_ROBUST_PRETRAINED", REPO_ROOT.parent / "shared" / "pretrained")
)

# Caps small enough that the 413 tests send little data.
TEST_LIMITS = dict(max_request_bytes=1_000_000, max_image_bytes=100_000, max_image_pixels=256 * 256, max_batch=16)


TINY_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny_resnet(activation="half_huber_relu", seed=0):
    """A ResNet-8 with non-trivial batch-norm statistics and residual branches.

    Freshly built, every BN is the identity and every block's last conv is
    zero; randomising them makes the export tests see the whole network.
    """
    import keras

    import keras_robust

    keras.utils.set_random_seed(seed)
    model = keras_robust.resnet(depth=8, activation=activation, name=f"tiny_{activation}")
    draw = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.gamma.assign(draw.uniform(0.5, 1.5, shape).astype("float32"))
            layer.beta.assign(draw.normal(0, 0.1, shape).astype("float32"))
            layer.moving_mean.assign(draw.normal(0, 0.1, shape).astype("float32"))
            layer.moving_variance.assign(draw.uniform(0.5, 1.5, shape).astype("float32"))
        elif isinstance(layer, keras.layers.Conv2D) and layer.name.endswith("conv2"):
            layer.kernel.assign(draw.normal(0, 0.05, layer.kernel.shape).astype("float32"))
    return model


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(app):
    """Serves `app` with uvicorn on a free localhost port in a background thread.

    Yields the base URL; the server stops when the block ends.
    """
    import uvicorn

    from keras_robust.serving.app import server_config

    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The test server did not start; see the log above")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def call(url, body=None, method=None, headers=None):
    """`(status, JSON answer)` of one request; a dict or list body is sent as JSON."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def call_announcing(url, length):
    """`(status, JSON answer)` of a POST that announces a `length`-byte body with
    `Expect: 100-continue` and reads the answer before sending it, as curl does for
    large bodies: a server refusing by Content-Length answers at once, and the
    client never writes into a connection the server has closed (EPIPE)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", parts.path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.putheader("Expect", "100-continue")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def read_answer(connection):
    """`(status, JSON body)` a server wrote on a raw socket before closing it, read to the end."""
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def run_onnx(session, **feeds):
    """`{output name: array}` of one onnxruntime run."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
