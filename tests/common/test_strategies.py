"""`keras_robust.common.strategies`, and RobustModel on real multi-worker clusters of local processes."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust.common.strategies import (
    STRATEGIES,
    agreed_value,
    collective_implementation,
    is_chief,
    is_multi_worker,
    make_strategy,
)
from keras_robust.training import checkpoint
from tests.multiworker_harness import fit_on_workers, kill_all, start_workers, train_on_workers


def test_make_strategy_names_the_choices():
    with pytest.raises(ValueError, match=r"one of \('default', 'mirrored', 'multiworker'\). Received: strategy='tpu'"):
        make_strategy("tpu")
    assert STRATEGIES == ("default", "mirrored", "multiworker")


def test_gpus_talk_over_nccl_and_cpus_over_rings():
    implementation = tf.distribute.experimental.CommunicationImplementation
    assert collective_implementation(True) == implementation.NCCL
    assert collective_implementation(False) == implementation.RING


def test_one_process_is_its_own_chief():
    strategy = make_strategy("default")
    assert is_chief(strategy) and not is_multi_worker(strategy)
    assert agreed_value(strategy, 7) == 7


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_workers_match_one_worker_with_twice_the_batch(tmp_path):
    """Data-level sharding splits each global batch between the workers, the
    gradients are summed across them and ψ's accumulator follows the globally
    reduced cross-entropy, so 2 workers × 8 images train exactly as 1 × 16."""
    psi2, ce2, weights2 = fit_on_workers(tmp_path, 2, global_batch=16, steps=3, kind="plain", strategy="multiworker")
    psi1, ce1, weights1 = fit_on_workers(tmp_path, 1, global_batch=16, steps=3, kind="plain", strategy="default")
    assert psi1 > 220  # R moved, so ψ depends on the reduced cross-entropy
    assert psi2 == pytest.approx(psi1, rel=1e-6)
    np.testing.assert_allclose(ce2, ce1, rtol=1e-5)
    for a, b in zip(weights2, weights1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_workers_with_batchnorm_match_two_devices_of_one_machine(tmp_path, monkeypatch):
    """With BatchNormalization each replica normalises by its own batch's
    statistics (as the reference's DataParallel does), so 2 workers × 8 differ
    from 1 × 16 by design; they must match 2 devices × 8 in one process, where
    the per-replica arithmetic is the same. Tolerance: float32 summation order
    of the cross-worker all-reduce, rtol 1e-4. Both run Eigen's kernels: with
    oneDNN's, the two set-ups round the fused batch norm's gradient apart, and
    the regulariser, through batch norms of 32 values a channel here, carries
    that to 1.4e-4 in the weights after three steps (1.9e-6 with Eigen's)."""
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    psi2, ce2, weights2 = fit_on_workers(tmp_path, 2, global_batch=16, steps=3, kind="batchnorm",
                                         strategy="multiworker")
    psi1, ce1, weights1 = fit_on_workers(tmp_path, 1, global_batch=16, steps=3, kind="batchnorm",
                                         strategy="two-cpus")
    assert psi2 == pytest.approx(psi1, rel=1e-4)
    np.testing.assert_allclose(ce2, ce1, rtol=1e-4)
    for a, b in zip(weights2, weights1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_killed_worker_run_resumes_from_the_last_checkpoint_with_nothing_lost(tmp_path):
    """SIGKILL one of two workers mid-run: the other stops with a clear error, both
    restart with the same command, and the run resumes from its last checkpoint and
    ends with the weights and ψ of an uninterrupted run, each epoch logged once."""
    epochs = 3
    whole = tmp_path / "whole"
    train_on_workers(tmp_path, whole, epochs, tag="whole")

    interrupted = tmp_path / "interrupted"
    processes = train_on_workers(tmp_path, interrupted, epochs, tag="killed", kill_after_checkpoint=1.0)
    survivor, survivor_log = processes[0]
    try:
        assert survivor.wait(timeout=120) != 0
    finally:
        kill_all(processes)
    assert "Another worker of the cluster stopped" in open(survivor_log).read()
    resumed_from = checkpoint.restore_latest(str(interrupted / "backup"))[1]["epoch"]
    assert 1 <= resumed_from < epochs
    train_on_workers(tmp_path, interrupted, epochs, tag="restarted")
    assert f"Epoch {resumed_from + 1}/{epochs}" in open(tmp_path / "restarted-worker0.log").read()

    rows = [line.split(",")[0] for line in (interrupted / "log.csv").read_text().splitlines()[1:]]
    assert rows == [str(epoch) for epoch in range(epochs)]  # zero-based, as Keras counts
    done, expected = (json.loads((folder / "summary.json").read_text()) for folder in (interrupted, whole))
    assert done["psi_accumulator"] == pytest.approx(expected["psi_accumulator"], rel=1e-5)
    final, reference = (keras.saving.load_model(folder / "model.keras") for folder in (interrupted, whole))
    for a, b in zip(final.weights, reference.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_workers_that_read_different_progress_all_stop_and_say_why(tmp_path):
    """Worker i claims i finished epochs (as if each read its own, unshared run folder)."""
    script = tmp_path / "disagree.py"
    script.write_text(
        "import sys\n"
        "from keras_robust.common.strategies import agree_on_progress, make_strategy\n"
        "strategy = make_strategy('multiworker')\n"
        "index = strategy.cluster_resolver.task_id\n"
        "try:\n"
        "    agree_on_progress(strategy, index, '/runs/r1')\n"
        "except ValueError as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n")
    processes = start_workers(lambda index: [script], 2, tmp_path, tag="disagree")
    codes = [process.wait(timeout=120) for process, _ in processes]
    assert codes == [3, 3]
    for index, (_, log) in enumerate(processes):
        text = open(log).read()
        assert "The workers see different saved progress in /runs/r1 (the workers disagree: values from 0 to 1" in text
        assert f"worker {index} of 2, has {index}" in text and "one shared folder" in text
