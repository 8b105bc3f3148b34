"""Targeted FAB (Croce & Hein, ICML 2020): the Fast Adaptive Boundary attack toward one class.

Each step linearises the margin z_t − z_y at the current point x_k and
projects both x_k and the clean image x onto the boundary of that linear
model inside [0, 1] (`fab_projections`), giving steps d_k and d_0; it moves to

    x_{k+1} = clip((x_k + η d_k)(1 − α) + (x + η d_0) α),  α = min(‖d_k‖ / (‖d_k‖ + ‖d_0‖), α_max)

so the iterates stay close to x. Whenever x_{k+1} is misclassified it is
kept if it is the closest such point yet, and the next step starts from
x + β (x_{k+1} − x), nearer the image. An image counts as broken if a kept
point lies within ε.
"""

import numpy as np

from keras_robust.evaluation.autoattack.fab_projections import projection_l2, projection_linf
from keras_robust.evaluation.autoattack.norms import norm_of, per_image

ITERATIONS = 100
ALPHA_MAX = 0.1
OVERSHOOT = 1.05  # η
BACKWARD = 0.9  # β
PROJECTIONS = {"Linf": projection_linf, "L2": projection_l2}
SMALLEST_STEP = 1e-8
NOT_FOUND = 1e10


def fab_targeted(oracle, images, labels, targets, *, eps, norm, iterations=ITERATIONS):
    """One run of targeted FAB without random start (AutoAttack's standard version).

    Args:
        oracle: The model's `Oracle`.
        images: Float32 images `(n, H, W, C)` in [0, 1], classified correctly.
        labels: Their labels `(n,)`.
        targets: The class to cross toward, per image.
        eps: The radius ε an adversarial point must lie within.
        norm: `"Linf"` or `"L2"`.
        iterations: Steps (100).

    Returns:
        `(adversarial images, broken)`: the closest misclassified point found
        within ε (the image itself where none), and whether there was one.
    """
    project = PROJECTIONS[norm]
    count = len(images)
    flat_images = images.reshape(count, -1).astype("float64")
    x = images.copy()
    best, best_norm = images.copy(), np.full(count, NOT_FOUND)
    for _ in range(iterations):
        _, margin, grad = oracle.loss_and_gradient("target-margin", x, labels, targets)
        weights = grad.reshape(count, -1).astype("float64")
        offsets = -margin.astype("float64") + np.sum(weights * x.reshape(count, -1), axis=1)
        steps = project(np.concatenate([x.reshape(count, -1), flat_images]),
                        np.concatenate([weights, weights]), np.concatenate([offsets, offsets]))
        lengths = np.maximum(norm_of(steps, norm), SMALLEST_STEP)
        from_x, from_image = lengths[:count], lengths[count:]
        alpha = per_image(np.clip(from_x / (from_x + from_image), 0.0, ALPHA_MAX), images)
        step_x = steps[:count].reshape(images.shape)
        step_image = steps[count:].reshape(images.shape)
        x = np.clip((x + OVERSHOOT * step_x) * (1 - alpha) + (images + OVERSHOOT * step_image) * alpha,
                    0.0, 1.0).astype("float32")
        crossed = oracle.logits(x).argmax(axis=1) != labels
        distance = norm_of(x - images, norm)
        closer = crossed & (distance < best_norm)
        best[closer], best_norm[closer] = x[closer], distance[closer]
        x[crossed] = images[crossed] + (x[crossed] - images[crossed]) * BACKWARD
    broken = best_norm <= eps
    return np.where(per_image(broken, images), best, images), broken
