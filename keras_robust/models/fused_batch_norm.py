"""Batch normalization that trains through TensorFlow's fused kernel (docs/performance.md)."""

import keras
import tensorflow as tf

from keras_robust.method.double_backprop import is_twice_differentiated
from keras_robust.models.twice_differentiable_batch_norm import (
    fused_batch_norm,
    twice_differentiable_batch_norm,
)

# The input dtypes FusedBatchNormV3 takes, with float32 statistics.
_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="keras_robust")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training pass is one fused op.

    Formula (training; the same as the Keras layer):
    ```
    mean, var = moments of x over every axis but the channels
    y = gamma * (x - mean) / sqrt(var + epsilon) + beta
    moving_mean = momentum * moving_mean + (1 - momentum) * mean
    moving_variance = momentum * moving_variance + (1 - momentum) * var
    ```
    Keras 3 normalises with about a dozen element-wise TensorFlow ops, and
    automatic differentiation adds as many again. For channels-last 4-D
    inputs this layer trains through `FusedBatchNormV3` instead, one op
    forward and one backward, which TensorFlow runs on oneDNN's batch
    normalization and fuses with a following ReLU. Under mixed precision the
    bfloat16 or float16 input goes into the op as it is (the statistics are
    float32 inside it); float64 takes the Keras path. Where the gradient will be
    differentiated again (the Lipschitz regulariser's forward pass, inside
    `twice_differentiated()`), the same fused ops carry a second derivative
    written out in closed form (`twice_differentiable_batch_norm`): exact,
    where Keras' layer's is not (`tf.nn.moments` stops the gradient of the
    mean inside the variance), and faster than TensorFlow's own. Inference,
    masks, `synchronized=True`, renormalization and other layouts take the
    Keras layer's path: exported graphs are unchanged. The variables, their
    names and the configuration are the Keras layer's: weights load either
    way.

    Example:

    >>> layer = FusedBatchNormalization()
    >>> x = keras.ops.convert_to_tensor([[[[1.0], [3.0]]]])
    >>> keras.ops.convert_to_numpy(layer(x, training=True)).round(3).ravel()
    array([-1.,  1.], dtype=float32)

    Args:
        **kwargs: The arguments of `keras.layers.BatchNormalization`
            (`axis`, `momentum`, `epsilon`, `center`, `scale`, initializers,
            ...), checked by it.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        # A 16-bit input under mixed precision goes in as it is: the op
        # computes the statistics and the normalisation in float32, as the
        # Keras layer does, and rounds only its output, where the Keras layer
        # rounds too; casting around it would add two passes and hide the
        # ReLU that follows from the fusion.
        x = tf.convert_to_tensor(inputs)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        if is_twice_differentiated():
            outputs, mean, variance = twice_differentiable_batch_norm(x, scale, offset, self.epsilon)
        else:
            outputs, mean, variance, _ = fused_batch_norm(x, scale, offset, self.epsilon)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and rank == 4
            and self.axis % rank == rank - 1
            and inputs.shape[-1] is not None
            and inputs.dtype in _FUSED_DTYPES
            and mask is None
            and not self.synchronized
            and not self.renorm
        )
