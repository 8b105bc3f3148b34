"""The threat models AutoAttack measures in: L∞ and L2 balls of radius ε, inside the [0, 1] image box."""

import numpy as np

NORMS = ("Linf", "L2")
# Added to a norm before dividing by it, as the original does.
NORM_EPSILON = 1e-12


def norm_of(values, norm):
    """The L∞ or L2 norm of each row of `values` `(n, ...)`, as `(n,)`."""
    flat = np.reshape(values, (len(values), int(np.prod(np.shape(values)[1:])))).astype("float64")
    if norm == "Linf":
        return np.abs(flat).max(axis=1)
    return np.sqrt(np.sum(flat**2, axis=1))


def per_image(values, like):
    """`(n,)` values shaped to broadcast over images `like` `(n, H, W, C)`."""
    return np.reshape(values, (-1,) + (1,) * (np.ndim(like) - 1))


def normalized(values, norm):
    """Each row divided by its norm (plus `NORM_EPSILON`)."""
    return values / per_image(norm_of(values, norm) + NORM_EPSILON, values).astype(values.dtype)


def project(images, candidates, eps, norm):
    """`candidates` brought into the ε-ball around `images`, then into [0, 1]; L2 scales the
    perturbation down to ε, as the original's APGD does, rather than solving the exact projection."""
    delta = candidates - images
    if norm == "Linf":
        delta = np.clip(delta, -eps, eps)
    else:
        size = norm_of(delta, "L2")
        delta = normalized(delta, "L2") * per_image(np.minimum(eps, size), delta).astype(delta.dtype)
    return np.clip(images + delta, 0.0, 1.0)


def random_start(images, eps, norm, rng, scale=1.0):
    """A random point on the ε-sphere around each image (a uniform cube direction for L∞, a
    Gaussian one for L2, each scaled to norm `scale`·ε), clipped to [0, 1]."""
    if norm == "Linf":
        direction = rng.uniform(-1.0, 1.0, images.shape)
    else:
        direction = rng.standard_normal(images.shape)
    delta = normalized(direction.astype("float32"), norm) * np.float32(scale * eps)
    return np.clip(images + delta, 0.0, 1.0)
