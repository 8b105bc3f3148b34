"""Calling a user's classifier: with or without `training`, compiled for repeated use."""

import inspect

import keras
import numpy as np
import tensorflow as tf


def call_model(model, images, training):
    """Calls `model`, passing `training` only where the callable accepts it."""
    if isinstance(model, keras.layers.Layer) or _accepts_training(model):
        return model(images, training=training)
    return model(images)


def predict_logits(model, images, batch_size=256):
    """Inference-mode logits of `images` as a float64 NumPy array `(n, K)`, checked.

    A Keras model runs through one cached `tf.function` (eager Keras calls
    cost several times the computation on small batches); other callables
    are called as they are.
    """
    check_image_shape(model, images)
    forward = _compiled_forward(model)
    logits = np.concatenate([
        np.asarray(forward(images[start:start + batch_size]))
        for start in range(0, len(images), batch_size)
    ])
    return check_logits(logits).astype("float64")


def check_image_shape(model, images):
    """Raises unless `images` `(n, H, W, C)` fit the input shape a Keras `model` declares (None: any size)."""
    expected = _input_shape(model)
    given = tuple(np.shape(images)[1:])
    if expected is None or (len(given) == len(expected) and all(e in (None, g) for e, g in zip(expected, given))):
        return
    shown = "×".join("any" if e is None else str(e) for e in expected)
    raise ValueError(
        f"The images are {'×'.join(map(str, given))}; this model takes {shown} (height × width × channels). "
        "Resize them first, e.g. keras_robust.data.image_files.load_images(paths, size=(height, width)) "
        f"for files. Received: images.shape={tuple(np.shape(images))}"
    )


def _input_shape(model):
    """The per-image input shape a Keras model declares, or None when it takes any."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if not isinstance(shape, tuple) or not shape or isinstance(shape[0], (tuple, list)):
        return None  # several inputs, or none declared
    return tuple(shape[1:])


def probability_of(logits, targets):
    """softmax(logits)[i, targets[i]] per row, in float64."""
    logits = np.asarray(logits, dtype="float64")
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return probabilities[np.arange(len(targets)), targets]


def check_logits(logits):
    """Returns `logits` if shaped `(batch, K)` with K >= 2, else raises."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            "The model must output logits of shape (batch, K) with K >= 2 "
            f"classes. Received: output shape {logits.shape}"
        )
    return logits


def _compiled_forward(model):
    if not isinstance(model, keras.layers.Layer):
        return lambda images: call_model(model, images, False)
    # Cached on the layer, which owns its state (see attacks._compiled).
    cache = model.__dict__
    if "_keras_robust_forward" not in cache:
        cache["_keras_robust_forward"] = tf.function(
            lambda images: model(images, training=False), reduce_retracing=True
        )
    return cache["_keras_robust_forward"]


def _accepts_training(function):
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return "training" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def num_classes_of(classifier):
    """K from a Keras model's output shape, or None when it is not known before a call."""
    try:
        return int(classifier.output_shape[-1])
    except (AttributeError, ValueError, TypeError):
        return None
