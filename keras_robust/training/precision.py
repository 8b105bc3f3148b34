"""Numeric precision of training: float32, or Keras mixed precision (bfloat16 / float16).

Mixed precision runs convolutions and activations in 16 bits and keeps the
variables, the input standardisation, the logits, the loss, the input
gradient the regulariser penalises, ψ and every attack's δ in float32
(`keras_robust.resnet` and `RobustModel` take care of that).

- `"bf16"` (Keras' `mixed_bfloat16`): CPUs with AVX-512 BF16 or AMX, TPUs
  and recent GPUs. Same range as float32, so no loss scaling.
- `"fp16"` (`mixed_float16`): GPUs; Keras wraps the optimizer in a
  `LossScaleOptimizer` so small gradients do not underflow.

Keras' own convention works as is: call
`keras.mixed_precision.set_global_policy("mixed_bfloat16")` before building
the classifier, then `RobustModel(...)`, `compile` and `fit`.
"""

import contextlib

from keras_robust.common.validation import check_choice

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def check_precision(precision):
    """Raises unless `precision` is one of `PRECISIONS`."""
    check_choice("precision", precision, PRECISIONS)


@contextlib.contextmanager
def precision_scope(precision):
    """Sets Keras' global dtype policy for `precision` while models are built.

    Example:

    >>> with precision_scope("bf16"):
    ...     classifier = keras_robust.resnet(20)
    >>> classifier.get_layer("stem_conv").compute_dtype
    'bfloat16'
    """
    # Keras loads here, not at import: the command line reads PRECISIONS without it.
    import keras

    check_precision(precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def check_precision_devices(precision, strategy):
    """Refuses `"fp16"` on a strategy without a GPU, where float16 is emulated and slower than float32."""
    devices = _devices(strategy)
    if precision == "fp16" and not any("GPU" in device.upper() for device in devices):
        raise ValueError(
            "precision='fp16' is mixed float16 for GPUs; this run's devices are "
            f"{', '.join(devices)}, where float16 is emulated and slower than float32. Use bf16 (CPUs with "
            "AVX-512 BF16 or AMX) or fp32. Received: precision='fp16'")


def _devices(strategy):
    try:
        return list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has none of its own: the machine's
        import tensorflow as tf

        return [device.name for device in tf.config.list_logical_devices()]
