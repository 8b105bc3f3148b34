"""Input pipelines for CIFAR-style image classification.

`load_dataset` turns one of three kinds of source into a batched
`tf.data.Dataset` of `(images, labels)`, with float32 images in `[0, 1]` and
int32 labels:

- `"tfds:NAME"`: a TensorFlow Datasets builder already prepared in `data_dir`
  (nothing is downloaded unless `download=True`).
- A directory or a `.tar.gz` / `.tgz` / `.tar` archive of class folders, laid
  out as `ROOT/train/<class>/*.jpg` and `ROOT/test/<class>/*.jpg`, or as
  `ROOT/<class>/*.jpg` (a seeded holdout of each class then forms the test
  split). Images are decoded once and cached as an `.npz` file.
- A tuple `(images, labels)` of NumPy arrays.

Images stay uint8 until after batching, and training batches are augmented
with `augment_batch` (docs/method.md §3: edge-padded random crop and horizontal flip).
"""

import dataclasses
import gzip
import hashlib
import io
import numbers
import os
import posixpath
import re
import sys
import tarfile
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_robust.atomic import save_npz_atomically
from keras_robust.cache import cache_dir
from keras_robust.validation import check_positive_int
from tqdm import tqdm

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
ARCHIVE_EXTENSIONS = (".tar.gz", ".tgz", ".tar")

_TEST_SPLITS = ("test", "val", "validation")
# Folders tried, in order, for each split a folder source accepts.
_SPLIT_FOLDERS = {
    "train": ("train",),
    "test": ("test", "val", "validation"),
    "val": ("val", "validation", "test"),
    "validation": ("validation", "val", "test"),
}
_FOLDER_SPLITS = tuple(_SPLIT_FOLDERS)
_PAD = 4
# Bump when the cache contents change meaning, so stale caches are ignored.
_CACHE_VERSION = 1
_DECODE_CHUNK = 1000
# Below this many pixels per image, PIL spends its time in Python-level
# header parsing that holds the GIL, so decoding threads only add contention.
_MIN_PIXELS_FOR_THREADS = 64 * 64
_LAYOUT_HELP = (
    "Expected class folders of images, either ROOT/<class>/<image> (a "
    "holdout of each class then forms the test split) or "
    "ROOT/train/<class>/<image> plus ROOT/test/<class>/<image>, with image "
    f"extensions {', '.join(IMAGE_EXTENSIONS)}."
)


@dataclasses.dataclass(frozen=True)
class LoadedData:
    """A batched dataset and what a model needs to know about it.

    Attributes:
        dataset: `tf.data.Dataset` yielding `(images, labels)` batches, with
            float32 images of shape `(batch, height, width, 3)` in `[0, 1]`
            and int32 labels of shape `(batch,)`.
        num_examples: Number of examples in one pass over `dataset`.
        class_names: Class names; label `i` means `class_names[i]`.
        image_shape: `(height, width, channels)` of one image.
        steps_per_epoch: Batches in one pass over the examples.
    """

    dataset: tf.data.Dataset
    num_examples: int
    class_names: list
    image_shape: tuple
    steps_per_epoch: int = None

    def distribute(self, strategy):
        """`dataset` as `fit` takes it under `strategy`: Keras shares each
        global batch out over the replicas itself (data-level sharding)."""
        return self.dataset


