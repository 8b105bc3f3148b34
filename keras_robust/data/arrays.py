"""In-memory array sources: the checks of `(images, labels)` arrays, and resizing them."""

import numpy as np
import tensorflow as tf

from keras_robust.common.validation import check_pixels, check_positive_int


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
    # uint8 arrays are taken as they are (and scaled), so name them beside floats.
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            "Expected uint8 images in [0, 255] or float images in [0, 1]. "
            f"Received: images.dtype={images.dtype}"
        )
    check_pixels(images)


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
