"""Atomic file writes: a kill at any instant leaves the old file or the new one.

Every file this package writes for later use (weights, cards, reports, logs of
finished work) goes through `atomic_path`: the content is written under a
temporary name in the same folder, flushed to disk, and renamed over the
target, which POSIX and Windows both do in one step.
"""

import contextlib
import os
import tempfile

# How a file being written is named until it is complete; a kill can leave one behind.
PARTIAL_PREFIX = ".partial-"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write; on success it replaces `path`.

    The temporary name keeps `path`'s file name as its suffix, so writers that
    check extensions (Keras wants `.weights.h5`, `.keras`) accept it. If the
    block raises, the temporary file is removed and `path` is untouched.

    Example:

    >>> with atomic_path("model.weights.h5") as partial:
    ...     model.save_weights(partial)

    Args:
        path: The file to create or replace.
    """
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=PARTIAL_PREFIX, suffix="-" + base)
    os.close(fd)
    # mkstemp creates the file private (0600); give it the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o666 & ~umask)
    try:
        yield partial
        fsync_file(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_atomically(path, data):
    """Writes `data` (str or bytes) to `path` through `atomic_path`."""
    binary = isinstance(data, bytes)
    with atomic_path(path) as partial:
        with open(partial, "wb" if binary else "w", encoding=None if binary else "utf-8") as file:
            file.write(data)
    return os.fspath(path)


def save_npz_atomically(path, **arrays):
    """`np.savez(path, **arrays)` through `atomic_path`: a kill leaves the old file or none."""
    import numpy as np

    with atomic_path(path) as partial, open(partial, "wb") as file:
        np.savez(file, **arrays)
    return os.fspath(path)


def fsync_file(path):
    """Flushes `path`'s content to disk, so a rename after it never exposes an empty file."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())