def load_dataset(
    source,
    split="train",
    *,
    batch_size=128,
    augment=None,
    shuffle=None,
    data_dir=None,
    cache_dir=None,
    limit=None,
    image_size=None,
    holdout_fraction=0.1,
    seed=0,
    download=False,
    drop_remainder=False,
    first_epoch=None,
):
    """Loads an image classification split as a batched `tf.data.Dataset`.

    Args:
        source: `"tfds:NAME"` (e.g. `"tfds:cifar10"`), a path to a directory
            or `.tar.gz`/`.tgz`/`.tar` archive of class folders, or a tuple
            `(images, labels)` of NumPy arrays (see `validate_arrays`).
        split: Split to load. For folders and archives, `"train"` or `"test"`
            (`"val"` and `"validation"` also name the test split); for TFDS,
            any split TFDS accepts. Only sets defaults for arrays.
        batch_size: Number of examples per batch.
        augment: Whether to apply `augment_batch`. Defaults to
            `split == "train"`.
        shuffle: Whether to reshuffle the examples each epoch. Defaults to
            `split == "train"`.
        data_dir: TFDS data directory (TFDS sources only).
        cache_dir: Where decoded folder and archive sources are cached.
            Defaults to `$KERAS_ROBUST_CACHE` or `~/.cache/keras_robust`.
        limit: If set, keep only this many examples, chosen by a seeded
            shuffle of the full split.
        image_size: Optional `(height, width)` to resize all images to
            (bilinear). Required when folder images differ in size.
        holdout_fraction: Fraction of each class held out as the test split
            when a folder source has no split folders.
        seed: Seed for the holdout, `limit`, shuffling and augmentation.
        download: Whether a TFDS source may be downloaded and prepared.
        drop_remainder: Whether to drop the last, smaller batch.
        first_epoch: If given, the dataset is an endless stream of epochs
            starting at this one, and each epoch's order and augmentation
            depend only on `seed` and the epoch's number, so a run resumed
            at epoch k sees exactly the batches an uninterrupted run sees
            from epoch k on. Train on it with `fit(steps_per_epoch=...)`
            (`LoadedData.steps_per_epoch`).

    Returns:
        A `LoadedData`.
    """
    check_positive_int("batch_size", batch_size)
    if limit is not None:
        check_positive_int("limit", limit)
    image_size = _normalize_image_size(image_size)
    augment = split == "train" if augment is None else augment
    shuffle = split == "train" if shuffle is None else shuffle

    if isinstance(source, tuple):
        images, labels, class_names = _load_arrays(source)
        if image_size is not None:
            images = _resize_array(images, image_size)
    elif isinstance(source, str) and source.startswith("tfds:"):
        images, labels, class_names = _load_tfds(
            source[len("tfds:") :], split, data_dir, download, image_size
        )
    elif isinstance(source, (str, os.PathLike)):
        if not 0 < holdout_fraction < 1:
            raise ValueError(
                "`holdout_fraction` must be between 0 and 1 (exclusive). "
                f"Received: holdout_fraction={holdout_fraction!r}"
            )
        images, labels, class_names = _load_image_folders(
            Path(source).expanduser(),
            split,
            cache_dir=cache_dir,
            image_size=image_size,
            holdout_fraction=holdout_fraction,
            seed=seed,
        )
    else:
        raise ValueError(
            "Expected `source` to be 'tfds:NAME', a path to a directory or "
            "archive of class folders, or a tuple (images, labels). "
            f"Received: source={type(source).__name__}"
        )

    if limit is not None and limit < len(labels):
        keep = np.random.default_rng(seed).permutation(len(labels))[:limit]
        images, labels = images[keep], labels[keep]
    pipeline = dict(batch_size=batch_size, augment=augment, shuffle=shuffle, seed=seed,
                    drop_remainder=drop_remainder)
    if first_epoch is None:
        dataset = _build_pipeline(images, labels, **pipeline)
    else:
        dataset = _epoch_stream(images, labels, first_epoch=first_epoch, **pipeline)
    return LoadedData(
        dataset=dataset,
        num_examples=len(labels),
        class_names=list(class_names),
        image_shape=tuple(int(d) for d in images.shape[1:]),
        steps_per_epoch=len(labels) // batch_size if drop_remainder else -(-len(labels) // batch_size),
    )


