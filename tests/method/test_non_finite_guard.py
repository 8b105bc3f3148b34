"""A non-finite training step never reaches the weights, and `fit` stops before any callback sees it."""

import contextlib
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_robust
from keras_robust import NonFiniteTrainingError, RobustModel
from keras_robust.method import non_finite_guard
from tests.helpers import REPO_ROOT


class WeightWatcher(keras.callbacks.Callback):
    """Copies every variable of the classifier at each batch's end, and notes any non-finite one."""

    def __init__(self):
        super().__init__()
        self.snapshots, self.saw_non_finite = [], False

    def on_train_batch_end(self, batch, logs=None):
        values = [np.array(v) for v in self.model.classifier.get_weights()]
        self.saw_non_finite |= not all(np.isfinite(v).all() for v in values)
        self.snapshots.append(values)

    on_epoch_end = on_train_batch_end


def strategy_scope(name):
    if name == "default":
        return contextlib.nullcontext()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    return tf.distribute.MirroredStrategy(devices).scope()


@pytest.mark.slow
def test_a_divergence_is_stopped_before_any_callback_or_weight_sees_it(tmp_path):
    stop_a_divergence("default", tmp_path)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_divergence_under_mirrored_strategy_is_stopped_the_same_way(tmp_path):
    """In a process of its own: TensorFlow's collective instance keys restart with each strategy, and
    after a `fit` stopped part-way under one, the next strategy of the process was seen to pair its
    first all-reduce with a leftover ("Shape mismatch in the collective instance")."""
    script = ("import tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
              "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
              "import pathlib, sys; from tests.method.test_non_finite_guard import stop_a_divergence; "
              "stop_a_divergence('mirrored', pathlib.Path(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", "import keras_robust; " + script, str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def stop_a_divergence(strategy, tmp_path):
    """Trains into a divergence under `strategy` and checks what the guard promises (docs/method.md §3a)."""
    rng = np.random.default_rng(1776)
    x = rng.random((64, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 64)
    with strategy_scope(strategy):
        keras.utils.set_random_seed(0)
        model = RobustModel(keras_robust.resnet(depth=8, num_classes=3, input_shape=(8, 8, 3)))
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    watcher = WeightWatcher()
    callbacks = [
        watcher,
        # A sane first epoch, then a learning rate that makes the second diverge.
        keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 if epoch == 0 else 1e30),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "every_batch.weights.h5"), save_weights_only=True,
                                        save_freq=1),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
        keras.callbacks.TensorBoard(str(tmp_path / "tensorboard")),
    ]
    with pytest.raises(NonFiniteTrainingError) as raised:
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks)
    error = raised.value
    message = str(error)
    assert re.search(r"non-finite at epoch 2, batch \d+: .*cross-entropy .*, l_adv .*, psi ", message), message
    assert "Lower the learning rate" in message
    assert error.epoch == 2 and set(error.values) == {"ce", "l_adv", "psi"}
    assert not watcher.saw_non_finite
    # The failed step changed nothing, batch norm's moving statistics included.
    batches_before = 4 + error.batch - 1
    assert len(watcher.snapshots) == batches_before + 1  # + the first epoch's end
    for now, before in zip(model.classifier.get_weights(), watcher.snapshots[-1]):
        np.testing.assert_array_equal(now, before)
    saved = RobustModel(keras_robust.resnet(depth=8, num_classes=3, input_shape=(8, 8, 3)))
    saved.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    saved.build((None, 8, 8, 3))
    saved.optimizer.build(saved.trainable_variables)
    saved.load_weights(str(tmp_path / "every_batch.weights.h5"))
    assert all(np.isfinite(w).all() for w in saved.get_weights())
    assert "non_finite_record" not in "".join(os.listdir(tmp_path))


class NanGradient(keras.layers.Layer):
    """Passes its input through, and a NaN gradient back."""

    def call(self, x):
        @tf.custom_gradient
        def identity(x):
            return tf.identity(x), lambda upstream: upstream * np.nan

        return identity(x)


def test_a_step_with_finite_loss_but_non_finite_gradients_is_not_applied(rng):
    keras.utils.set_random_seed(0)
    classifier = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), NanGradient()])
    model = RobustModel(classifier, robust=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in classifier.get_weights()]
    with pytest.raises(NonFiniteTrainingError, match="epoch 1, batch 1: the gradients had NaN") as raised:
        model.fit(rng.random((8, 4)).astype("float32"), rng.integers(0, 3, 8), batch_size=8, verbose=0)
    assert np.isfinite(raised.value.values["ce"])
    assert "l_adv" not in str(raised.value)  # standard training has no regulariser to name
    for now, then in zip(classifier.get_weights(), before):
        np.testing.assert_array_equal(now, then)


def test_the_guard_runs_first_however_callbacks_are_passed(rng):
    keras.utils.set_random_seed(0)
    model = RobustModel(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), robust=False)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    order = []
    spy = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: order.append("spy"))
    x, y = rng.random((8, 4)).astype("float32"), rng.integers(0, 3, 8)
    history = model.fit(x, y, 8, 1, 0, [spy])  # callbacks given by position
    assert order == ["spy"] and "non_finite_record" not in history.history
    listed = keras.callbacks.CallbackList([spy], model=model)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=listed)
    assert isinstance(listed.callbacks[0], non_finite_guard.StopOnNonFiniteStep)
    assert sum(isinstance(c, non_finite_guard.StopOnNonFiniteStep) for c in listed.callbacks) == 1


def test_the_record_keeps_the_first_failed_step_of_the_epoch():
    record = non_finite_guard.NonFiniteRecord()
    record.update_state(0, 2.0, 0.1, 220.0)
    assert record.failure() is None
    record.update_state(2, 3.0, np.inf, 230.0)
    record.update_state(1, np.nan, np.nan, np.nan)
    assert record.failure() == {"steps": 3, "failed_step": 2, "failure": 2, "ce": 3.0, "l_adv": np.inf, "psi": 230.0}
    record.reset_state()
    assert record.failure() is None
