"""`keras_robust.method.replicated_attack`, and ARA / explanations shared out over replicas:
two logical CPUs in this process, and two worker processes of one cluster."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust import AdversarialExplainer, RobustModel, ara, resnet
from keras_robust.method.attacks import AttackSanityError, attack_details
from keras_robust.method.replicated_attack import attack_on_replicas
from tests.multiworker_harness import start_workers, wait_all


@pytest.fixture
def two_cpus():
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")][:2])


@pytest.fixture
def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="tanh"),
                             keras.layers.Flatten(), keras.layers.Dense(5)])


def test_shards_are_gathered_in_the_original_order(model, rng, two_cpus):
    images = rng.random((7, 8, 8, 3)).astype("float32")  # odd: the last shard is padded
    labels = np.argmax(model.predict(images, verbose=0), axis=1)
    settings = dict(rho=5.0, steps=30, mode="l2min", momentum=0.9)
    shared = attack_on_replicas(model, images, labels, strategy=two_cpus, **settings)
    alone = attack_details(model, images, labels, **settings)
    assert shared.rmse.shape == (7,) and isinstance(shared.rmse, np.ndarray)
    np.testing.assert_allclose(shared.rmse, alone.rmse.numpy(), rtol=1e-5)
    np.testing.assert_allclose(shared.delta, alone.delta.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(shared.first_met_step, alone.first_met_step.numpy())


def test_the_sanity_check_covers_every_shard(model, rng, two_cpus):
    images = rng.random((4, 8, 8, 3)).astype("float32")
    labels = np.argmax(model.predict(images, verbose=0), axis=1)
    with pytest.raises(AttackSanityError, match="of 4 images did not meet the l2min criterion"):
        attack_on_replicas(model, images, labels, strategy=two_cpus, rho=1e-4, steps=4, mode="l2min")


@pytest.mark.slow
def test_ara_and_explanations_under_a_strategy_match_one_device(model, rng, two_cpus):
    images = rng.random((9, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 5, 9)
    alone = ara(model, images, labels, steps=40, rho=5.0, batch_size=2, progress=False)
    with two_cpus.scope():
        shared = ara(model, images, labels, steps=40, rho=5.0, batch_size=2, progress=False)
    np.testing.assert_allclose(shared.attack_min_rmse, alone.attack_min_rmse, rtol=1e-5)
    np.testing.assert_allclose(shared.btr_min_rmse, alone.btr_min_rmse, rtol=1e-5)
    assert shared.clean_accuracy == alone.clean_accuracy
    explainer = AdversarialExplainer(model, steps=6, batch_size=3)
    one, two = explainer.explain_standard(images[:3]), explainer.explain_standard(images[:3], strategy=two_cpus)
    np.testing.assert_allclose(two.delta, one.delta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two.confidence_after, one.confidence_after, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_evaluate_on_two_workers_gives_the_one_process_result(tmp_path):
    """`keras-robust evaluate --strategy multiworker` on a 2-process cluster: each
    worker attacks half of every batch, the chief alone writes, and the figures are
    those of one process."""
    from PIL import Image

    keras.utils.set_random_seed(0)
    RobustModel(resnet(depth=8, num_classes=3, input_shape=(8, 8, 3))).save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cow"):
        for split in ("train", "test"):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype="uint8")).save(folder / f"{i}.png")

    def command(out, strategy):
        return ["-m", "keras_robust.cli", "evaluate", tmp_path / "model.keras", "--data", tmp_path / "data",
                "--n-images", "11", "--steps", "40", "--batch-size", "3", "--out", out, "--strategy", strategy,
                "--cache-dir", tmp_path / "cache"]

    wait_all(start_workers(lambda index: command(tmp_path / "one", "default"), 1, tmp_path, tag="one"),
             timeout=240)
    wait_all(start_workers(lambda index: command(tmp_path / "two", "multiworker"), 2, tmp_path, tag="two"),
             timeout=240)
    one, two = (json.loads((tmp_path / name / "evaluation.json").read_text()) for name in ("one", "two"))
    assert two["num_images"] == 11
    for key in ("attack_ara", "btr_ara", "clean_accuracy"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    rmse_one, rmse_two = np.load(tmp_path / "one" / "min_rmse.npz"), np.load(tmp_path / "two" / "min_rmse.npz")
    np.testing.assert_allclose(rmse_two["attack"], rmse_one["attack"], rtol=1e-5)
    assert "written by the chief" in (tmp_path / "two-worker1.log").read_text()