def augment_batch(images, seed=None, return_params=False):
    """Randomly crops and flips each image of a batch (docs/method.md §3).

    Each image is padded by 4 pixels on every side by edge replication (like
    `np.pad(mode="edge")`), cropped back to its size at offsets `oy, ox` drawn
    uniformly from `{0, ..., 8}`, then flipped horizontally with probability
    0.5. The padded image is never built: output row `i` reads source row
    `clip(i + oy - 4, 0, H - 1)`, and columns likewise, which is exactly what
    edge padding then cropping gives.

    Args:
        images: Tensor of shape `(batch, height, width, channels)`.
        seed: `None` to draw from TensorFlow's global random state, or an int
            or shape `(2,)` integer tensor for stateless, reproducible draws.
        return_params: Whether to also return the drawn parameters.

    Returns:
        The augmented images, with the shape and dtype of `images`. If
        `return_params`, a tuple `(images, oy, ox, flip)` where `oy` and `ox`
        are int32 offsets of shape `(batch,)` into the padded image and
        `flip` is a bool tensor of shape `(batch,)`.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    span = 2 * _PAD + 1
    if seed is None:
        offsets = tf.random.uniform((2, batch), maxval=span, dtype=tf.int32)
        flip = tf.random.uniform((batch,), maxval=2, dtype=tf.int32)
    else:
        if isinstance(seed, numbers.Integral):
            seed = [int(seed), 0]
        offset_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
        offsets = tf.random.stateless_uniform(
            (2, batch), offset_seed, maxval=span, dtype=tf.int32
        )
        flip = tf.random.stateless_uniform(
            (batch,), flip_seed, maxval=2, dtype=tf.int32
        )
    oy, ox = offsets[0], offsets[1]
    flip = tf.cast(flip, tf.bool)

    rows = tf.range(height)[None, :] + oy[:, None] - _PAD
    rows = tf.clip_by_value(rows, 0, height - 1)
    # A flipped output reads the crop's columns right to left, so the flip
    # folds into the column indices and costs no extra pass over the pixels.
    cols = tf.range(width)[None, :]
    cols = tf.where(flip[:, None], width - 1 - cols, cols)
    cols = tf.clip_by_value(cols + ox[:, None] - _PAD, 0, width - 1)
    augmented = tf.gather(images, rows, axis=1, batch_dims=1)
    augmented = tf.gather(augmented, cols, axis=2, batch_dims=1)
    if return_params:
        return augmented, oy, ox, flip
    return augmented


def validate_arrays(images, labels, num_classes=None):
    """Checks in-memory images and labels and converts them for training.

    Args:
        images: Array of shape `(num_examples, height, width, 3)`, either
            uint8 in `[0, 255]` or float in `[0, 1]`.
        labels: Integer class indices of shape `(num_examples,)` or
            `(num_examples, 1)`.
        num_classes: If given, every label must be smaller than this.

    Returns:
        A tuple `(images, labels)`: float32 images in `[0, 1]` and int32
        labels of shape `(num_examples,)`.
    """
    images, labels = _check_arrays(images, labels, num_classes)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0, labels
    return images.astype(np.float32), labels


def _check_arrays(images, labels, num_classes=None):
    """Validates arrays, keeping uint8 images uint8 to save memory."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "Expected images of shape (num_examples, height, width, 3). "
            f"Received: images.shape={images.shape}"
        )
    if images.dtype != np.uint8:
        _check_float_images(images)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(
            "Expected labels of shape (num_examples,) or (num_examples, 1). "
            f"Received: labels.shape={labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "Expected integer class indices as labels. "
            f"Received: labels.dtype={labels.dtype}"
        )
    if len(images) != len(labels):
        raise ValueError(
            "Expected as many labels as images. "
            f"Received: len(images)={len(images)}, len(labels)={len(labels)}"
        )
    if len(labels) == 0:
        raise ValueError(
            "Expected at least one example. Received: len(images)=0"
        )
    if labels.min() < 0:
        raise ValueError(
            "Labels must be non-negative class indices. "
            f"Received: label={labels.min()}"
        )
    if num_classes is not None:
        check_positive_int("num_classes", num_classes)
        if labels.max() >= num_classes:
            raise ValueError(
                f"Labels must be smaller than num_classes={num_classes}. "
                f"Received: label={labels.max()}"
            )
    return images, labels.astype(np.int32)


def _check_float_images(images):
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            "Expected uint8 images in [0, 255] or float images in [0, 1]. "
            f"Received: images.dtype={images.dtype}"
        )
    num_bad = images.size - np.count_nonzero(np.isfinite(images))
    if num_bad:
        raise ValueError(
            "Images must be finite. "
            f"Received: images with {num_bad} NaN or infinite values"
        )
    low, high = images.min(), images.max()
    if low < 0 or high > 1:
        raise ValueError(
            "Float images must lie in [0, 1]. "
            f"Received: images with min={low:.4g}, max={high:.4g}"
        )


