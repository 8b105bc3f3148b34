"""`RunState`: a training run's state, saved after every good epoch so that no kill loses it.

After every epoch whose weights (model, optimizer and ψ accumulator R) are
all finite, the callback writes, in this order:

1. a checkpoint folder `backup/epoch-NNNNN/` holding the weights (with the
   optimizer's state and R) and `state.json` (the epoch, the per-epoch log
   rows, the random state of the regulariser's draws), built under a
   temporary name, flushed to disk and renamed into place;
2. `backup/checkpoint.json`, the pointer to the newest and the previous
   checkpoint with the SHA-256 of each of their files, replaced atomically;
3. `model.keras`, replaced atomically (and, by the `TrainingReport` callback
   that follows, `log.csv`, `training_curves.png` and `report.html`).

A kill at any instant therefore leaves the previous pointer and the
checkpoints it names intact. At start-up the newest checkpoint whose files
match their checksums is restored (a corrupt one is named in a warning and
the previous one used), with the log rows of its epochs, so each finished
epoch appears exactly once. An epoch whose weights are not all finite is
never saved: training stops and names it.
"""

import hashlib
import json
import os
import shutil
import tempfile
import warnings

import keras
import numpy as np

from keras_robust.common.atomic import PARTIAL_PREFIX, atomic_path, fsync_file, write_atomically
from keras_robust.training.run_folder import RunFolder

# The files of one checkpoint folder, and the pointer beside them.
POINTER_FILE = "checkpoint.json"
WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "state.json"


class CorruptCheckpointError(ValueError):
    """No checkpoint of a run can be restored; the message says what to do."""


class RunState(keras.callbacks.Callback):
    """Saves and restores a training run (see the module docstring).

    Args:
        run: The run's `RunFolder` (or its path).
        restored: What `restore_latest(run.backup)` returned, to restore
            at the start of training (None: a new run).
        write: Whether this process writes the run's files. Under a
            multi-worker strategy only the chief does; every worker restores.
    """

    def __init__(self, run, restored=None, write=True):
        super().__init__()
        self.run = run if isinstance(run, RunFolder) else RunFolder(run)
        self.restored = restored
        self.write = write
        self.rows = []
        self.failure = None

    def on_train_begin(self, logs=None):
        if self.restored is None:
            return
        folder, state = self.restored
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(folder, WEIGHTS_FILE))
        seed_state = state.get("seed_state")
        if seed_state is not None and hasattr(self.model, "seed_generator"):
            self.model.seed_generator.state.assign(np.asarray(seed_state, dtype=self.model.seed_generator.state.dtype))
        self.model._initial_epoch = state["epoch"]
        self.rows = [row for row in state["rows"] if row["epoch"] < state["epoch"]]

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            # Another callback stopped the epoch part-way (a non-finite loss): it is not finished.
            return
        bad = nonfinite_count(self.model)
        if bad:
            self.failure = f"epoch {epoch + 1}: {bad} weights are NaN or infinite after its last update"
            self.model.stop_training = True
            return
        row = {"epoch": epoch, **{key: float(value) for key, value in (logs or {}).items()}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        state = {"epoch": epoch + 1, "rows": self.rows}
        if not self.write:
            return
        if hasattr(self.model, "seed_generator"):
            state["seed_state"] = keras.ops.convert_to_numpy(self.model.seed_generator.state).tolist()
        save_checkpoint(self.run.backup, self.model, state)
        with atomic_path(self.run.model) as path:
            self.model.save(path)


def nonfinite_count(model):
    """How many values of the model's and its optimizer's variables are NaN or infinite."""
    variables = list(model.weights)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    return int(sum(np.size(v) - np.count_nonzero(np.isfinite(keras.ops.convert_to_numpy(v))) for v in variables))


def save_checkpoint(backup_dir, model, state, before_save=None):
    """Writes checkpoint `epoch-NNNNN` and points to it; keeps it and the one before.

    `before_save`, if given, is called with the checkpoint's temporary folder
    just before it is renamed into place (tests slow it down to aim kills at
    the write).
    """
    os.makedirs(backup_dir, exist_ok=True)
    name = f"epoch-{state['epoch']:05d}"
    partial = tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{name}-", dir=backup_dir)
    model.save_weights(os.path.join(partial, WEIGHTS_FILE))
    with open(os.path.join(partial, STATE_FILE), "w", encoding="utf-8") as file:
        json.dump(state, file)
    checksums = {}
    for file_name in (WEIGHTS_FILE, STATE_FILE):
        fsync_file(os.path.join(partial, file_name))
        checksums[file_name] = _sha256(os.path.join(partial, file_name))
    if before_save is not None:
        before_save(partial)
    final = os.path.join(backup_dir, name)
    if os.path.exists(final):  # the same epoch saved by an earlier, interrupted attempt
        shutil.rmtree(final)
    os.rename(partial, final)
    pointer = _read_pointer(backup_dir) or {}
    entry = {"folder": name, "epoch": state["epoch"], "sha256": checksums}
    previous = pointer.get("latest") if (pointer.get("latest") or {}).get("folder") != name else pointer.get("previous")
    write_atomically(os.path.join(backup_dir, POINTER_FILE),
                     json.dumps({"latest": entry, "previous": previous}, indent=1))
    # Everything else goes: older checkpoints and what killed writes left behind.
    keep = {POINTER_FILE, name, (previous or {}).get("folder")}
    for folder in os.listdir(backup_dir):
        if folder not in keep:
            _remove(os.path.join(backup_dir, folder))


def restore_latest(backup_dir):
    """`(folder, state)` of the newest intact checkpoint, or None for a new run.

    Warns, naming it, when the newest checkpoint is corrupt and the previous
    one is used; raises `CorruptCheckpointError` when none can be used.
    """
    if not os.path.isdir(backup_dir):
        return None
    pointer = _read_pointer(backup_dir)
    if pointer is None:
        if any(not f.startswith(PARTIAL_PREFIX) for f in os.listdir(backup_dir)):
            raise CorruptCheckpointError(
                f"{backup_dir} holds no readable {POINTER_FILE}, so no checkpoint can be trusted; "
                f"delete {backup_dir} to start the run over"
            )
        return None
    problems = []
    for which in ("latest", "previous"):
        entry = pointer.get(which)
        if not entry:
            continue
        folder = os.path.join(backup_dir, entry["folder"])
        problem = _verify(folder, entry["sha256"])
        if problem is None:
            with open(os.path.join(folder, STATE_FILE), encoding="utf-8") as file:
                state = json.load(file)
            if problems:
                warnings.warn(
                    f"The newest checkpoint is corrupt ({problems[0]}); resuming from the previous one, "
                    f"{folder} (after epoch {state['epoch']})",
                    stacklevel=3,
                )
            return folder, state
        problems.append(problem)
    raise CorruptCheckpointError(
        f"No checkpoint in {backup_dir} can be restored ({'; '.join(problems)}); "
        f"delete {backup_dir} to start the run over"
    )


def _verify(folder, checksums):
    for name, expected in checksums.items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            return f"{path} is missing"
        if _sha256(path) != expected:
            return f"{path} does not match its checksum"
    return None


def _read_pointer(backup_dir):
    path = os.path.join(backup_dir, POINTER_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.remove(path)
