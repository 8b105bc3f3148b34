import csv
import json
import os
import re
import types

import pytest

from keras_robust import cli
from keras_robust.training.checkpoint import nonfinite_count, restore_latest
from keras_robust.training.loop import (
    NonFiniteLossError,
    TrainingConfig,
    build_model,
    check_same_run,
    learning_rate_at,
    run_identity,
    train,
)
from keras_robust.training.run_folder import RunFolder


def test_learning_rate_schedule_scales_with_epochs_and_replicas():
    reference = TrainingConfig(epochs=200)
    assert learning_rate_at(0, reference) == pytest.approx(0.1)
    assert learning_rate_at(169, reference) == pytest.approx(0.1)
    assert learning_rate_at(170, reference) == pytest.approx(0.01)
    assert learning_rate_at(195, reference) == pytest.approx(0.001)
    short = TrainingConfig(epochs=40)
    lrs = [learning_rate_at(e, short) for e in (33, 34, 38, 39)]
    assert lrs == pytest.approx([0.1, 0.01, 0.01, 0.001])
    assert learning_rate_at(0, reference, replicas=4) == pytest.approx(0.4)


def test_the_imagenet_recipe_defaults_and_schedule():
    config = TrainingConfig(recipe="imagenet")
    assert (config.depth, config.epochs, config.batch_size, config.learning_rate) == (50, 90, 64, 0.025)
    lrs = [learning_rate_at(e, config) for e in (29, 30, 59, 60, 79, 80)]
    assert lrs == pytest.approx([0.025, 0.0025, 0.0025, 0.00025, 0.00025, 0.000025])
    assert learning_rate_at(0, TrainingConfig(recipe="imagenet", epochs=9), replicas=8) == pytest.approx(0.2)
    assert TrainingConfig().depth == 44 and TrainingConfig(recipe="cifar").epochs == 200
    with pytest.raises(ValueError, match="trains ResNet-50 only. Received: depth=44"):
        TrainingConfig(recipe="imagenet", depth=44)
    with pytest.raises(ValueError, match="Received: recipe='coco'"):
        TrainingConfig(recipe="coco")


