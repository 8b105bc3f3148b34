"""Tests for `keras_robust.data`."""

import itertools
import os
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_robust import data
from keras_robust.data import decoding

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


class KerasRobustTinyDataset(tfds.core.GeneratorBasedBuilder):
    """A TFDS builder that prepares offline, for the `tfds:` happy path."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(
                        names=["cat", "dog", "emu"]
                    ),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(12),
            "test": self._generate_examples(6),
        }

    def _generate_examples(self, num_examples):
        for i in range(num_examples):
            image = np.zeros((8, 8, 3), np.uint8)
            image[..., 0] = i * 10  # What `_image_id` reads back.
            yield i, {"image": image, "label": i % 3}


def _image_id(array):
    """Recovers the id that `_write_image` encoded in an image's pixels."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = np.round(array * 255).astype(np.int64)
    return int(array[0, 0, 0]) + 256 * int(array[0, 0, 1])


def _write_image(path, image_id, size=(6, 5), mode="RGB"):
    """Writes a lossless image whose pixels encode `image_id`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(size + (3,), np.uint8)
    pixels[..., 0] = image_id % 256
    pixels[..., 1] = image_id // 256
    Image.fromarray(pixels).convert(mode).save(path)


def _make_classes(root, classes, per_class, first_id=0, size=(6, 5)):
    """Writes `per_class` images per class; returns {image_id: class}."""
    ids = {}
    image_id = first_id
    for class_name in classes:
        for i in range(per_class):
            _write_image(root / class_name / f"{i:03d}.png", image_id, size)
            ids[image_id] = class_name
            image_id += 1
    return ids


def _collect(loaded):
    """Concatenates all batches of a `LoadedData` into NumPy arrays."""
    images, labels = [], []
    for batch_images, batch_labels in loaded.dataset:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _load(source, split="test", **kwargs):
    kwargs.setdefault("augment", False)
    kwargs.setdefault("shuffle", False)
    return data.load_dataset(source, split, **kwargs)


def _check_ids(images, labels, class_names, ids):
    """Checks each image's label against the class it was written under."""
    for image, label in zip(images, labels):
        assert class_names[label] == ids[_image_id(image)]


# Augmentation.


def test_augment_batch_matches_numpy_pad_crop_flip():
    rng = np.random.default_rng(0)
    # Non-square images catch swapped rows and columns.
    images = rng.random((64, 7, 5, 3)).astype(np.float32)
    out, oy, ox, flip = data.augment_batch(images, seed=3, return_params=True)
    out, oy, ox, flip = out.numpy(), oy.numpy(), ox.numpy(), flip.numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    for i, image in enumerate(images):
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="edge")
        expected = padded[oy[i] : oy[i] + 7, ox[i] : ox[i] + 5]
        if flip[i]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(out[i], expected)
    # The batch must exercise both branches and the padded borders.
    assert flip.any() and not flip.all()
    assert {0, 8} <= set(oy) | set(ox)


def test_augment_batch_offsets_uniform_and_flips_half():
    images = tf.zeros((4000, 2, 2, 1))
    for seed in (None, 11):
        _, oy, ox, flip = data.augment_batch(
            images, seed=seed, return_params=True
        )
        for offsets in (oy.numpy(), ox.numpy()):
            counts = np.bincount(offsets, minlength=9)
            assert len(counts) == 9
            # Each of the 9 offsets is expected 444 times.
            assert counts.min() > 350 and counts.max() < 550
        assert 0.45 < flip.numpy().mean() < 0.55


def test_augment_batch_seeds_are_reproducible():
    images = np.random.default_rng(1).random((8, 6, 6, 3)).astype(np.float32)
    first = data.augment_batch(images, seed=5).numpy()
    np.testing.assert_array_equal(first, data.augment_batch(images, 5).numpy())
    assert not np.array_equal(first, data.augment_batch(images, 6).numpy())


def test_training_pipeline_augments_differently_each_epoch():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(32) % 4
    loaded = data.load_dataset((images, labels), "train", batch_size=8)
    first, first_labels = _collect(loaded)
    second, _ = _collect(loaded)
    assert first.dtype == np.float32 and first.shape == (32, 8, 8, 3)
    assert not np.array_equal(first, second)
    # Shuffled, but every example is still there once.
    assert sorted(first_labels) == sorted(labels)
    # The same seed replays the same epochs.
    replay = data.load_dataset((images, labels), "train", batch_size=8)
    np.testing.assert_array_equal(_collect(replay)[0], first)


# Folder and archive sources.


