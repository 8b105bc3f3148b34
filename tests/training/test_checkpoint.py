"""Training state survives kills at any instant: checkpoints, pointer, log, restore."""

import json
import os

import numpy as np
import pytest

from keras_robust.reporting.training_report import TrainingReport
from keras_robust.training import checkpoint
from keras_robust.training.loop import TrainingConfig, build_model
from tests.kill_harness import kill_and_resume


def small_state(tmp_path, rng):
    config = TrainingConfig(depth=8, robust=True, epochs=1, batch_size=16)
    model = build_model(config, 3, (8, 8, 3))
    model.build((None, 8, 8, 3))
    model.psi_accumulator.assign(float(rng.uniform(1, 5)))
    return model


def test_a_corrupt_newest_checkpoint_is_named_and_the_previous_one_used(tmp_path, rng):
    backup = tmp_path / "backup"
    model = small_state(tmp_path, rng)
    checkpoint.save_checkpoint(backup, model, {"epoch": 1, "rows": [{"epoch": 0, "loss": 1.0}]})
    checkpoint.save_checkpoint(backup, model, {"epoch": 2, "rows": [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.9}]})
    checkpoint.save_checkpoint(backup, model, {"epoch": 3, "rows": []})
    assert sorted(os.listdir(backup)) == ["checkpoint.json", "epoch-00002", "epoch-00003"]
    weights = backup / "epoch-00003" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:-100])  # a torn write
    with pytest.warns(UserWarning, match="epoch-00003.*does not match its checksum.*previous one.*after epoch 2"):
        folder, state = checkpoint.restore_latest(backup)
    assert folder.endswith("epoch-00002") and state["epoch"] == 2
    (backup / "epoch-00002" / "state.json").unlink()
    with pytest.raises(checkpoint.CorruptCheckpointError, match="state.json is missing.*delete .*backup to start"):
        checkpoint.restore_latest(backup)


def test_a_backup_without_a_readable_pointer_is_refused(tmp_path, rng):
    backup = tmp_path / "backup"
    checkpoint.save_checkpoint(backup, small_state(tmp_path, rng), {"epoch": 1, "rows": []})
    (backup / "checkpoint.json").write_text("{not json")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="no readable checkpoint.json"):
        checkpoint.restore_latest(backup)
    assert checkpoint.restore_latest(tmp_path / "nothing") is None


def test_nonfinite_count_sees_the_psi_accumulator(tmp_path, rng):
    model = small_state(tmp_path, rng)
    assert checkpoint.nonfinite_count(model) == 0
    model.psi_accumulator.assign(float("nan"))
    assert checkpoint.nonfinite_count(model) == 1


@pytest.mark.slow
@pytest.mark.multiprocess
def test_training_killed_at_random_instants_resumes_without_loss(tmp_path, rng):
    figures = kill_and_resume(tmp_path, rng, attempts=8)
    assert figures["problems"] == []
    assert figures["kills"] >= 4 and figures["kills_mid_write"] >= 2, figures
    assert figures["resumed_intact"] == figures["kills"] and figures["completed"]
    assert figures["summary_epochs"] == 12


@pytest.mark.slow
def test_a_resumed_run_is_the_uninterrupted_run(tmp_path, rng):
    from keras_robust.training.loop import train

    data = rng.random((64, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 64)
    config = TrainingConfig(depth=8, robust=True, epochs=2, batch_size=16, jit_compile="off")
    train(config, data, tmp_path / "whole", verbose=0)
    config.epochs = 1
    train(config, data, tmp_path / "split", verbose=0)
    config.epochs = 2
    with pytest.warns(UserWarning, match="epochs=1 there, 2 now"):  # more epochs: a named, forced resumption
        train(config, data, tmp_path / "split", force=True, verbose=0)
    _, whole = checkpoint.restore_latest(tmp_path / "whole" / "backup")
    _, split = checkpoint.restore_latest(tmp_path / "split" / "backup")
    # The tandem/logit draws continue where they stopped; without the restore they would repeat epoch 1's.
    assert whole["epoch"] == split["epoch"] == 2
    assert whole["seed_state"] == split["seed_state"]
    # Data order and augmentation are functions of the epoch's number, so the weights agree too.
    models = []
    for run in ("whole", "split"):
        folder, _ = checkpoint.restore_latest(tmp_path / run / "backup")
        model = build_model(config, 3, (8, 8, 3))
        model.build((None, 8, 8, 3))
        model.load_weights(os.path.join(folder, "model.weights.h5"))
        models.append(model)
    for a, b in zip(*(m.weights for m in models)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert [r["loss"] for r in whole["rows"]] == pytest.approx([r["loss"] for r in split["rows"]], rel=1e-5)
    previous = json.loads((tmp_path / "whole" / "backup" / "epoch-00001" / "state.json").read_text())
    assert previous["seed_state"] != whole["seed_state"]


def test_weights_gone_nan_on_an_epochs_last_batch_are_never_saved(tmp_path, rng):
    """The last update of an epoch can diverge after the last finite loss was logged."""
    import keras

    model = small_state(tmp_path, rng)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    state = checkpoint.RunState(tmp_path)
    report = TrainingReport(state.run, state)
    for callback in (state, report):
        callback.set_model(model)
    for callback in (state, report):
        callback.on_epoch_end(0, {"loss": 1.2, "psi": 220.0})
    pointer = (tmp_path / "backup" / "checkpoint.json").read_bytes()
    kernel = model.classifier.get_layer("logits").kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 0, np.nan, kernel.numpy()))
    for callback in (state, report):
        callback.on_epoch_end(1, {"loss": 1.1, "psi": 230.0})  # the logged loss is still finite
    assert state.failure == f"epoch 2: {kernel.shape[0]} weights are NaN or infinite after its last update"
    assert model.stop_training
    assert (tmp_path / "backup" / "checkpoint.json").read_bytes() == pointer
    assert [int(line.split(",")[0]) for line in (tmp_path / "log.csv").read_text().splitlines()[1:]] == [0]