def _normalize_image_size(image_size):
    if image_size is None:
        return None
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
            for d in image_size
        )
    ):
        raise ValueError(
            "Expected `image_size` to be (height, width) with positive "
            f"integers. Received: image_size={image_size!r}"
        )
    return (int(image_size[0]), int(image_size[1]))


def _load_arrays(source):
    if len(source) != 2:
        raise ValueError(
            "Expected an array source to be a tuple (images, labels). "
            f"Received: source=tuple of length {len(source)}"
        )
    images, labels = _check_arrays(*source)
    class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return images, labels, class_names


def _resize_array(images, image_size):
    """Resizes an in-memory image array, bilinearly, keeping its dtype."""
    if images.shape[1:3] == image_size:
        return images
    resized = tf.image.resize(
        images, image_size, method="bilinear", antialias=True
    ).numpy()
    if images.dtype == np.uint8:
        return np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return np.clip(resized, 0, 1).astype(images.dtype)


def _load_tfds(name, split, data_dir, download, image_size):
    """Loads a TFDS split into memory as uint8 images and int32 labels."""
    # Imported here because it is slow to import and only TFDS sources use it.
    import tensorflow_datasets as tfds

    if not name:
        raise ValueError(
            "Expected a TFDS dataset name after 'tfds:'. "
            "Received: source='tfds:'"
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(
            f"Unknown TFDS dataset {name!r}. Check the name against "
            f"`tfds.list_builders()`. Received: source='tfds:{name}'"
        ) from None
    # Checked before anything can touch the network: machines of this
    # project are often offline, and a download attempt would hang or fail
    # with an unhelpful error.
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir} "
                "and download=False, so nothing was downloaded (this machine "
                "may be offline). To use local data instead, pass a directory "
                "or .tar.gz of class folders as the source (for example "
                "'../shared/data/cifar10-jpeg.tar.gz'), or prepare the TFDS "
                "data on a machine with network access and pass its "
                "directory as data_dir. Pass download=True (on the command "
                "line: --download) to download it here."
            )
        builder.download_and_prepare()
    images, labels = tfds.as_numpy(
        builder.as_dataset(split=split, as_supervised=True, batch_size=-1)
    )
    if images.ndim == 4 and images.shape[-1] == 1:
        # Same as folder sources, which convert grayscale files to RGB.
        images = np.repeat(images, 3, axis=-1)
    images, labels = _check_arrays(images, labels)
    if image_size is not None:
        images = _resize_array(images, image_size)
    label_feature = builder.info.features[builder.info.supervised_keys[1]]
    if hasattr(label_feature, "names"):
        class_names = list(label_feature.names)
    else:
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return images, labels, class_names


def _load_image_folders(
    path, split, *, cache_dir, image_size, holdout_fraction, seed
):
    """Loads a folder or archive split, from the cache when possible."""
    if not path.exists():
        hint = ""
        if len(path.parts) == 1 and not path.suffix:
            hint = f"; for the TFDS data set of that name, write 'tfds:{path}'"
        raise FileNotFoundError(f"Image source not found: {path}{hint}")
    if split not in _FOLDER_SPLITS:
        raise ValueError(
            f"Expected `split` to be one of {_FOLDER_SPLITS} for a folder or "
            f"archive source. Received: split={split!r}"
        )
    if path.is_dir():
        files = _list_directory(path)
        fingerprint = _directory_fingerprint(files)
    elif path.name.lower().endswith(ARCHIVE_EXTENSIONS):
        files = None
        stat = path.stat()
        fingerprint = (stat.st_size, stat.st_mtime_ns)
    else:
        raise ValueError(
            "Expected a directory or a .tar.gz/.tgz/.tar archive of class "
            f"folders. Received: source={str(path)!r}"
        )

    key = (
        _CACHE_VERSION,
        str(path.resolve()),
        fingerprint,
        split,
        image_size,
        float(holdout_fraction),
        int(seed),
    )
    cache_file = _cache_file(cache_dir, path, split, key)
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached

    if files is None:
        files = _read_archive(path)
    names, labels, class_names = _resolve_layout(
        list(files), split, holdout_fraction, seed, path
    )
    images = _decode_images(
        [(_display_name(files[n], n), files[n]) for n in names],
        image_size,
        desc=f"Decoding {path.name} [{split}]",
    )
    _write_cache(cache_file, images, labels, class_names)
    return images, labels, class_names