def test_directory_with_split_folders(tmp_path):
    # The single wrapper folder must be descended into.
    root = tmp_path / "images" / "wrapper"
    classes = ["zebra", "ant", "moose"]
    train_ids = _make_classes(root / "train", classes, 4)
    test_ids = _make_classes(root / "test", classes, 2, first_id=100)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    _write_image(root / "test" / "moose" / "UPPER.PNG", 200)
    test_ids[200] = "moose"

    train = _load(tmp_path / "images", "train", cache_dir=tmp_path / "c")
    test = _load(tmp_path / "images", "test", cache_dir=tmp_path / "c")
    assert train.class_names == test.class_names == ["ant", "moose", "zebra"]
    assert train.num_examples == 12 and test.num_examples == 7
    assert train.image_shape == (6, 5, 3)
    for loaded, ids in ((train, train_ids), (test, test_ids)):
        images, labels = _collect(loaded)
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert images.shape == (len(ids), 6, 5, 3)
        assert 0.0 <= images.min() and images.max() <= 1.0
        _check_ids(images, labels, loaded.class_names, ids)
        assert {_image_id(i) for i in images} == set(ids)
    assert list(_collect(test)[1]) == [0, 0, 1, 1, 1, 2, 2]


def test_directory_without_split_folders_holds_out_each_class(tmp_path):
    ids = _make_classes(tmp_path / "flat", ["b", "a", "c"], 20)
    kwargs = dict(holdout_fraction=0.25, seed=7, cache_dir=tmp_path / "c1")
    train = _load(tmp_path / "flat", "train", **kwargs)
    test = _load(tmp_path / "flat", "test", **kwargs)
    assert train.class_names == ["a", "b", "c"]
    assert (train.num_examples, test.num_examples) == (45, 15)
    train_images, train_labels = _collect(train)
    test_images, test_labels = _collect(test)
    assert np.bincount(test_labels).tolist() == [5, 5, 5]
    _check_ids(train_images, train_labels, train.class_names, ids)
    _check_ids(test_images, test_labels, test.class_names, ids)
    train_ids = {_image_id(i) for i in train_images}
    test_ids = {_image_id(i) for i in test_images}
    assert not train_ids & test_ids and train_ids | test_ids == set(ids)

    # Decoding again elsewhere gives the same holdout; another seed does not.
    kwargs["cache_dir"] = tmp_path / "c2"
    again = _load(tmp_path / "flat", "test", **kwargs)
    assert {_image_id(i) for i in _collect(again)[0]} == test_ids
    other = _load(
        tmp_path / "flat",
        "val",
        cache_dir=tmp_path / "c2",
        holdout_fraction=0.25,
        seed=8,
    )
    assert {_image_id(i) for i in _collect(other)[0]} != test_ids

    with pytest.raises(ValueError, match="Received: holdout_fraction=0.01"):
        _load(tmp_path / "flat", holdout_fraction=0.01, cache_dir=tmp_path)


def test_tar_gz_with_top_level_folder(tmp_path):
    tree = tmp_path / "tree"
    classes = ["dog", "cat"]
    train_ids = _make_classes(tree / "train", classes, 3)
    val_ids = _make_classes(tree / "val", classes, 2, first_id=50)
    archive = tmp_path / "pets.tar.gz"
    # File members only, like the shared CIFAR-10 archive.
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(tree.rglob("*.png")):
            tar.add(path, arcname=f"pets/{path.relative_to(tree)}")

    for split, ids in (("train", train_ids), ("test", val_ids)):
        loaded = _load(archive, split, cache_dir=tmp_path / "c", batch_size=4)
        assert loaded.class_names == ["cat", "dog"]
        assert loaded.num_examples == len(ids)
        assert loaded.image_shape == (6, 5, 3)
        images, labels = _collect(loaded)
        assert images.dtype == np.float32 and labels.dtype == np.int32
        _check_ids(images, labels, loaded.class_names, ids)
        assert {_image_id(i) for i in images} == set(ids)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    _write_image(tmp_path / "src" / "a" / "gray.png", 9, mode="L")
    _write_image(tmp_path / "src" / "b" / "alpha.png", 9, mode="RGBA")
    loaded = _load(tmp_path / "src", "train", cache_dir=tmp_path / "c")
    images, _ = _collect(loaded)
    assert images.shape == (2, 6, 5, 3)
    gray = images[0]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_allclose(images[1, ..., 0], 9 / 255)


