"""The Square Attack (Andriushchenko et al., ECCV 2020): random search that never reads a gradient.

Each query changes the current perturbation inside one random square window
(one window for the whole batch, as in the original) and keeps the change for
the images whose margin z_y − max_{j≠y} z_j it lowers, or which it
misclassifies. The window's side shrinks with the query count, from the
fraction `P_INIT` of the image's pixels (`window_fraction`). L∞ sets the
window to ±2ε per channel, then clips to the ε-box; L2 moves mass between
two windows along a fixed pattern of nested squares (`pattern`) and keeps
the perturbation on the ε-sphere. Images are channels-last.
"""

import math

import numpy as np

from keras_robust.evaluation.autoattack.norms import NORM_EPSILON, norm_of, normalized, per_image, project

QUERIES = 5000
P_INIT = 0.8
# (the last query of a stretch, the divisor of P_INIT over it) of the original's schedule.
SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))
# The L2 attack's first perturbation tiles the image with squares of a fifth of its side.
TILES = 5


def window_fraction(query, p_init=P_INIT):
    """The fraction of pixels the window of 0-based `query` covers."""
    for last, divisor in SCHEDULE:
        if query <= last:
            return p_init / divisor
    return p_init / 512


def square(oracle, images, labels, *, eps, norm, queries=QUERIES, rng):
    """Square Attack on every image until the model misclassifies it or `queries` run out.

    Args:
        oracle: The model's `Oracle` (only its logits are read).
        images: Float32 images `(n, H, W, C)` in [0, 1].
        labels: True labels `(n,)`.
        eps: The radius ε.
        norm: `"Linf"` or `"L2"`.
        queries: Query budget per image (5000).
        rng: A `numpy.random.Generator`.

    Returns:
        `(adversarial images, broken)`: the misclassified point found (the
        image itself where none), and whether there was one.
    """
    height, width, channels = images.shape[1:]
    start = _linf_start(images, eps, rng) if norm == "Linf" else _l2_start(images, eps, rng)
    x_best = start
    margin_best = _margin(oracle, x_best, labels)
    loss_best = margin_best.copy()  # the margin too: the loss the original's standard version uses
    for query in range(queries):
        active = np.flatnonzero(margin_best > 0)
        if active.size == 0:
            break
        side = _side(query, height * width, min(height, width), norm)
        step = _linf_step if norm == "Linf" else _l2_step
        candidate = step(images[active], x_best[active], side, eps, rng)
        margin = _margin(oracle, candidate, labels[active])
        better = margin < loss_best[active]
        loss_best[active] = np.where(better, margin, loss_best[active])
        accepted = better | (margin <= 0)
        margin_best[active] = np.where(accepted, margin, margin_best[active])
        x_best[active] = np.where(per_image(accepted, candidate), candidate, x_best[active])
    broken = margin_best <= 0
    return np.where(per_image(broken, images), x_best, images), broken


def _margin(oracle, images, labels):
    logits = oracle.logits(images).astype("float64")
    rows = np.arange(len(labels))
    label_logit = logits[rows, labels]
    logits[rows, labels] = -np.inf
    return label_logit - logits.max(axis=1)


def _side(query, pixels, largest, norm):
    smallest = 1 if norm == "Linf" else 3
    side = max(int(round(math.sqrt(window_fraction(query) * pixels))), smallest)
    if norm == "L2" and side % 2 == 0:
        side += 1
    return min(side, largest)


def _corner(rng, size, side):
    """A window's first row or column, uniform on [0, size − side) as the original draws it."""
    return int(rng.uniform(0, size - side))


def _signs(rng, shape):
    return np.sign(rng.uniform(-1.0, 1.0, shape)).astype("float32")


def _linf_start(images, eps, rng):
    """Vertical stripes of ±ε, one sign per image, column and channel."""
    count, _, width, channels = images.shape
    return np.clip(images + eps * _signs(rng, (count, 1, width, channels)), 0.0, 1.0).astype("float32")


def _linf_step(images, x_best, side, eps, rng):
    top, left = _corner(rng, images.shape[1], side), _corner(rng, images.shape[2], side)
    change = np.zeros(images.shape[1:], "float32")
    change[top:top + side, left:left + side] = 2.0 * eps * _signs(rng, (images.shape[3],))
    return project(images, x_best + change, eps, "Linf").astype("float32")


def _l2_start(images, eps, rng):
    """Tiles of the nested-square pattern, one random sign per image, tile and channel, scaled to ε."""
    count, height, width, channels = images.shape
    side = height // TILES
    delta = np.zeros(images.shape, "float32")
    top = (height - side * TILES) // 2
    for _ in range(height // side):
        left = (height - side * TILES) // 2  # from the height, as the original (its images are square)
        for _ in range(width // side):
            delta[:, top:top + side, left:left + side] += (
                pattern(side, rng)[None, :, :, None] * _signs(rng, (count, 1, 1, channels)))
            left += side
        top += side
    return np.clip(images + normalized(delta, "L2") * eps, 0.0, 1.0).astype("float32")


def _l2_step(images, x_best, side, eps, rng):
    """Moves the perturbation's mass in one window and the window it overlaps with (or another) into
    a new pattern there, keeping the total at ε."""
    count, height, width, channels = images.shape
    delta = x_best - images
    top, left = _corner(rng, height, side), _corner(rng, width, side)
    top2, left2 = _corner(rng, height, side), _corner(rng, width, side)
    first = (slice(None), slice(top, top + side), slice(left, left + side))
    second = (slice(None), slice(top2, top2 + side), slice(left2, left2 + side))
    window_norm = _channel_norms(delta[first])
    both = np.zeros(images.shape, bool)
    both[first], both[second] = True, True
    windows_norm = _channel_norms(np.where(both, delta, 0.0))
    image_norm = per_image(norm_of(delta, "L2"), delta)
    change = pattern(side, rng)[None, :, :, None] * _signs(rng, (count, 1, 1, channels))
    change = change + delta[first] / (NORM_EPSILON + window_norm)
    budget = np.sqrt(np.maximum(eps**2 - image_norm**2, 0.0) / channels + windows_norm**2)
    change = change / (NORM_EPSILON + _channel_norms(change)) * budget
    delta = delta.copy()
    delta[second] = 0.0
    delta[first] = change
    return np.clip(images + normalized(delta, "L2") * eps, 0.0, 1.0).astype("float32")


def _channel_norms(values):
    """The L2 norm over rows and columns, per image and channel, shaped `(n, 1, 1, C)`."""
    return np.sqrt(np.sum(values.astype("float64") ** 2, axis=(1, 2), keepdims=True))


def pattern(side, rng):
    """The L2 attack's `side`×`side` change: nested squares weighted 1/k² in one half and their
    negative in the other, of unit L2 norm, transposed with probability 1/2."""
    half = side // 2
    values = np.concatenate([_nested_squares(half, side), -_nested_squares(side - half, side)])
    values /= np.sqrt(np.sum(values**2))
    return values.T if rng.uniform() > 0.5 else values


def _nested_squares(rows, columns):
    values = np.zeros((rows, columns))
    centre_row, centre_column = rows // 2, columns // 2
    for k in range(max(rows // 2 + 1, columns // 2 + 1)):
        values[max(centre_row - k, 0):min(centre_row - k + 2 * k + 1, rows),
               max(centre_column - k, 0):min(centre_column - k + 2 * k + 1, columns)] += 1.0 / (k + 1) ** 2
    return values / np.sqrt(np.sum(values**2))