def list_image_folders(path, split, *, holdout_fraction=0.1, seed=0):
    """The image files of one split of a folder of class folders, for streaming.

    The layouts are `load_dataset`'s; archives must be extracted first, since
    a stream reads each file again every epoch.

    Returns:
        A tuple `(paths, labels, class_names)`: absolute paths sorted by
        label then path, their int32 labels, and the sorted class names.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(
            "A streamed data set must be a folder of class folders (extract archives first). "
            f"Received: source={str(path)!r}"
        )
    if split not in _FOLDER_SPLITS:
        raise ValueError(f"Expected `split` to be one of {_FOLDER_SPLITS}. Received: split={split!r}")
    files = _list_directory(path)
    names, labels, class_names = _resolve_layout(list(files), split, holdout_fraction, seed, path)
    return [str(files[n]) for n in names], labels, class_names


def _is_image_file(relative_path):
    parts = relative_path.split("/")
    # Skips hidden files and macOS archive metadata such as `._cat.jpg`.
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return parts[-1].lower().endswith(IMAGE_EXTENSIONS)


def _display_name(data, relative_path):
    return str(data) if isinstance(data, Path) else relative_path


def _list_directory(path):
    """Maps each image's relative POSIX path to its absolute `Path`."""
    files = {}
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative_root = Path(root).relative_to(path).as_posix()
        for name in names:
            relative = posixpath.normpath(posixpath.join(relative_root, name))
            if _is_image_file(relative):
                files[relative] = Path(root, name)
    return files


