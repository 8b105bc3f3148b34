"""Folder and archive sources: class-folder layouts, splits and holdouts, and the image files of a split."""

import gzip
import hashlib
import io
import os
import posixpath
import tarfile
import zlib
from pathlib import Path

import numpy as np

from keras_robust.data.decoding import (
    _CACHE_VERSION,
    _cache_file,
    _decode_images,
    _read_cache,
    _write_cache,
)
from keras_robust.data.options import check_source

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
_LAYOUT_HELP = (
    "Expected class folders of images, either ROOT/<class>/<image> (a "
    "holdout of each class then forms the test split) or "
    "ROOT/train/<class>/<image> plus ROOT/test/<class>/<image>, with image "
    f"extensions {', '.join(IMAGE_EXTENSIONS)}."
)


def _load_image_folders(
    path, split, *, cache_dir, image_size, holdout_fraction, seed
):
    """Loads a folder or archive split, from the cache when possible."""
    check_source(path)
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
