"""Kill a real training subprocess at random instants and inside checkpoint writes, resume
each time, and check what every kill left behind. `tests/training/test_checkpoint.py` runs it briefly;
`benchmarks/kill_resume.py` runs it long and prints the figures of docs/reliability.md."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np

from keras_robust.training import checkpoint
from keras_robust.training.loop import TrainingConfig, build_model

# Checkpoint writes are slowed, and announced by a marker file, so kills can be aimed at them.
TRAINER = """
import functools, os, sys, time
import numpy as np
from keras_robust.training import checkpoint
from keras_robust.training.loop import TrainingConfig, train

out, data, epochs = sys.argv[1], np.load(sys.argv[2]), int(sys.argv[3])

def slowly(folder):
    open(os.path.join(out, "writing"), "w").close()
    time.sleep(0.4)
    os.remove(os.path.join(out, "writing"))

checkpoint.save_checkpoint = functools.partial(checkpoint.save_checkpoint, before_save=slowly)
config = TrainingConfig(depth=8, robust=True, epochs=epochs, batch_size=32, jit_compile="off")
summary = train(config, (data["images"], data["labels"]), out, verbose=0)
print("finished", summary["psi_accumulator"])
"""


def check_run(out, finished_epochs_at_least=0):
    """`(epoch, problem)`: the epoch a restart resumes from, and what is wrong with the run
    (None if nothing): the backup must restore to finite weights, with one log row per
    finished epoch and a ψ accumulator that gives the ψ logged at the end of that epoch."""
    try:
        restored = checkpoint.restore_latest(os.path.join(out, "backup"))
    except checkpoint.CorruptCheckpointError as error:
        return finished_epochs_at_least, f"not restorable: {error}"
    if restored is None:
        return 0, None if finished_epochs_at_least == 0 else "the backup vanished"
    folder, state = restored
    epoch = state["epoch"]
    if epoch < finished_epochs_at_least:
        return epoch, f"went back from epoch {finished_epochs_at_least} to {epoch}"
    if [row["epoch"] for row in state["rows"]] != list(range(epoch)):
        return epoch, f"log rows {[row['epoch'] for row in state['rows']]} after epoch {epoch}"
    model = build_model(TrainingConfig(depth=8, robust=True), 3, (8, 8, 3))
    model.build((None, 8, 8, 3))
    model.load_weights(os.path.join(folder, "model.weights.h5"))
    if checkpoint.nonfinite_count(model):
        return epoch, f"{checkpoint.nonfinite_count(model)} non-finite weights"
    psi = 220.0 * math.exp(0.02 * float(model.psi_accumulator.numpy()))
    if not math.isclose(psi, state["rows"][-1]["psi"], rel_tol=1e-5):
        return epoch, f"R gives psi {psi}, the log {state['rows'][-1]['psi']}"
    return epoch, None


def kill_and_resume(work_dir, rng, attempts, epochs=12, examples=256):
    """Runs up to `attempts` killed trainings (every second kill aimed inside a checkpoint
    write), then one to the end. Returns the figures and the problems found."""
    work_dir = str(work_dir)
    np.savez(os.path.join(work_dir, "data.npz"), images=rng.random((examples, 8, 8, 3)).astype("float32"),
             labels=rng.integers(0, 3, examples))
    out = os.path.join(work_dir, "run")
    marker = os.path.join(out, "writing")
    command = [sys.executable, "-c", TRAINER, out, os.path.join(work_dir, "data.npz"), str(epochs)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    figures = {"kills": 0, "kills_mid_write": 0, "resumed_intact": 0, "problems": []}
    epoch = 0
    for attempt in range(attempts):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        aim_at_write = attempt % 2 == 1
        deadline = time.monotonic() + (60 if aim_at_write else rng.uniform(6, 14))
        while time.monotonic() < deadline and process.poll() is None:
            if aim_at_write and os.path.exists(marker):
                break
            time.sleep(0.01)
        if process.poll() is not None:
            break
        figures["kills_mid_write"] += os.path.exists(marker)
        process.send_signal(signal.SIGKILL)
        process.wait()
        figures["kills"] += 1
        epoch, problem = check_run(out, epoch)
        if problem:
            figures["problems"].append(f"kill {figures['kills']}: {problem}")
        else:
            figures["resumed_intact"] += 1
        if os.path.exists(marker):
            os.remove(marker)
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    final_epoch, problem = check_run(out, epoch)
    figures["completed"] = finished.returncode == 0 and final_epoch == epochs and problem is None
    if not figures["completed"]:
        figures["problems"].append(f"final run: rc {finished.returncode}, epoch {final_epoch}, {problem}; "
                                   + finished.stderr[-2000:])
    with open(os.path.join(out, "log.csv"), encoding="utf-8") as file:
        logged = [int(line.split(",")[0]) for line in file.read().splitlines()[1:]]
    if logged != list(range(epochs)):
        figures["problems"].append(f"log.csv epochs {logged}")
    tensorboard = tensorboard_epochs(os.path.join(out, "tensorboard", "train"))
    if tensorboard != set(range(epochs)):
        figures["problems"].append(f"TensorBoard's events hold epochs {sorted(tensorboard)}")
    leftovers = sorted(name for name in os.listdir(out) if name.startswith(".partial"))
    if leftovers:
        figures["problems"].append(f"files killed writes left: {leftovers}")
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as file:
        figures["summary_epochs"] = json.load(file)["config"]["epochs"]
    return figures


def tensorboard_epochs(folder):
    """The epochs whose loss every event file in `folder` holds together."""
    import tensorflow as tf

    epochs = set()
    for name in os.listdir(folder):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
            if any(value.tag == "epoch_loss" for value in event.summary.value):
                epochs.add(event.step)
    return epochs