@pytest.mark.slow
def test_the_imagenet_recipe_trains_resnet50_on_streamed_224_crops(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for name in ("ant", "bee"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (240, 260, 3), dtype="uint8")
                Image.fromarray(pixels).save(tmp_path / "data" / split / name / f"{i}.JPEG", format="JPEG")
    config = TrainingConfig(recipe="imagenet", robust=True, epochs=1, batch_size=2, jit_compile="off")
    summary = train(config, str(tmp_path / "data"), tmp_path / "run", verbose=0)
    assert summary["train_examples"] == 4 and summary["test"]["num_examples"] == 2
    assert summary["psi"] > 220  # R moved: the regulariser ran on the 224x224 input gradient
    row = next(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert 0 < float(row["l_adv"]) < float(row["loss"]) < 50
    model = build_model(config, 2, (224, 224, 3))
    assert model.classifier.name == "resnet50"
    assert restore_latest(str(tmp_path / "run" / "backup"))[1]["epoch"] == 1


def small_data(rng, n=48):
    return rng.random((n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.slow
def test_resume_continues_from_checkpoint_with_psi(rng, tmp_path):
    data = small_data(rng)
    config = TrainingConfig(depth=8, robust=True, epochs=2, batch_size=16, jit_compile="off")
    first = train(config, data, tmp_path, verbose=0)
    # Three balanced classes: CE stays below L_target = 1.5, so R grows every batch.
    assert first["psi_accumulator"] > 0
    folder, state = restore_latest(tmp_path / "backup")
    assert state["epoch"] == 2
    restored = build_model(config, 3, (8, 8, 3))
    restored.load_weights(os.path.join(folder, "model.weights.h5"))
    assert float(restored.psi_accumulator.numpy()) == pytest.approx(first["psi_accumulator"])
    # Rerun with more epochs: only the new epoch trains, and R continues from
    # the saved value instead of restarting at 0.
    config.epochs = 3
    second = train(config, data, tmp_path, force=True, verbose=0)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert second["psi_accumulator"] > first["psi_accumulator"]
    assert float(rows[2]["psi"]) > float(rows[1]["psi"]) > float(rows[0]["psi"])


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(rng, tmp_path):
    config = TrainingConfig(depth=8, robust=True, epochs=1, batch_size=16, jit_compile="off")
    train(config, small_data(rng), tmp_path, verbose=0)
    good = (tmp_path / "backup" / "checkpoint.json").read_bytes()
    # Valid data, but a learning rate that makes the loss diverge in epoch 2.
    config.epochs, config.learning_rate = 2, 1e30
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch \d+.*last good checkpoint.*rerun with the new "
                                                  r"--lr and --force"):
        train(config, small_data(rng), tmp_path, force=True, verbose=0)
    assert (tmp_path / "backup" / "checkpoint.json").read_bytes() == good
    folder, state = restore_latest(tmp_path / "backup")
    assert state["epoch"] == 1
    restored = build_model(config, 3, (8, 8, 3))
    restored.load_weights(os.path.join(folder, "model.weights.h5"))
    assert nonfinite_count(restored) == 0
    # The advice works: a lower rate with force resumes from the kept checkpoint and finishes epoch 2.
    config.learning_rate = 0.01
    train(config, small_data(rng), tmp_path, force=True, verbose=0)
    assert [int(row["epoch"]) for row in csv.DictReader(open(tmp_path / "log.csv"))] == [0, 1]


@pytest.mark.slow
def test_cli_robust_training_on_real_cifar10_subset_reduces_loss(cifar10_archive, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        [
            "train", "--data", str(cifar10_archive), "--robust", "--depth", "8",
            "--epochs", "4", "--batch-size", "64", "--limit-train", "640",
            "--limit-test", "200", "--jit-compile", "off", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "final psi" in printed and "test accuracy" in printed
    rows = list(csv.DictReader(open(out / "log.csv")))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert {"ce", "l_adv", "psi", "accuracy"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["num_examples"] == 200
    assert summary["class_names"][0] == "airplane"
    assert (out / "model.keras").exists() and (out / "tensorboard").is_dir()


def test_cli_reports_bad_data_path_without_traceback(tmp_path, capsys):
    code = cli.main(["train", "--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err
    assert "missing.tar.gz" in err and "Traceback" not in err


def test_cli_rejects_bad_depth(tmp_path, capsys):
    code = cli.main(["train", "--data", str(tmp_path), "--depth", "45", "--out", str(tmp_path / "o")])
    assert code == 1
    assert "Received: depth=45" in capsys.readouterr().err


@pytest.mark.slow
def test_log_has_one_row_per_epoch_after_a_divergence_and_resume(rng, tmp_path):
    data = small_data(rng)
    config = TrainingConfig(depth=8, robust=True, epochs=1, batch_size=16, jit_compile="off")
    train(config, data, tmp_path, verbose=0)
    config.epochs, config.learning_rate = 2, 1e30
    with pytest.raises(NonFiniteLossError):
        train(config, data, tmp_path, force=True, verbose=0)
    config.learning_rate = 0.01
    train(config, data, tmp_path, force=True, verbose=0)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert all(float(r["loss"]) == float(r["loss"]) for r in rows)  # no NaN row left
    assert not any(key.startswith("val_") for key in rows[0])
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert "Training curves" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_rerun_with_another_network_names_what_differs(rng, tmp_path, capsys):
    data = small_data(rng)
    train(TrainingConfig(depth=8, epochs=1, batch_size=16, jit_compile="off"), data, tmp_path, verbose=0)
    with pytest.raises(ValueError, match=r"other settings \(depth=8 there, 14 now; robust=False there, True now\)"):
        train(TrainingConfig(depth=14, robust=True, epochs=1, batch_size=16, jit_compile="off"), data,
              tmp_path, verbose=0)
    more = TrainingConfig(depth=8, epochs=2, batch_size=16, learning_rate=0.05, jit_compile="off")
    with pytest.raises(ValueError, match=r"epochs=1 there, 2 now; learning_rate=0.1 there, 0.05 now"):
        train(more, data, tmp_path, verbose=0)
    with pytest.raises(ValueError, match=r"limit_train=None there, 8 now"):
        train(TrainingConfig(depth=8, epochs=1, batch_size=16, jit_compile="off"), data, tmp_path, limit_train=8,
              verbose=0)
    with pytest.warns(UserWarning, match="resuming it with the new ones"):
        summary = train(more, data, tmp_path, force=True, verbose=0)
    assert summary["config"]["epochs"] == 2 and len(list(csv.DictReader(open(tmp_path / "log.csv")))) == 2


def test_train_names_a_config_that_is_not_a_training_config(rng, tmp_path):
    with pytest.raises(ValueError, match=r"`config` must be a TrainingConfig. Received: config=\{'depth': 8\}"):
        train({"depth": 8}, small_data(rng), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("recorded, now, differs", [
    ({"adversarial_training": True, "l2_min": True}, "l2min", None),
    ({"adversarial_training": True, "l2_min": False}, "bounded", None),
    ({"adversarial_training": False, "l2_min": False}, None, None),
    ({"adversarial_training": True, "l2_min": True}, "bounded", "adversarial_training='l2min' there, 'bounded' now"),
    ({"adversarial_training": False, "l2_min": False}, "l2min", "adversarial_training=None there, 'l2min' now"),
])
def test_runs_recorded_with_the_earlier_adversarial_fields_resume(tmp_path, recorded, now, differs):
    config = TrainingConfig(depth=8, adversarial_training=now)
    data = types.SimpleNamespace(class_names=["a", "b"], image_shape=(8, 8, 3))
    earlier = {"recipe": "cifar", "depth": 8, "robust": False, **recorded, "num_classes": 2, "image_shape": [8, 8, 3]}
    run = RunFolder(tmp_path)
    run.write_json(run.identity, earlier)
    if differs is None:
        check_same_run(run, run_identity(config, data))
    else:
        with pytest.raises(ValueError, match=re.escape(f"other settings ({differs})")):
            check_same_run(run, run_identity(config, data))


@pytest.mark.slow
def test_cli_says_a_finished_run_is_complete(cifar10_archive, tmp_path, capsys):
    argv = ["train", "--data", str(cifar10_archive), "--depth", "8", "--epochs", "1", "--batch-size", "64",
            "--limit-train", "128", "--limit-test", "64", "--jit-compile", "off",
            "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert "already holds this run, complete after 1 epochs" in second
    assert first.splitlines()[-1] == second.splitlines()[-1]  # the same summary


@pytest.mark.slow
def test_a_divergence_before_any_checkpoint_says_there_is_none(rng, tmp_path):
    config = TrainingConfig(depth=8, robust=True, epochs=1, batch_size=16, learning_rate=1e30, jit_compile="off")
    with pytest.raises(NonFiniteLossError, match="no checkpoint to resume from") as raised:
        train(config, small_data(rng), tmp_path, verbose=0)
    assert "last good checkpoint" not in str(raised.value)
    assert not (tmp_path / "backup").exists() or not any((tmp_path / "backup").iterdir())
