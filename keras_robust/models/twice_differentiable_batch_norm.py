"""Training-mode batch norm whose gradient has an exact gradient of its own."""

import tensorflow as tf

# Statistics over every axis but the channels (NHWC).
_AXES = [0, 1, 2]


def twice_differentiable_batch_norm(x, scale, offset, epsilon):
    """Batch normalization for a pass whose gradient is differentiated again.

    Forward and first derivative are TensorFlow's fused ops
    (`FusedBatchNormV3`, `FusedBatchNormGradV3`); the derivative of that
    derivative is written out here. With `n` values per channel,
    `r = 1 / sqrt(var + epsilon)`, `x_hat = (x - mean) * r` and `mean(.)`
    over each channel:

    ```
    y      = scale * x_hat + offset
    dx     = scale * r * (g - mean(g) - x_hat * c),  c = mean(g * x_hat)
    dscale = n * c,  doffset = n * mean(g)
    ```

    and, for cotangents `u`, `a`, `b` of `dx`, `dscale`, `doffset`, with
    `p = mean(u * x_hat)` and `s = mean(u * g) - mean(u) * mean(g)`:

    ```
    d_x     = scale * r^2 * ((3cp - s) * x_hat - p * g - c * u + p * mean(g) + c * mean(u))
              + a * r * (g - mean(g) - c * x_hat)
    d_scale = n * r * (s - c * p)
    d_g     = scale * r * (u - mean(u) - p * x_hat) + a * x_hat + b
    ```

    Why not let TensorFlow differentiate: Keras' layer computes its variance
    with `tf.nn.moments`, which stops the gradient of the mean inside it.
    That leaves the first derivative exact but not the second, which the
    Lipschitz regulariser needs (docs/method.md §3); TensorFlow's own
    derivative of `FusedBatchNormGradV3` is exact but rebuilds it from
    element-wise ops and runs slower (docs/performance.md).

    Example:

    >>> x = tf.random.normal([4, 2, 2, 3])
    >>> y, mean, variance = twice_differentiable_batch_norm(x, tf.ones([3]), tf.zeros([3]), 1e-3)
    >>> y.shape, mean.shape
    (TensorShape([4, 2, 2, 3]), TensorShape([3]))

    Args:
        x: A 4-D channels-last float32, bfloat16 or float16 tensor.
        scale: float32 `gamma`, one value per channel.
        offset: float32 `beta`, one value per channel.
        epsilon: The variance's small addend.

    Returns:
        `(y, mean, variance)`: `y` in `x`'s dtype, the batch mean and plain
        (not Bessel-corrected) variance in float32.
    """

    @tf.custom_gradient
    def forward(x, scale, offset):
        y, mean, variance, reserved = fused_batch_norm(x, scale, offset, epsilon)

        def gradient(dy, *unused_statistics_gradients):
            return _first_derivative(x, scale, dy, mean, variance, reserved, epsilon)

        return (y, mean, variance), gradient

    return forward(x, scale, offset)


def fused_batch_norm(x, scale, offset, epsilon):
    """`FusedBatchNormV3` in training mode, differentiated by TensorFlow.

    Returns:
        `(y, mean, variance, reserved)`: the plain batch variance, and the
        op's reserve spaces, which its gradient op takes.
    """
    empty = tf.constant([], tf.float32)
    y, mean, corrected, *reserved = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=scale, offset=offset, mean=empty, variance=empty, epsilon=epsilon,
        data_format="NHWC", is_training=True,
    )
    # The op reports the batch variance with Bessel's correction; Keras'
    # layer tracks the plain one.
    count = _count(x)
    return y, mean, corrected * (count - 1.0) / count, reserved


def _first_derivative(x, scale, dy, mean, variance, reserved, epsilon):
    @tf.custom_gradient
    def first(x, scale, g):
        dx, dscale, doffset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=g, x=x, scale=scale, reserve_space_1=reserved[0], reserve_space_2=reserved[1],
            reserve_space_3=reserved[2], epsilon=epsilon, data_format="NHWC", is_training=True,
        )

        def second(u, a, b):
            # 16-bit inputs are worked in float32, as the fused ops do inside.
            x32, g32, u32 = (tf.cast(t, tf.float32) for t in (x, g, u))
            count = _count(x)
            rsd = tf.math.rsqrt(variance + epsilon)
            x_hat = (x32 - mean) * rsd
            g_mean, c = doffset / count, dscale / count
            u_mean = tf.reduce_mean(u32, _AXES)
            p = tf.reduce_mean(u32 * x_hat, _AXES)
            s = tf.reduce_mean(u32 * g32, _AXES) - u_mean * g_mean
            first_scale = scale * rsd
            second_scale = first_scale * rsd
            # d_x gathered per channel into one coefficient for each of
            # x_hat, g and u, so each large tensor is read once.
            d_x = ((second_scale * (3.0 * c * p - s) - a * rsd * c) * x_hat
                   + (a * rsd - second_scale * p) * g32
                   - (second_scale * c) * u32
                   + (second_scale * (p * g_mean + c * u_mean) - a * rsd * g_mean))
            d_scale = count * rsd * (s - c * p)
            d_g = first_scale * u32 + (a - first_scale * p) * x_hat + (b - first_scale * u_mean)
            return tf.cast(d_x, x.dtype), d_scale, tf.cast(d_g, g.dtype)

        return (dx, dscale, doffset), second

    return first(x, scale, dy)


def _count(x):
    """Values per channel, as float32."""
    return tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
