"""Images streamed from files every epoch, for data sets too large to decode into memory.

The ImageNet recipe (docs/imagenet.md) reads a folder of class folders
(`ROOT/train/<class>/*.JPEG`, `ROOT/val/<class>/*.JPEG`) or a prepared TFDS
data set such as `imagenet2012`. Training images get the usual ImageNet
augmentation, a random-resized crop (8–100% of the area, aspect ratio 3/4–4/3)
and a horizontal flip; evaluation images are resized so that the centre
crop of `image_size` is 87.5% of the shorter side.

Each worker reads only its own files (file-level sharding through the
`tf.distribute.InputContext` that `distribute_datasets_from_function`
passes). For folder sources an epoch's order and every image's augmentation
depend only on the seed, the epoch and the image's place in that order, so
any number of workers, and a run resumed at any epoch, see the same crops.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_robust.common.validation import check_positive_int
from keras_robust.data import list_image_folders

CROP_AREA = (0.08, 1.0)
CROP_ASPECT_RATIO = (3 / 4, 4 / 3)
CENTER_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class StreamedData:
    """A streamed split and what a model needs to know about it.

    Attributes:
        dataset_fn: `input_context -> tf.data.Dataset` of per-replica
            `(images, labels)` batches of this worker's files, for
            `strategy.distribute_datasets_from_function`.
        num_examples: Images in the split.
        class_names: Class names; label `i` means `class_names[i]`.
        image_shape: `(image_size, image_size, 3)`.
        steps_per_epoch: Global batches in one epoch (the last partial one
            is dropped, so every replica gets a full batch).
    """

    dataset_fn: object
    num_examples: int
    class_names: list
    image_shape: tuple
    steps_per_epoch: int

    def distribute(self, strategy):
        """The split as a distributed dataset of `strategy` (any strategy, one device too)."""
        return strategy.distribute_datasets_from_function(self.dataset_fn)


def stream_images(source, split="train", *, batch_size, image_size=224, training=None, seed=0,
                  first_epoch=0, limit=None, data_dir=None, manual_dir=None):
    """Streams a split of `source` from its files (see the module docstring).

    Example:

    >>> data = stream_images("/data/imagenet", "train", batch_size=256)
    >>> model.fit(data.distribute(strategy), steps_per_epoch=data.steps_per_epoch, epochs=90)

    Args:
        source: A folder of class folders, or `"tfds:NAME"` (e.g.
            `"tfds:imagenet2012"`) prepared in `data_dir` or preparable from
            the archives in `manual_dir`.
        split: `"train"`, or `"val"`/`"validation"`/`"test"`.
        batch_size: Global batch size (all replicas together).
        image_size: Side of the square crop.
        training: Random-resized crops, flips and a new order each epoch.
            Defaults to `split == "train"`.
        seed: Seed of the order and the augmentation.
        first_epoch: The epoch the stream starts at (a resumed run).
        limit: Use only the first `limit` images of a seeded shuffle.
        data_dir: TFDS data directory.
        manual_dir: Where TFDS finds manually downloaded archives (ImageNet's).

    Returns:
        A `StreamedData`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("image_size", image_size)
    training = split == "train" if training is None else training
    if isinstance(source, str) and source.startswith("tfds:"):
        return _tfds_stream(source[len("tfds:"):], split, batch_size, image_size, training, seed,
                            limit, data_dir, manual_dir)
    paths, labels, class_names = list_image_folders(source, split, seed=seed)
    with Image.open(paths[0]) as first:  # reads the header only
        _check_not_upscaled(source, first.size, image_size)
    if limit is not None:
        check_positive_int("limit", limit)
        keep = np.sort(np.random.default_rng(seed).permutation(len(paths))[:limit])
        paths, labels = [paths[i] for i in keep], labels[keep]
    steps = len(paths) // batch_size
    if steps == 0:
        raise ValueError(f"{source} has {len(paths)} {split} images, fewer than one batch. "
                         f"Received: batch_size={batch_size}")

    def dataset_fn(context=None):
        context = context or tf.distribute.InputContext()
        files = tf.constant(paths)
        file_labels = tf.constant(labels, tf.int32)
        per_replica = context.get_per_replica_batch_size(batch_size)

        def epoch_images(epoch):
            epoch_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
            order = tf.range(len(paths), dtype=tf.int64)
            if training:
                order = tf.cast(tf.argsort(tf.random.stateless_uniform([len(paths)], epoch_seed)), tf.int64)
            # A whole number of global batches, every worker's share equal.
            order = order[: steps * batch_size]
            positions = tf.data.Dataset.range(steps * batch_size).shard(
                context.num_input_pipelines, context.input_pipeline_id)
            return positions.map(
                lambda position: _load(files[order[position]], file_labels[order[position]], image_size,
                                       training, tf.random.experimental.stateless_fold_in(epoch_seed, position)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        epochs = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max)
        return (epochs.flat_map(epoch_images).batch(per_replica, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE))

    return StreamedData(dataset_fn, len(paths), list(class_names), (image_size, image_size, 3), steps)


def _check_not_upscaled(source, size, image_size):
    """Refuses images whose shorter side is under half the crop: they would be upscaled into blur.

    Streaming (the imagenet recipe) is for large images; small ones, such as
    CIFAR-10's 32×32, train at their own size with the cifar recipe.
    """
    if 2 * min(size) < image_size:
        raise ValueError(
            f"{source} holds {size[0]}×{size[1]} images: a {image_size}×{image_size} crop would upscale them "
            f"{image_size / min(size):.0f}×. Stream images of at least {image_size // 2} pixels a side, or train "
            f"small images with the cifar recipe (--recipe cifar). Received: image_size={image_size}")


def _load(path, label, image_size, training, seed):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return _prepare(image, image_size, training, seed), label


def _prepare(image, image_size, training, seed):
    """A decoded uint8 image → float32 `(image_size, image_size, 3)` in [0, 1]."""
    image.set_shape([None, None, 3])
    if training:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
            aspect_ratio_range=CROP_ASPECT_RATIO, area_range=CROP_AREA, max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, tf.random.experimental.stateless_fold_in(seed, 1))
    else:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = image_size / CENTER_CROP_FRACTION / tf.reduce_min(shape)
        image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32), antialias=True)
        image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def _tfds_stream(name, split, batch_size, image_size, training, seed, limit, data_dir, manual_dir):
    """A TFDS split, each worker reading its own part. TFDS fixes the file
    order per run, so a resumed run reshuffles instead of replaying the epoch."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if manual_dir is None:
            raise ValueError(
                f"TFDS data set {name!r} is not prepared in {builder.data_dir}; for ImageNet, pass "
                "manual_dir (--manual-dir) holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar")
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    # ImageNet's TFDS test split has no labels: "val" and "test" mean its validation split.
    tfds_split = split if split in builder.info.splits and split != "test" else "validation"
    count = builder.info.splits[tfds_split].num_examples
    count = min(count, limit) if limit else count
    steps = count // batch_size
    class_names = list(builder.info.features["label"].names)
    height, width = builder.info.features["image"].shape[:2]
    if height and width:  # known for data sets of one image size (CIFAR-10), None for ImageNet
        _check_not_upscaled(f"tfds:{name}", (width, height), image_size)

    def dataset_fn(context=None):
        context = context or tf.distribute.InputContext()
        # Each worker reads its own contiguous part of the split's files, which
        # works for any number of files (ReadConfig's input_context needs at
        # least one file per worker).
        part = tfds.even_splits(f"{tfds_split}[:{count}]", n=context.num_input_pipelines)[context.input_pipeline_id]
        dataset = builder.as_dataset(split=part, shuffle_files=training,
                                     read_config=tfds.ReadConfig(shuffle_seed=seed),
                                     decoders={"image": tfds.decode.SkipDecoding()})
        dataset = dataset.repeat()
        if training:
            dataset = dataset.shuffle(10 * batch_size, seed=seed)
        per_replica = context.get_per_replica_batch_size(batch_size)
        element_seeds = tf.data.Dataset.random(seed=seed).batch(2)
        return (tf.data.Dataset.zip(dataset, element_seeds)
                .map(lambda example, element_seed: (
                    _prepare(tf.io.decode_image(example["image"], channels=3, expand_animations=False),
                             image_size, training, element_seed),
                    tf.cast(example["label"], tf.int32)), num_parallel_calls=tf.data.AUTOTUNE)
                .batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

    return StreamedData(dataset_fn, count, class_names, (image_size, image_size, 3), steps)

