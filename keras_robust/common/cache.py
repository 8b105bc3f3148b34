"""Where keras-robust keeps what it can recompute: decoded images, speed probes."""

import os
from pathlib import Path


def cache_dir(override=None):
    """`override`, else `$KERAS_ROBUST_CACHE`, else `~/.cache/keras_robust`, as a `Path`."""
    chosen = override or os.environ.get("KERAS_ROBUST_CACHE") or Path.home() / ".cache" / "keras_robust"
    return Path(chosen).expanduser()
