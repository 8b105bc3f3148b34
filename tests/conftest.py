"""Shared fixtures (shared helpers: `tests/helpers.py`). keras_robust is imported before TensorFlow, as a user's
script does, so the tests run TensorFlow's kernels as users get them (oneDNN's: `keras_robust.common.onednn`). Two
logical CPU devices are configured before TensorFlow initialises, so `tf.distribute.MirroredStrategy` can be tested on
one CPU."""

import os

import keras_robust  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.helpers import (  # noqa: E402
    CIFAR10_ARCHIVE,
    PRETRAINED_DIR,
    TEST_LIMITS,
    TINY_CLASSES,
    running_server,
    tiny_resnet,
)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


# The fixtures that read ../shared; a test using one is marked `needs_data`.
DATA_FIXTURES = {"cifar10_archive", "pretrained_dir", "reference_images"}


def pytest_collection_modifyitems(items):
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.needs_data)


@pytest.fixture
def rng():
    return np.random.default_rng(1776)


def shared_data(path, what, variable):
    """`path`, a copy of data that lives outside the repository (../shared here).

    Missing outside CI, the test is skipped with the reason (a bare clone's
    test command stays green); missing in CI (`CI` set), it is an error.
    """
    if path.exists():
        return path
    message = f"{what} is missing at {path}; set {variable} to its path"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise FileNotFoundError(message)
    pytest.skip(message + " (without it these tests are skipped, except in CI)")


@pytest.fixture(scope="session")
def cifar10_archive():
    return shared_data(CIFAR10_ARCHIVE, "The CIFAR-10 JPEG archive", "KERAS_ROBUST_CIFAR10")


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


@pytest.fixture(scope="session")
def tiny_server(tiny_export):
    """The base URL of `tiny_export` served over HTTP (ONNX backend, `TEST_LIMITS`)."""
    from keras_robust.serving import Limits, create_app

    with running_server(create_app(str(tiny_export[0]), limits=Limits(**TEST_LIMITS))) as url:
        yield url


@pytest.fixture(scope="session")
def pretrained_dir():
    """The authors' networks as `.npz` state_dicts and their reference logits."""
    shared_data(PRETRAINED_DIR / "meta.json", "The authors' networks (meta.json)", "KERAS_ROBUST_PRETRAINED")
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
