"""Training-batch augmentation: an edge-padded random crop and a horizontal flip (docs/method.md §3)."""

import numbers

import tensorflow as tf

_PAD = 4


def augment_batch(images, seed=None, return_params=False):
    """Randomly crops and flips each image of a batch (docs/method.md §3).

    Each image is padded by 4 pixels on every side by edge replication (like
    `np.pad(mode="edge")`), cropped back to its size at offsets `oy, ox` drawn
    uniformly from `{0, ..., 8}`, then flipped horizontally with probability
    0.5. The padded image is never built: output row `i` reads source row
    `clip(i + oy - 4, 0, H - 1)`, and columns likewise, which is exactly what
    edge padding then cropping gives.

    Args:
        images: Tensor of shape `(batch, height, width, channels)`.
        seed: `None` to draw from TensorFlow's global random state, or an int
            or shape `(2,)` integer tensor for stateless, reproducible draws.
        return_params: Whether to also return the drawn parameters.

    Returns:
        The augmented images, with the shape and dtype of `images`. If
        `return_params`, a tuple `(images, oy, ox, flip)` where `oy` and `ox`
        are int32 offsets of shape `(batch,)` into the padded image and
        `flip` is a bool tensor of shape `(batch,)`.
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    span = 2 * _PAD + 1
    if seed is None:
        offsets = tf.random.uniform((2, batch), maxval=span, dtype=tf.int32)
        flip = tf.random.uniform((batch,), maxval=2, dtype=tf.int32)
    else:
        if isinstance(seed, numbers.Integral):
            seed = [int(seed), 0]
        offset_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
        offsets = tf.random.stateless_uniform(
            (2, batch), offset_seed, maxval=span, dtype=tf.int32
        )
        flip = tf.random.stateless_uniform(
            (batch,), flip_seed, maxval=2, dtype=tf.int32
        )
    oy, ox = offsets[0], offsets[1]
    flip = tf.cast(flip, tf.bool)

    rows = tf.range(height)[None, :] + oy[:, None] - _PAD
    rows = tf.clip_by_value(rows, 0, height - 1)
    # A flipped output reads the crop's columns right to left, so the flip
    # folds into the column indices and costs no extra pass over the pixels.
    cols = tf.range(width)[None, :]
    cols = tf.where(flip[:, None], width - 1 - cols, cols)
    cols = tf.clip_by_value(cols + ox[:, None] - _PAD, 0, width - 1)
    augmented = tf.gather(images, rows, axis=1, batch_dims=1)
    augmented = tf.gather(augmented, cols, axis=2, batch_dims=1)
    if return_params:
        return augmented, oy, ox, flip
    return augmented
