"""Threaded decoding of image files into one uint8 array, and the `.npz` cache of decoded images."""

import hashlib
import io
import os
import re
import sys
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from keras_robust.common.atomic import save_npz_atomically
from keras_robust.common.cache import cache_dir

# Bump when the cache contents change meaning, so stale caches are ignored.
_CACHE_VERSION = 1
_DECODE_CHUNK = 1000
# Below this many pixels per image, PIL spends its time in Python-level
# header parsing that holds the GIL, so decoding threads only add contention.
_MIN_PIXELS_FOR_THREADS = 64 * 64


def _decode_image(data, name, image_size):
    """Decodes one image file (bytes or a path) to RGB uint8 `(H, W, 3)`."""
    if isinstance(data, bytes):
        data = io.BytesIO(data)
    # PIL sizes are (width, height).
    size = None if image_size is None else image_size[::-1]
    try:
        with Image.open(data) as image:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            if size is not None and image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(image)
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as e:
        raise ValueError(f"Could not decode image file {name!r}: {e}") from e


def _decode_images(items, image_size, desc):
    """Decodes `(name, data)` items into one uint8 array `(N, H, W, 3)`."""
    first_name, first_data = items[0]
    expected = _decode_image(first_data, first_name, image_size).shape
    images = np.empty((len(items),) + expected, dtype=np.uint8)

    def decode_range(start):
        stop = min(start + _DECODE_CHUNK, len(items))
        for i in range(start, stop):
            name, data = items[i]
            image = _decode_image(data, name, image_size)
            if image.shape != expected:
                raise ValueError(
                    f"Image {name!r} is {image.shape[0]}x{image.shape[1]} "
                    f"(height x width) but {first_name!r} is "
                    f"{expected[0]}x{expected[1]}; all images must have the "
                    "same size. Pass image_size=(height, width) to resize them."
                )
            images[i] = image
        return stop - start

    pixels = expected[0] * expected[1]
    workers = (os.cpu_count() or 1) if pixels >= _MIN_PIXELS_FOR_THREADS else 1
    executor = ThreadPoolExecutor(max_workers=workers)
    try:
        starts = range(0, len(items), _DECODE_CHUNK)
        with tqdm(
            total=len(items), desc=desc, unit="img", file=sys.stderr
        ) as bar:
            # `map` yields in order, so the first bad file reported is the
            # first in sorted order, whichever thread reached it first.
            for count in executor.map(decode_range, starts):
                bar.update(count)
    finally:
        executor.shutdown(cancel_futures=True)
    return images


def _cache_file(directory, path, split, key):
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    return cache_dir(directory) / f"{stem}-{split}-{digest}.npz"


def _read_cache(cache_file):
    """Returns `(images, labels, class_names)`, or None on a cache miss."""
    if not cache_file.exists():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as cached:
            return (
                cached["images"],
                cached["labels"],
                [str(c) for c in cached["class_names"]],
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(
            f"Ignoring unreadable cache file {cache_file} ({e}); decoding "
            "the images again.",
            stacklevel=4,
        )
        return None


def _write_cache(cache_file, images, labels, class_names):
    """Writes the cache atomically, so an interrupted write leaves none.

    The cache only saves time, so a failure to write it is a warning.
    """
    try:
        save_npz_atomically(cache_file, images=images, labels=labels,
                            class_names=np.array(class_names, dtype=str))
    except OSError as e:
        warnings.warn(f"Not caching decoded images: {e}", stacklevel=4)
