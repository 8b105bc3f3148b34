"""Shared fixtures. Two logical CPU devices are configured before TensorFlow
initialises, so `tf.distribute.MirroredStrategy` can be tested on one CPU."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
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
