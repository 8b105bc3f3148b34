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
import numbers
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_robust.common.validation import check_positive_int
from keras_robust.data.arrays import _load_arrays, _resize_array
from keras_robust.data.augmentation import augment_batch
from keras_robust.data.folders import _load_image_folders
from keras_robust.data.tfds_source import _load_tfds


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

    def arrays(self):
        """One pass over `dataset` as NumPy arrays.

        Returns:
            A tuple `(images, labels)`: the pass's batches concatenated in
            the order `dataset` yields them, float32 images of shape
            `(examples, height, width, 3)` and int32 labels of shape
            `(examples,)`. A shuffled or augmented split gives this pass's
            order and augmentation; an endless stream (`first_epoch`) gives
            its first `steps_per_epoch` batches.
        """
        dataset = self.dataset if self.steps_per_epoch is None else self.dataset.take(self.steps_per_epoch)
        batches = [(images.numpy(), labels.numpy()) for images, labels in dataset]
        images, labels = (np.concatenate(parts) for parts in zip(*batches))
        return images, labels


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
