"""`keras_robust.data.streaming`: ImageNet-style crops streamed from files, sharded by file."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_robust.data.streaming import stream_images


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for name in ("ant", "bee", "cow"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                height, width = rng.integers(40, 90, 2)
                pixels = rng.integers(0, 255, (height, width, 3), dtype="uint8")
                Image.fromarray(pixels).save(root / split / name / f"{i}.JPEG", format="JPEG")
    return root


def batches(data, count, context=None):
    return [(x.numpy(), y.numpy()) for x, y in data.dataset_fn(context).take(count)]


def test_training_crops_are_square_pixels_in_range_with_valid_labels(tree):
    data = stream_images(tree, "train", batch_size=4, image_size=32)
    assert (data.num_examples, data.steps_per_epoch, data.class_names) == (24, 6, ["ant", "bee", "cow"])
    for x, y in batches(data, 6):
        assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
        assert 0 <= x.min() and x.max() <= 1 and set(y) <= {0, 1, 2}
    labels = np.concatenate([y for _, y in batches(data, 6)])
    assert sorted(labels) == [0] * 8 + [1] * 8 + [2] * 8  # one epoch: every image once


def test_evaluation_crop_is_the_central_87_5_percent(tmp_path):
    """A 40×80 image whose left and right quarters are white: resized so its shorter
    side is 32 / 0.875, then centre-cropped to 32, only grey (the middle) remains."""
    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
    pixels = np.full((40, 80, 3), 100, "uint8")
    pixels[:, :20] = pixels[:, 60:] = 255
    Image.fromarray(pixels).save(tmp_path / "val" / "only" / "a.png")
    Image.fromarray(pixels).save(tmp_path / "train" / "only" / "a.png")
    (x, _), = batches(stream_images(tmp_path, "val", batch_size=1, image_size=32), 1)
    # Shorter side 40 -> 36.57 px: the width becomes 73, the white bands end at
    # 18.3 px from each side, and the crop keeps columns 20.5..52.5 of it.
    np.testing.assert_allclose(x[0, :, 2:-2], 100 / 255, atol=2e-3)


def test_two_workers_read_disjoint_files_that_make_up_the_one_worker_batches(tree):
    data = stream_images(tree, "train", batch_size=4, image_size=32, seed=5)
    one = batches(data, 12)  # two epochs
    workers = [batches(data, 12, tf.distribute.InputContext(2, index, 2)) for index in range(2)]
    for step, (x, y) in enumerate(one):
        # Worker i holds the global positions ≡ i (mod 2) of each global batch.
        np.testing.assert_array_equal(y[0::2], workers[0][step][1])
        np.testing.assert_array_equal(y[1::2], workers[1][step][1])
        np.testing.assert_allclose(x[1::2], workers[1][step][0], atol=1e-6)


def test_a_resumed_stream_replays_the_epoch_and_epochs_differ(tree):
    data = stream_images(tree, "train", batch_size=4, image_size=32, seed=5)
    uninterrupted = batches(data, 12)
    resumed = batches(stream_images(tree, "train", batch_size=4, image_size=32, seed=5, first_epoch=1), 6)
    for (x, y), (x_again, y_again) in zip(uninterrupted[6:], resumed):
        np.testing.assert_array_equal(y, y_again)
        np.testing.assert_allclose(x, x_again, atol=1e-6)
    first, second = (np.concatenate([y for _, y in uninterrupted[e * 6:(e + 1) * 6]]) for e in (0, 1))
    assert not np.array_equal(first, second)


def test_clear_errors(tree, tmp_path):
    (tmp_path / "images.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="must be a folder of class folders \\(extract archives first\\)"):
        stream_images(tmp_path / "images.tar", batch_size=4)
    with pytest.raises(ValueError, match="has 6 val images, fewer than one batch. Received: batch_size=8"):
        stream_images(tree, "val", batch_size=8, image_size=32)
    with pytest.raises(ValueError, match="TFDS data set 'tiny_stream_images' is not prepared"):
        stream_images("tfds:tiny_stream_images", batch_size=4, data_dir=str(tmp_path / "tfds"))


class TinyStreamImages(tfds.core.GeneratorBasedBuilder):
    """A real (if tiny) TFDS data set, to stream the TFDS path end to end."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["ant", "bee"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(16), "validation": self._generate_examples(4)}

    def _generate_examples(self, count):
        rng = np.random.default_rng(count)
        for i in range(count):
            yield i, {"image": rng.integers(0, 255, (48, 40, 3), dtype="uint8"), "label": i % 2}


def test_a_prepared_tfds_data_set_streams_sharded_by_file(tmp_path):
    TinyStreamImages(data_dir=str(tmp_path)).download_and_prepare()
    data = stream_images("tfds:tiny_stream_images", "train", batch_size=4, image_size=24, data_dir=str(tmp_path))
    assert (data.num_examples, data.steps_per_epoch, data.class_names) == (16, 4, ["ant", "bee"])
    for x, y in batches(data, 5):
        assert x.shape == (4, 24, 24, 3) and 0 <= x.min() and x.max() <= 1 and set(y) <= {0, 1}
    val = stream_images("tfds:tiny_stream_images", "val", batch_size=2, image_size=24, data_dir=str(tmp_path))
    assert val.num_examples == 4
    assert len(batches(val, 2, tf.distribute.InputContext(2, 1, 2))[0][1]) == 1


def test_small_images_are_refused_not_upscaled(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "only").mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), "uint8")).save(tmp_path / split / "only" / "a.png")
    with pytest.raises(ValueError, match=r"holds 32×32 images: a 224×224 crop would upscale them 7×\. .*"
                                         r"--recipe cifar\)\. Received: image_size=224"):
        stream_images(tmp_path, "train", batch_size=1)
    assert stream_images(tmp_path, "train", batch_size=1, image_size=64).num_examples == 1  # 2× at most


class TinyFixedImages(TinyStreamImages):
    """A TFDS data set of one small image size, as CIFAR-10's."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(names=["ant", "bee"])}))

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.zeros((8, 8, 3), "uint8"), "label": i % 2}


def test_a_tfds_data_set_of_small_images_is_refused_not_upscaled(tmp_path):
    TinyFixedImages(data_dir=str(tmp_path)).download_and_prepare()
    with pytest.raises(ValueError, match=r"tfds:tiny_fixed_images holds 8×8 images: a 224×224 crop would upscale"):
        stream_images("tfds:tiny_fixed_images", "train", batch_size=4, data_dir=str(tmp_path))