def _directory_fingerprint(files):
    """Hashes sizes and mtimes, since a directory's own mtime misses edits."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        stat = files[relative].stat()
        entry = f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        digest.update(entry.encode())
    return digest.hexdigest()


def _read_archive(path):
    """Maps each image member's name to its bytes, in one pass over `path`.

    The archive is decompressed in memory first: seeking and reading through
    `gzip` member by member is about 30% slower, and an archive of compressed
    images is smaller than the pixel arrays decoded from it anyway.
    """
    files = {}
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
            for member in archive:
                if member.isfile() and _is_image_file(
                    posixpath.normpath(member.name)
                ):
                    files[member.name] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"Could not read archive {path}: {e}") from e
    return files


def _resolve_layout(names, split, holdout_fraction, seed, source):
    """Picks the files of `split` and labels them by class folder.

    Args:
        names: Relative POSIX paths of all image files of the source.
        split: One of `_FOLDER_SPLITS`.
        holdout_fraction: Fraction of each class held out as the test split
            when there are no split folders.
        seed: Seed for that holdout.
        source: The source path, for error messages.

    Returns:
        A tuple `(names, labels, class_names)`: the split's paths sorted by
        label then path, their int32 labels, and the sorted class names.
    """
    tree = _group_by_folder(names)
    if not tree:
        raise ValueError(f"No images found in {source}. {_LAYOUT_HELP}")
    split_folders = [
        folder
        for folder, subfolders in tree.items()
        if folder.lower() in _FOLDER_SPLITS and set(subfolders) - {None}
    ]
    if split_folders:
        folder = _split_folder(split, split_folders, source)
        class_names = sorted(
            {c for f in split_folders for c in tree[f] if c is not None}
        )
        per_class = [sorted(tree[folder].get(c, [])) for c in class_names]
    else:
        class_names = sorted(tree)
        per_class = [
            _holdout(
                [n for group in tree[c].values() for n in group],
                split,
                holdout_fraction,
                seed=(seed, i),
            )
            for i, c in enumerate(class_names)
        ]
    counts = [len(files) for files in per_class]
    if not sum(counts):
        raise ValueError(
            f"Holding out {holdout_fraction} of each class of {source} leaves "
            f"no images for split {split!r}. Pass a larger holdout_fraction. "
            f"Received: holdout_fraction={holdout_fraction}"
        )
    labels = np.repeat(np.arange(len(class_names), dtype=np.int32), counts)
    return [n for files in per_class for n in files], labels, class_names


def _group_by_folder(names):
    """Groups paths as `{folder: {subfolder or None: [names]}}`.

    Folders that wrap everything, like a tar's top folder, are looked
    through. Files directly under the root belong to no class and are left
    out. Only strings are kept per file: tens of thousands of small lists
    would trigger Python's garbage collector over and over.
    """
    paths = [posixpath.normpath(n) for n in names]
    depth = _wrapper_depth(paths)
    tree = {}
    for name, path in zip(names, paths):
        parts = path.split("/")[depth:]
        if len(parts) >= 2:
            subfolder = parts[1] if len(parts) >= 3 else None
            tree.setdefault(parts[0], {}).setdefault(subfolder, []).append(name)
    return tree


def _wrapper_depth(paths):
    """Counts the leading folders that every path shares above its class."""
    depth = 0
    # A wrapper needs a class folder and a file below it.
    while paths and all(p.count("/") > depth + 1 for p in paths):
        folders = {p.split("/", depth + 1)[depth] for p in paths}
        if len(folders) != 1 or folders.pop().lower() in _FOLDER_SPLITS:
            break
        depth += 1
    return depth


def _split_folder(split, folders, source):
    """Finds the folder of `split`, accepting any test-split alias."""
    by_name = {f.lower(): f for f in folders}
    for candidate in _SPLIT_FOLDERS[split]:
        if candidate in by_name:
            return by_name[candidate]
    raise ValueError(
        f"No {split!r} split folder in {source}; found split folders "
        f"{sorted(folders)}. Received: split={split!r}"
    )


def _holdout(names, split, holdout_fraction, seed):
    """Returns the sorted names of one class that fall in `split`.

    The seeded permutation makes train and test disjoint and reproducible.
    """
    names = sorted(names)
    order = np.random.default_rng(seed).permutation(len(names))
    num_test = int(round(holdout_fraction * len(names)))
    picked = order[:num_test] if split in _TEST_SPLITS else order[num_test:]
    return [names[i] for i in sorted(picked)]


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


def _epoch_stream(
    images, labels, *, batch_size, augment, shuffle, seed, drop_remainder, first_epoch
):
    """Endless epochs from `first_epoch` on, each a function of `(seed, epoch)` alone."""
    images, labels = tf.constant(images), tf.constant(labels)
    count = int(labels.shape[0])
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else 1.0

    def epoch_batches(epoch):
        epoch_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.argsort(tf.random.stateless_uniform([count], epoch_seed))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        return batches.enumerate().map(
            lambda number, picked: _epoch_batch(images, labels, picked, scale, augment, epoch_seed, number),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    epochs = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
    return epochs.flat_map(epoch_batches).prefetch(tf.data.AUTOTUNE)


def _epoch_batch(images, labels, picked, scale, augment, epoch_seed, number):
    batch = tf.cast(tf.gather(images, picked), tf.float32) * scale
    if augment:
        batch = augment_batch(batch, seed=tf.random.experimental.stateless_fold_in(epoch_seed, number))
    return batch, tf.gather(labels, picked)


def _build_pipeline(
    images, labels, *, batch_size, augment, shuffle, seed, drop_remainder
):
    """Shuffles, batches, scales and augments in-memory arrays."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(
            len(labels), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    # Scaling after batching keeps the shuffle buffer uint8, 4x smaller.
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0

    def to_float(batch_images):
        return tf.cast(batch_images, tf.float32) * scale

    if augment:
        # One stateless seed per batch: reproducible for a given `seed`, yet
        # different each epoch and safe under parallel map.
        batch_seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        ).batch(2)
        dataset = tf.data.Dataset.zip(dataset, batch_seeds).map(
            lambda batch, batch_seed: (
                augment_batch(to_float(batch[0]), seed=batch_seed),
                batch[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(
            lambda batch_images, batch_labels: (
                to_float(batch_images),
                batch_labels,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