def test_image_size_resizes_mixed_sizes(tmp_path):
    _write_image(tmp_path / "src" / "a" / "small.png", 1, size=(6, 5))
    _write_image(tmp_path / "src" / "b" / "large.png", 2, size=(12, 10))
    loaded = _load(
        tmp_path / "src", "train", cache_dir=tmp_path / "c", image_size=(4, 3)
    )
    images, labels = _collect(loaded)
    assert loaded.image_shape == (4, 3, 3) and images.shape == (2, 4, 3, 3)
    # Uniform images stay uniform under bilinear resizing.
    assert [_image_id(i) for i in images] == [1, 2]
    assert list(labels) == [0, 1]


def test_limit_batching_and_drop_remainder(tmp_path):
    images = np.zeros((10, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(10)
    labels = np.arange(10) % 2
    loaded = _load((images, labels), batch_size=4)
    assert [len(b) for b, _ in loaded.dataset] == [4, 4, 2]
    dropped = _load((images, labels), batch_size=4, drop_remainder=True)
    assert [len(b) for b, _ in dropped.dataset] == [4, 4]

    subset = _load((images, labels), limit=6, seed=1)
    ids = [_image_id(i) for i in _collect(subset)[0]]
    assert subset.num_examples == 6 and len(set(ids)) == 6
    again = _load((images, labels), limit=6, seed=1)
    assert [_image_id(i) for i in _collect(again)[0]] == ids
    assert _load((images, labels), limit=50).num_examples == 10


# The decode cache.


def test_second_load_reads_cache_without_decoding(tmp_path, monkeypatch):
    ids = _make_classes(tmp_path / "src", ["x", "y"], 3)
    cache_dir = tmp_path / "cache"
    # A leftover from an interrupted write must not get in the way.
    cache_dir.mkdir()
    (cache_dir / "src-test-0123456789abcdef.npz.abc.tmp").write_bytes(b"PK\0")
    first = _collect(_load(tmp_path / "src", "train", cache_dir=cache_dir))

    def fail(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(decoding, "_decode_image", fail)
    second = _load(tmp_path / "src", "train", cache_dir=cache_dir)
    assert second.class_names == ["x", "y"]
    for a, b in zip(first, _collect(second)):
        np.testing.assert_array_equal(a, b)
    assert {_image_id(i) for i in first[0]} == set(ids)
    caches = list(cache_dir.glob("*.npz"))
    assert len(caches) == 1
    assert len(list(cache_dir.glob("*.tmp"))) == 1  # only the planted one


def test_corrupt_cache_is_rebuilt(tmp_path):
    _make_classes(tmp_path / "src", ["x", "y"], 2)
    cache_dir = tmp_path / "cache"
    expected = _collect(_load(tmp_path / "src", "train", cache_dir=cache_dir))
    (cache_file,) = cache_dir.glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable cache"):
        rebuilt = _collect(
            _load(tmp_path / "src", "train", cache_dir=cache_dir)
        )
    np.testing.assert_array_equal(rebuilt[0], expected[0])
    assert np.load(cache_file)["images"].shape == (4, 6, 5, 3)


def test_changed_directory_invalidates_cache(tmp_path):
    _make_classes(tmp_path / "src", ["x", "y"], 2)
    cache_dir = tmp_path / "cache"
    loaded = _load(tmp_path / "src", "train", cache_dir=cache_dir)
    assert loaded.num_examples == 4
    _write_image(tmp_path / "src" / "y" / "new.png", 77)
    loaded = _load(tmp_path / "src", "train", cache_dir=cache_dir)
    assert loaded.num_examples == 5
    assert len(list(cache_dir.glob("*.npz"))) == 2


# Bad folder and archive sources.


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(FileNotFoundError, match="nowhere.tar.gz"):
        _load(missing, cache_dir=tmp_path / "c")


def test_a_bare_name_suggests_the_tfds_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="write 'tfds:cifar10'"):
        _load("cifar10", cache_dir=tmp_path / "c")


def test_corrupt_image_in_directory_is_named(tmp_path):
    _make_classes(tmp_path / "src", ["x", "y"], 2)
    (tmp_path / "src" / "y" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        _load(tmp_path / "src", "train", cache_dir=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*"))


def test_corrupt_image_in_tar_names_member(tmp_path):
    tree = tmp_path / "tree"
    _make_classes(tree / "train", ["x", "y"], 1)
    (tree / "train" / "x" / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            tar.add(path, arcname=f"top/{path.relative_to(tree)}")
    with pytest.raises(ValueError, match=r"'top/train/x/bad\.jpg'"):
        _load(archive, "train", cache_dir=tmp_path / "c")


def test_mixed_sizes_name_the_file_and_suggest_image_size(tmp_path):
    _write_image(tmp_path / "src" / "a" / "0.png", 1, size=(6, 5))
    _write_image(tmp_path / "src" / "b" / "odd.png", 2, size=(7, 5))
    with pytest.raises(ValueError, match=r"odd\.png.*7x5.*6x5.*image_size"):
        _load(tmp_path / "src", "train", cache_dir=tmp_path / "c")


@pytest.mark.parametrize("content", ["empty", "loose_images", "no_images"])
def test_directory_without_class_images_explains_layout(tmp_path, content):
    source = tmp_path / "src"
    source.mkdir()
    if content == "loose_images":
        _write_image(source / "0.png", 0)
    elif content == "no_images":
        (source / "cls").mkdir()
        (source / "cls" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="Expected class folders"):
        _load(source, "train", cache_dir=tmp_path / "c")


def test_missing_split_folder_and_bad_source_types(tmp_path):
    _make_classes(tmp_path / "src" / "train", ["x"], 1)
    with pytest.raises(ValueError, match="folder.*Received: split='test'"):
        _load(tmp_path / "src", "test", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="Received: split='holdout'"):
        _load(tmp_path / "src", "holdout", cache_dir=tmp_path / "c")
    zip_file = tmp_path / "data.zip"
    zip_file.write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"\.tar\.gz.*Received: source="):
        _load(zip_file, cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="Received: source=list"):
        _load([np.zeros((1, 2, 2, 3)), np.zeros(1)])
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        _load(tmp_path / "src", "train", batch_size=0)


# Array sources.


def test_arrays_uint8_and_float():
    images = np.full((5, 4, 4, 3), 255, np.uint8)
    loaded = _load((images, np.array([[0], [3], [1], [1], [0]])))
    assert loaded.class_names == ["0", "1", "2", "3"]
    batch_images, batch_labels = _collect(loaded)
    assert batch_images.dtype == np.float32 and np.all(batch_images == 1.0)
    assert batch_labels.dtype == np.int32
    assert list(batch_labels) == [0, 3, 1, 1, 0]

    floats = np.linspace(0, 1, 5 * 48, dtype=np.float64).reshape(5, 4, 4, 3)
    images_out, labels_out = data.validate_arrays(floats, np.arange(5))
    assert images_out.dtype == np.float32 and labels_out.dtype == np.int32
    np.testing.assert_allclose(images_out, floats, rtol=1e-6)
    np.testing.assert_allclose(
        _collect(_load((floats, np.arange(5))))[0], floats, rtol=1e-6
    )


def test_loaded_data_arrays_is_one_pass_in_order(rng):
    images = rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8)
    labels = np.arange(10) % 3
    got_images, got_labels = _load((images, labels), batch_size=4).arrays()
    assert got_images.dtype == np.float32 and got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_images, images.astype(np.float32) * np.float32(1 / 255))
    np.testing.assert_array_equal(got_labels, labels)

    # A shuffled, augmented split: the first pass of the same load, batch by batch.
    train = dict(batch_size=4, seed=5)
    shuffled = data.load_dataset((images, labels), "train", **train).arrays()
    by_hand = _collect(data.load_dataset((images, labels), "train", **train))
    for a, b in zip(shuffled, by_hand):
        np.testing.assert_array_equal(a, b)
    assert sorted(shuffled[1]) == sorted(labels)

    # An endless stream: its first epoch.
    stream = dict(batch_size=4, seed=5, first_epoch=3)
    first = data.load_dataset((images, labels), "train", **stream).arrays()
    batches = itertools.islice(data.load_dataset((images, labels), "train", **stream).dataset, 3)
    by_hand = [np.concatenate(parts) for parts in zip(*[(x.numpy(), y.numpy()) for x, y in batches])]
    for a, b in zip(first, by_hand):
        np.testing.assert_array_equal(a, b)
    assert sorted(first[1]) == sorted(labels)


_GOOD = np.zeros((3, 4, 4, 3), np.float32)
_EYE = np.eye(4, dtype=bool)[None, :, :, None]


@pytest.mark.parametrize(
    "images, labels, num_classes, message",
    [
        (np.zeros((3, 4, 4, 1)), [0, 1, 2], None, r"shape=\(3, 4, 4, 1\)"),
        (np.zeros((3, 4, 4)), [0, 1, 2], None, r"images.shape=\(3, 4, 4\)"),
        (_GOOD + 1.5, [0, 1, 2], None, r"Received: images in \[1.5, 1.5\]"),
        (_GOOD - 0.25, [0, 1, 2], None, r"Received: images in \[-0.25, -0.25\]"),
        (np.where(_EYE, np.nan, _GOOD), [0, 1, 2], None, "NaN"),
        (_GOOD + np.inf, [0, 1, 2], None, "infinite"),
        (_GOOD.astype(np.int64), [0, 1, 2], None, "images.dtype=int64"),
        (_GOOD, [0.0, 1.0, 2.0], None, "labels.dtype=float64"),
        (_GOOD, [0, -1, 2], None, "Received: label=-1"),
        (_GOOD, [0, 1], None, r"len\(images\)=3, len\(labels\)=2"),
        (_GOOD, np.zeros((3, 2), int), None, r"labels.shape=\(3, 2\)"),
        (_GOOD, [0, 1, 5], 3, "num_classes=3. Received: label=5"),
    ],
)
def test_validate_arrays_rejects_bad_input(
    images, labels, num_classes, message
):
    with pytest.raises(ValueError, match=message):
        data.validate_arrays(images, np.asarray(labels), num_classes)


def test_load_dataset_validates_arrays():
    with pytest.raises(ValueError, match=r"images.shape=\(2, 4, 4, 4\)"):
        _load((np.zeros((2, 4, 4, 4), np.uint8), np.zeros(2, int)))


# TFDS sources.


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        _load("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))


def test_tfds_not_prepared_fails_fast_with_local_alternative(tmp_path):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        _load("tfds:cifar10", data_dir=str(tmp_path), download=False)
    assert time.monotonic() - start < 20
    message = str(info.value)
    assert "not prepared in" in message and str(tmp_path) in message
    assert "offline" in message
    assert "cifar10-jpeg.tar.gz" in message and "data_dir" in message
    assert "--download" in message
    assert not os.listdir(tmp_path)


def test_tfds_prepared_dataset_loads(tmp_path):
    with pytest.raises(FileNotFoundError):
        _load("tfds:keras_robust_tiny_dataset", data_dir=str(tmp_path))
    loaded = _load(
        "tfds:keras_robust_tiny_dataset",
        data_dir=str(tmp_path),
        download=True,
        batch_size=4,
    )
    assert loaded.class_names == ["cat", "dog", "emu"]
    assert loaded.num_examples == 6 and loaded.image_shape == (8, 8, 3)
    images, labels = _collect(loaded)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    ids = [_image_id(i) for i in images]
    assert sorted(ids) == [0, 10, 20, 30, 40, 50]
    assert [label for label in labels] == [i // 10 % 3 for i in ids]


# Real data.


@pytest.mark.slow
def test_cifar10_jpeg_test_split(tmp_path, cifar10_archive):
    start = time.monotonic()
    loaded = data.load_dataset(cifar10_archive, "test", cache_dir=tmp_path)
    assert time.monotonic() - start < 30
    assert loaded.class_names == CIFAR10_CLASSES
    assert loaded.num_examples == 10000
    assert loaded.image_shape == (32, 32, 3)
    images, labels = next(iter(loaded.dataset))
    assert images.dtype == tf.float32 and images.shape == (128, 32, 32, 3)
    assert labels.dtype == tf.int32 and labels.shape == (128,)
    low, high = float(tf.reduce_min(images)), float(tf.reduce_max(images))
    assert 0.0 <= low < high <= 1.0
    cached = np.load(next(tmp_path.glob("*.npz")))
    assert np.bincount(cached["labels"]).tolist() == [1000] * 10
    assert cached["images"].shape == (10000, 32, 32, 3)


def test_epoch_stream_depends_only_on_seed_and_epoch(rng):
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(10)
    common = dict(batch_size=4, seed=3)
    whole = data.load_dataset((images, labels), "train", first_epoch=0, **common)
    assert whole.steps_per_epoch == 3
    batches = [(x.numpy(), y.numpy()) for x, y in whole.dataset.take(3 * whole.steps_per_epoch)]
    epochs = [np.concatenate([y for _, y in batches[e * 3 : e * 3 + 3]]) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(10))  # every example once per epoch
    assert not np.array_equal(epochs[0], epochs[1])
    resumed = data.load_dataset((images, labels), "train", first_epoch=2, **common)
    for (x, y), (x2, y2) in zip(batches[6:9], resumed.dataset.take(3)):
        np.testing.assert_array_equal(y, y2.numpy())
        np.testing.assert_array_equal(x, x2.numpy())  # the same augmentation too
    assert 0.0 <= batches[0][0].min() and batches[0][0].max() <= 1.0
