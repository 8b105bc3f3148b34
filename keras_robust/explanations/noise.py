"""SmoothGrad's noise: standard normal draws that a seed fixes, equal in TensorFlow and in ONNX.

An exported SmoothGrad graph must answer a request the same way every time
and the way `keras_robust.attributions.smoothgrad` answers it in Python, and
ONNX has no seeded random operator (ONNX Runtime's `RandomNormalLike` keeps
its state between runs). So the draws come from a counter-based generator
written in integer arithmetic that both runtimes compute exactly:

    x = (counter + key · GOLDEN) mod 2³¹
    x ← x ⊕ (x >> 16);  x ← x · FIRST mod 2³¹;  x ← x ⊕ (x >> 15);
    x ← x · SECOND mod 2³¹;  x ← x ⊕ (x >> 16)

(a 31-bit integer finaliser in the manner of MurmurHash3's, every product
below 2⁶², so int64 arithmetic never overflows), then Box–Muller on two such
words: `z = sqrt(−2 ln u₁) · cos(2π u₂)`, with `uᵢ = (⌊xᵢ / 2⁸⌋ + ½) / 2²³`
exact in float32 and never 0 or 1, from keys `2·seed` and `2·seed + 1`.

The counter of a value is `sample · (H·W·C) + its pixel index`, so an image's
draws depend on its seed and size only, never on the batch around it: a
server that batches requests together answers each as if alone.

Example:

>>> draws = standard_normal(tf.constant([7]), 0, (32, 32, 3))
>>> draws.shape
TensorShape([1, 32, 32, 3])
"""

MODULUS = 2**31
GOLDEN = 0x61C88647  # odd, about 2³¹ / golden ratio: consecutive keys land far apart
FIRST = 0x2C1B3C6D
SECOND = 0x297A2D39
# (right shift, multiplier after it); the last shift has no multiplier after it.
ROUNDS = ((16, FIRST), (15, SECOND))
LAST_SHIFT = 16
TWO_PI = 6.283185307179586  # rounded to float32 alike in both runtimes
UNIFORM_BITS = 23  # a bit fewer than a float32's significand holds, so adding the half is exact too
SEED_RANGE = (0, MODULUS - 1)


def standard_normal(seeds, sample, image_shape):
    """Draws `(len(seeds), *image_shape)` standard normals for noise sample `sample`.

    Args:
        seeds: int tensor `(B,)`, one seed per image, in `SEED_RANGE`.
        sample: The noise sample's index (int or scalar tensor), >= 0.
        image_shape: `(H, W, C)`, static.
    """
    # Imported here: the ONNX exporter reads this module's constants without TensorFlow.
    import tensorflow as tf

    pixels = int(image_shape[0]) * int(image_shape[1]) * int(image_shape[2])
    index = tf.reshape(tf.range(pixels, dtype=tf.int64), (1, *image_shape))
    counter = tf.math.floormod(tf.cast(sample, tf.int64) * pixels + index, MODULUS)
    keys = tf.reshape(tf.cast(seeds, tf.int64), (-1, 1, 1, 1))
    first = _uniform(tf, _hash(tf, counter, tf.math.floormod(2 * keys, MODULUS)))
    second = _uniform(tf, _hash(tf, counter, tf.math.floormod(2 * keys + 1, MODULUS)))
    return tf.sqrt(-2.0 * tf.math.log(first)) * tf.cos(TWO_PI * second)


def _hash(tf, counter, key):
    x = tf.math.floormod(counter + key * GOLDEN, MODULUS)
    for shift, multiplier in ROUNDS:
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, shift))
        x = tf.math.floormod(x * multiplier, MODULUS)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, LAST_SHIFT))


def _uniform(tf, words):
    """31-bit words → floats in (0, 1), exact in float32."""
    top = tf.bitwise.right_shift(words, 31 - UNIFORM_BITS)
    return (tf.cast(top, tf.float32) + 0.5) * (2.0 ** -UNIFORM_BITS)
