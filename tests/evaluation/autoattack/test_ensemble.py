"""`keras_robust.autoattack`: its checks, its verdicts, its checkpoint and its strategies."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_robust
from keras_robust.evaluation.autoattack import ensemble
from keras_robust.evaluation.autoattack.norms import norm_of

SHAPE = (6, 6, 3)


@pytest.fixture(scope="module")
def case():
    """A 10-class linear model, images it mostly classifies correctly (two it does not), an ε that
    breaks some and not others."""
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(int(np.prod(SHAPE)), 10)).astype("float32")
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.layers[-1].set_weights([weights, np.zeros(10, "float32")])
    images = (0.5 + 0.02 * rng.normal(size=(12, *SHAPE))).astype("float32")
    logits = images.reshape(12, -1) @ weights
    labels = logits.argmax(axis=1)
    # The L2 distance to the nearest boundary of the correctly classified ones; ε at its median.
    gaps = logits[np.arange(12), labels][:, None] - logits
    normals = np.linalg.norm(weights[:, labels].T[:, :, None] - weights[None], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        nearest = np.where(gaps > 0, gaps / normals, np.inf).min(axis=1)
    labels[:2] = (labels[:2] + 1) % 10
    return model, images, labels, float(np.median(nearest[2:]))


def test_every_image_gets_a_verdict_and_its_breaker(case):
    model, images, labels, eps = case
    result = keras_robust.autoattack(model, images, labels, norm="L2", eps=eps, progress=False)
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    assert result.clean_accuracy == pytest.approx(np.mean(predicted == labels)) == pytest.approx(10 / 12)
    assert not result.robust[:2].any() and list(result.broken_by[:2]) == ["", ""]
    np.testing.assert_array_equal(result.adversarial_images[:2], images[:2])
    broken = result.broken_by != ""
    assert broken.any() and result.robust.any()
    assert set(result.broken_by[broken]) <= set(ensemble.ATTACKS)
    np.testing.assert_array_equal(result.robust, (predicted == labels) & ~broken)
    assert result.robust_accuracy == pytest.approx(result.robust.mean())
    assert np.all(norm_of(result.adversarial_images[broken] - images[broken], "L2") <= eps + 1e-5)
    assert np.all(model.predict(result.adversarial_images[broken], verbose=0).argmax(axis=1) != labels[broken])
    np.testing.assert_array_equal(result.adversarial_images[result.robust], images[result.robust])
    summary = result.to_dict()
    assert summary["num_images"] == 12 and sum(summary[f"broken_by_{name}"] for name in ensemble.ATTACKS) == broken.sum()


@pytest.mark.parametrize("arguments, message", [
    (dict(norm="L1"), r"`norm` must be one of \('Linf', 'L2'\). Received: norm='L1'"),
    (dict(eps=0.0), "`eps` must be a finite number > 0. Received: eps=0.0"),
    (dict(eps=float("inf")), "Received: eps=inf"),
    (dict(eps="0.5"), "Received: eps='0.5'"),
    (dict(version="plus"), "Received: version='plus'"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_settings_are_refused_by_name(case, arguments, message):
    model, images, labels, _ = case
    with pytest.raises(ValueError, match=message):
        keras_robust.autoattack(model, images, labels, progress=False, **arguments)


def test_bad_inputs_are_refused_before_attacking(case):
    model, images, labels, _ = case
    with pytest.raises(ValueError, match="labels entry 12"):
        keras_robust.autoattack(model, images, np.full(12, 12), progress=False)
    with pytest.raises(ValueError, match="divide integer images by 255"):
        keras_robust.autoattack(model, (images * 255).astype("uint8"), labels, progress=False)
    with pytest.raises(ValueError, match="equal length"):
        keras_robust.autoattack(model, images, labels[:3], progress=False)
    three = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="at least 4 classes. Received: a model with 3 classes"):
        keras_robust.autoattack(three, images, labels % 3, progress=False)
    tiny = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="at least 5×5 pixels"):
        keras_robust.autoattack(tiny, images[:, :4, :4], labels, norm="L2", progress=False)


def test_an_interrupted_run_resumes_after_its_last_finished_batch(case, tmp_path, monkeypatch):
    model, images, labels, _ = case
    # ε large enough for APGD-CE to break every image: its three batches are the whole run.
    settings = dict(norm="L2", eps=2.0, batch_size=4, progress=False)
    whole = keras_robust.autoattack(model, images, labels, **settings)
    real_run, calls = ensemble._run, []

    class Killed(Exception):
        pass

    def killed_at_the_third_batch(name, *args):
        calls.append(name)
        if len(calls) == 3:
            raise Killed
        return real_run(name, *args)

    monkeypatch.setattr(ensemble, "_run", killed_at_the_third_batch)
    checkpoint = tmp_path / "autoattack.npz"
    with pytest.raises(Killed):
        keras_robust.autoattack(model, images, labels, checkpoint=checkpoint, **settings)
    monkeypatch.setattr(ensemble, "_run", lambda name, *args: (calls.append(name), real_run(name, *args))[1])
    resumed = keras_robust.autoattack(model, images, labels, checkpoint=checkpoint, **settings)
    # APGD-CE's first two batches of 4 were not run again.
    assert calls[:3] == ["apgd-ce"] * 3 and calls[3] == "apgd-ce" and calls.count("apgd-ce") == 4
    np.testing.assert_array_equal(resumed.robust, whole.robust)
    np.testing.assert_array_equal(resumed.broken_by, whole.broken_by)
    np.testing.assert_allclose(resumed.adversarial_images, whole.adversarial_images)
    with pytest.raises(ValueError, match="written for other images or settings"):
        keras_robust.autoattack(model, images, labels, checkpoint=checkpoint, **{**settings, "eps": 3.0})


@pytest.mark.slow
def test_a_mirrored_strategy_gives_the_same_verdicts(case):
    model, images, labels, eps = case
    alone = keras_robust.autoattack(model, images, labels, norm="L2", eps=eps, progress=False)
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(devices)
    shared = keras_robust.autoattack(model, images, labels, norm="L2", eps=eps, progress=False, strategy=strategy)
    np.testing.assert_array_equal(shared.robust, alone.robust)
    np.testing.assert_array_equal(shared.broken_by, alone.broken_by)
    np.testing.assert_allclose(shared.adversarial_images, alone.adversarial_images, atol=1e-5)
