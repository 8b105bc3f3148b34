"""Checkpoints of evaluations that run batch by batch (ARA, AutoAttack): `.npz` files that name the
images and settings they were written for, so a rerun continues only the evaluation it belongs to."""

import hashlib
import os

import numpy as np

from keras_robust.common.atomic import save_npz_atomically


def fingerprint(images, labels, settings):
    """A digest of the images, the labels (as int64) and `repr` of the list `settings`."""
    digest = hashlib.sha256(images.tobytes())
    digest.update(np.asarray(labels, dtype="int64").tobytes())
    digest.update(repr(list(settings)).encode())
    return digest.hexdigest()


def read_checkpoint(path, expected, what):
    """The arrays saved at `path` for the fingerprint `expected`, or None when there is no file.

    `what` names the evaluation in the errors: a file that cannot be read, and one written for
    other images or settings.
    """
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path) as saved:
            arrays = {key: saved[key] for key in saved.files}
        saved_fingerprint = str(arrays.pop("fingerprint"))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"The {what} checkpoint {path} cannot be read ({error}); delete it to start over") from None
    if saved_fingerprint != expected:
        raise ValueError(f"The {what} checkpoint {path} was written for other images or settings; "
                         "delete it or pass another path")
    return arrays


def write_checkpoint(path, written_for, arrays):
    """Saves `arrays` atomically at `path` with the fingerprint `written_for`; nothing when `path` is None."""
    if path is not None:
        save_npz_atomically(path, fingerprint=written_for, **arrays)
