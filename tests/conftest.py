"""Shared fixtures. Two logical CPU devices are configured before TensorFlow
initialises, so `tf.distribute.MirroredStrategy` can be tested on one CPU."""

import contextlib
import http.client
import json
import os
import pathlib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_ARCHIVE = pathlib.Path(
    os.environ.get(
        "KERAS_ROBUST_CIFAR10", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    )
)


@pytest.fixture
def rng():
    return np.random.default_rng(1776)


@pytest.fixture(scope="session")
def cifar10_archive():
    if not CIFAR10_ARCHIVE.exists():
        raise FileNotFoundError(
            f"The shared CIFAR-10 archive is missing at {CIFAR10_ARCHIVE}; set "
            "KERAS_ROBUST_CIFAR10 to its path."
        )
    return CIFAR10_ARCHIVE


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


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """`(base_dir, name, model)`: a half-Huber ResNet-8 exported in both formats."""
    from keras_robust.export import export_model

    base = tmp_path_factory.mktemp("exports")
    model = tiny_resnet()
    export_model(model, str(base), name="tiny", class_names=TINY_CLASSES)
    return base, "tiny", model


@pytest.fixture(scope="session")
def start_server():
    """`start_server(app)`: a context manager serving `app`, yielding its URL."""
    return running_server


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


def run_onnx(session, **feeds):
    """`{output name: array}` of one onnxruntime run."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


@pytest.fixture(scope="session")
def sessions(tiny_export):
    """onnxruntime sessions on `tiny_export`'s two graphs, as the server runs them."""
    base, name, _ = tiny_export
    return {
        endpoint: onnxruntime.InferenceSession(
            str(base / name / f"{name}-1-{endpoint}.onnx"), providers=["CPUExecutionProvider"]
        )
        for endpoint in ("predict", "explain")
    }


# Caps small enough that the 413 tests send little data.
TEST_LIMITS = dict(max_request_bytes=1_000_000, max_image_bytes=100_000, max_image_pixels=256 * 256, max_batch=16)


@pytest.fixture(scope="session")
def tiny_server(tiny_export):
    """The base URL of `tiny_export` served over HTTP (ONNX backend, `TEST_LIMITS`)."""
    from keras_robust.serving import Limits, create_app

    with running_server(create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS))) as url:
        yield url


PRETRAINED_DIR = pathlib.Path(
    os.environ.get("KERAS_ROBUST_PRETRAINED", REPO_ROOT.parent / "shared" / "pretrained")
)


@pytest.fixture(scope="session")
def pretrained_dir():
    """The authors' networks as `.npz` state_dicts and their reference logits."""
    if not (PRETRAINED_DIR / "meta.json").exists():
        raise FileNotFoundError(
            f"The authors' networks are missing at {PRETRAINED_DIR}; set "
            "KERAS_ROBUST_PRETRAINED to the folder that holds meta.json."
        )
    return PRETRAINED_DIR


@pytest.fixture(scope="session")
def reference_images(cifar10_archive):
    """The first 200 images of the JPEG test split (class index, then file name), pixels / 255,
    decoded with Pillow straight from the archive, as the reference logits were."""
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(cifar10_archive) as archive:
        members = sorted(
            (m for m in archive.getmembers() if "/test/" in m.name and m.name.endswith(".jpg")),
            key=lambda m: (TINY_CLASSES.index(m.name.split("/")[-2]), m.name.split("/")[-1]),
        )[:200]
        return np.stack([
            np.asarray(Image.open(io.BytesIO(archive.extractfile(m).read())).convert("RGB"), "float32") / 255.0
            for m in members
        ])
