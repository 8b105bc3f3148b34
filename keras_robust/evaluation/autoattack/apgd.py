"""Auto-PGD (Croce & Hein, ICML 2020), on the cross-entropy (APGD-CE) or the targeted DLR loss (APGD-T).

Projected gradient ascent with momentum whose step size needs no tuning: it
starts at 2ε and halves at checkpoints where the loss rose in fewer than
`DECREASE_THRESHOLD` of the steps since the last one, or did not rise and was
not halved last time; the next steps then start again from the best point.
The checkpoints come ever closer: the first after 22 % of the iterations, each
next one 3 % earlier than the last, at least 6 % apart.

    z       = P(x_k + η · sign(∇))                    (L∞; L2: η · ∇ / ‖∇‖₂)
    x_{k+1} = P(x_k + α (z − x_k) + (1 − α)(x_k − x_{k−1})),  α = 0.75 (1 at the first step)

with P the projection onto the ε-ball inside [0, 1]. An image counts as broken
if the model misclassifies the point of any step; the last such point is kept.
"""

import numpy as np

from keras_robust.evaluation.autoattack.norms import normalized, per_image, project, random_start

ITERATIONS = 100
MOMENTUM = 0.75
DECREASE_THRESHOLD = 0.75
# Fractions of the iterations: the first checkpoint's distance, the most the distance shrinks
# each time, and the least it may be.
FIRST_CHECKPOINT, CHECKPOINT_SHRINK, SMALLEST_CHECKPOINT = 0.22, 0.03, 0.06
INITIAL_STEP = 2.0  # times ε


def checkpoints(iterations=ITERATIONS):
    """`{iteration: steps since the previous checkpoint}` of the step-size schedule."""
    distance = max(int(FIRST_CHECKPOINT * iterations), 1)
    shrink = max(int(CHECKPOINT_SHRINK * iterations), 1)
    smallest = max(int(SMALLEST_CHECKPOINT * iterations), 1)
    found, since = {}, 0
    for iteration in range(iterations):
        since += 1
        if since == distance:
            found[iteration] = distance
            distance, since = max(distance - shrink, smallest), 0
    return found


def apgd(oracle, images, labels, *, eps, norm, loss="ce", targets=None, iterations=ITERATIONS, rng):
    """One run of APGD from a random start on every image.

    Args:
        oracle: The model's `Oracle`.
        images: Float32 images `(n, H, W, C)` in [0, 1].
        labels: True labels `(n,)`.
        eps: The radius ε.
        norm: `"Linf"` or `"L2"`.
        loss: `"ce"` (untargeted) or `"dlr-targeted"` (toward `targets`).
        targets: Target classes `(n,)` for the targeted loss.
        iterations: Steps (100).
        rng: A `numpy.random.Generator` for the random start.

    Returns:
        `(adversarial images, broken)`: for each image the last misclassified
        point found (the image itself where none), and whether one was.
    """
    schedule = checkpoints(iterations)
    x_adv = random_start(images, eps, norm, rng)
    logits, loss_value, grad = oracle.loss_and_gradient(loss, x_adv, labels, targets)
    correct = logits.argmax(axis=1) == labels
    adversarial = np.where(per_image(~correct, images), x_adv, images)
    x_best, grad_best, loss_best = x_adv.copy(), grad.copy(), loss_value.copy()
    loss_history = np.zeros((iterations, len(images)), "float32")
    step = np.full(len(images), INITIAL_STEP * eps, "float32")
    best_at_last_check, halved_at_last_check = loss_best.copy(), np.ones(len(images), bool)
    x_previous = x_adv.copy()
    for iteration in range(iterations):
        momentum_step = x_adv - x_previous
        x_previous = x_adv
        alpha = MOMENTUM if iteration > 0 else 1.0
        direction = np.sign(grad) if norm == "Linf" else normalized(grad, "L2")
        z = project(images, x_adv + per_image(step, images) * direction, eps, norm)
        x_adv = project(images, x_adv + (z - x_adv) * alpha + momentum_step * (1.0 - alpha), eps, norm)
        logits, loss_value, grad = oracle.loss_and_gradient(loss, x_adv, labels, targets)
        wrong = logits.argmax(axis=1) != labels
        adversarial[wrong] = x_adv[wrong]
        correct &= ~wrong
        loss_history[iteration] = loss_value
        improved = loss_value > loss_best
        x_best[improved], grad_best[improved], loss_best[improved] = x_adv[improved], grad[improved], loss_value[improved]
        if iteration in schedule:
            halve = _oscillating(loss_history, iteration, schedule[iteration]) | (
                ~halved_at_last_check & (best_at_last_check >= loss_best))
            halved_at_last_check, best_at_last_check = halve, loss_best.copy()
            step[halve] /= 2.0
            x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
    return adversarial, ~correct


def _oscillating(loss_history, iteration, distance):
    """Where the loss rose in at most `DECREASE_THRESHOLD` of the last `distance` steps. As in the
    original, the step before the first reads the history's last row (still zeros then)."""
    rows = iteration - np.arange(distance)
    rises = loss_history[rows] > loss_history[(rows - 1) % len(loss_history)]
    return rises.sum(axis=0) <= distance * DECREASE_THRESHOLD
