"""Argument checks shared by the package, each with one message."""

import math
import numbers
import os

from keras_robust.common.defaults import (
    ADVERSARIAL_MODES,
    MAX_DEPTH,
    MAX_EXPLAIN_STEPS,
    MAX_RHO,
    MIN_EXPLAIN_STEPS,
)


def check_range(name, value, low=None, high=None, strict=False):
    """Raises unless `value` is a finite real number in the range; `strict` excludes `low`."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = ""
        if low is not None:
            bound = f" > {low}" if strict else f" >= {low}"
        if high is not None:
            bound += f"{' and' if bound else ''} <= {high}"
        raise ValueError(f"`{name}` must be a finite number{bound}. Received: {name}={value!r}")


def check_momentum(value):
    """Raises unless `value` is a momentum in [0, 1): at 1 nothing decays, and steps grow without bound."""
    check_range("momentum", value, low=0.0)
    if not value < 1:
        raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={value!r}")


def check_positive_int(name, value):
    """Raises unless `value` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")


def check_choice(name, value, choices):
    """Raises unless `value` is one of `choices` (any iterable; a dict's keys)."""
    # A tuple compares by equality, so an unhashable value gets this message,
    # not the TypeError a dict's `in` would raise.
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")


def validate_depth(depth):
    """Raises unless `depth` is 6n + 2 for some n >= 1, at most `MAX_DEPTH` (docs/method.md §2)."""
    if (isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 8 or (depth - 2) % 6
            or depth > MAX_DEPTH):
        raise ValueError(
            f"`depth` must be an integer 6n+2 with n >= 1 (8, 20, 32, 44, 56, 110, ..., {MAX_DEPTH}). "
            f"Received: depth={depth!r}"
        )


def check_labels(labels, num_classes, what="labels"):
    """Raises unless every entry of the integer array `labels` is a class index of `num_classes`."""
    bad = [int(label) for label in labels if not 0 <= int(label) < num_classes][:1]
    if bad:
        raise ValueError(f"`{what}` must be class indices in [0, {num_classes}) for this {num_classes}-class "
                         f"model. Received: {what} entry {bad[0]}")


def check_strategy_environment(strategy):
    """A multi-worker strategy needs its cluster described in `TF_CONFIG`; without it
    TensorFlow would run one worker alone, silently."""
    if strategy == "multiworker" and not os.environ.get("TF_CONFIG"):
        raise ValueError(
            "The multiworker strategy needs the cluster in the TF_CONFIG environment variable "
            "(docs/distributed.md); use strategy 'mirrored' for one machine. Received: TF_CONFIG unset"
        )


def check_adversarial_mode(mode):
    """Raises unless `mode` is None (no adversarial training) or one of `ADVERSARIAL_MODES`."""
    check_choice("adversarial_training", mode, (None, *ADVERSARIAL_MODES))


def check_pixels(images, what="Images", unit_range=True):
    """Raises unless the NumPy array `images` holds finite floats, in [0, 1]
    pixel units if `unit_range`: the one pixel check of the library, the data
    loader, training and the server (which answers its message with 400)."""
    # NumPy loads here: the command line builds its flags from this module's
    # other checks, and `--help` should not wait for it.
    import numpy as np

    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"{what} must be float in [0, 1] pixel units; divide integer images by 255 first. "
            f"Received: dtype {images.dtype}"
        )
    bad = images.size - np.count_nonzero(np.isfinite(images))
    if bad:
        raise ValueError(f"{what} must be finite. Received: {bad} NaN or infinite values")
    if unit_range and images.size:
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"{what} must hold pixel values in [0, 1]; divide 0..255 images by 255 first. "
                f"Received: images in [{low:g}, {high:g}]"
            )


def check_steps(steps, low=1, high=None, name="steps"):
    """Raises unless `steps` (an argument called `name`) is an integer (not a bool) in [low, high]."""
    valid = isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= low
    if not valid or (high is not None and steps > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be an integer {bound}. Received: {name}={steps!r}")


def check_explanation_settings(rho, steps, overshoot, max_steps=MAX_EXPLAIN_STEPS):
    """The checks of an explanation's budget ρ, steps N and overshoot o (docs/method.md §5)."""
    check_range("rho", rho, low=0.0, high=MAX_RHO, strict=True)
    check_steps(steps, MIN_EXPLAIN_STEPS, max_steps)
    check_range("overshoot", overshoot, low=1.0)


def check_tensorflow_backend(what):
    """Raises unless Keras runs on TensorFlow: training, the attacks and the
    regulariser differentiate with `tf.GradientTape`, so on another backend
    they would fail deep inside a step instead of at construction."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} needs Keras' TensorFlow backend (it differentiates with tf.GradientTape); "
            f"set KERAS_BACKEND=tensorflow before Keras is imported. Received: backend={backend!r}"
        )
