"""Checks of the batches `RobustModel.fit` trains on, before they reach the weights.

Arrays are checked whole; a `tf.data.Dataset` batch by batch inside the input
pipeline (outside the possibly XLA-compiled step, where an assertion would be
dropped); a generator batch by batch as it is read.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_robust.common.validation import check_pixels
from keras_robust.method.model_calls import num_classes_of


def check_training_inputs(classifier, x, y):
    """Validates array inputs, or a dataset's first batch, before training starts."""
    if isinstance(x, tf.data.Dataset):
        batch = next(iter(x.take(1)), None)
        if batch is None:
            raise ValueError("The training dataset is empty. Received: x=<empty tf.data.Dataset>")
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(batch)
    elif x is not None and y is not None and not callable(getattr(x, "__next__", None)):
        images, labels = x, y
    else:
        return
    _validate_batch(classifier, np.asarray(images), np.asarray(labels))


BAD_BATCH_MARKER = "keras-robust: bad training batch"


def checked_dataset(dataset, num_classes):
    """`dataset` with an in-graph check of each batch, numbered from 1 in every epoch.

    The check runs in the input pipeline, outside the (possibly XLA-compiled)
    train step, where an assertion would be dropped.
    """

    def check(index, batch):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(batch)
        images = tf.convert_to_tensor(images)
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        number = index + 1
        checks = [
            (tf.reduce_all(tf.math.is_finite(tf.cast(images, tf.float32))),
             ["has NaN or infinite image values"]),
            (tf.logical_and(tf.reduce_min(images) >= 0, tf.reduce_max(images) <= 1),
             ["has image values outside [0, 1]: min", tf.reduce_min(images), "max", tf.reduce_max(images)]),
        ]
        if num_classes:
            bad = tf.logical_or(labels < 0, labels >= num_classes)
            checks.append((tf.logical_not(tf.reduce_any(bad)),
                           [f"has a label outside 0..{num_classes - 1}:", tf.boolean_mask(labels, bad)[:1]]))
        asserts = [tf.debugging.Assert(ok, [BAD_BATCH_MARKER, number, *what], summarize=3) for ok, what in checks]
        with tf.control_dependencies(asserts):
            return tf.nest.map_structure(tf.identity, batch)

    return dataset.enumerate().map(check)


def checked_generator(classifier, generator):
    for number, batch in enumerate(generator, start=1):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(batch)
        try:
            _validate_batch(classifier, np.asarray(images), np.asarray(labels))
        except ValueError as error:
            raise ValueError(f"Training batch {number}: {error}") from None
        yield batch


def bad_batch_message(error):
    """'Training batch N has ...' from a failed batch check, or None for other errors."""
    text = str(getattr(error, "message", error))
    if BAD_BATCH_MARKER not in text:
        return None
    # Assert prints its data as "[marker] [number] [what]..." on the first line.
    fields = text.split(BAD_BATCH_MARKER, 1)[1].split("\n", 1)[0].strip(" []").split("] [")
    return "Training batch " + " ".join(field.strip() for field in fields) + "; training stopped before it"


def _validate_batch(classifier, images, labels):
    """Clear errors for the mistakes that would otherwise fail deep in TensorFlow."""
    expected = classifier.input_shape[1:] if _has_input_shape(classifier) else None
    if expected and (
        images.ndim != len(expected) + 1
        or any(e is not None and e != s for e, s in zip(expected, images.shape[1:]))
    ):
        raise ValueError(
            f"Images must have shape (batch, {', '.join(map(str, expected))}) for this "
            f"classifier. Received: images.shape={images.shape}"
        )
    check_pixels(images)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"Labels must be integer class indices. Received: labels.dtype={labels.dtype}"
        )
    num_classes = num_classes_of(classifier)
    bad = labels[(labels < 0) | (labels >= (num_classes or np.inf))]
    if bad.size:
        raise ValueError(
            f"Labels must be in [0, {num_classes}) for this {num_classes}-class classifier. "
            f"Received: label {int(bad[0])}"
        )


def _has_input_shape(classifier):
    try:
        return classifier.input_shape is not None
    except (AttributeError, ValueError):
        return False
