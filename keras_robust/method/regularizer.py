"""The Lipschitz-continuity regulariser and the adaptive weight ψ (docs/method.md §3)."""

import keras
import numpy as np
import tensorflow as tf

from keras_robust.common.defaults import BOUND_ENGAGES_AT


def lipschitz_outputs(logits, labels, zeta, seed=None):
    """One scalar output per example whose input gradient is regularised (docs/method.md §3).

    With probability `1 - zeta` a logit chosen uniformly at random; with
    probability `zeta` ("tandem") the margin: the true-class logit minus the
    largest other logit.

    Args:
        logits: Float tensor `(batch, num_classes)`.
        labels: Integer tensor `(batch,)` of true classes.
        zeta: Probability of the tandem margin, in [0, 1].
        seed: Optional int or `keras.random.SeedGenerator`.

    Returns:
        A float tensor `(batch,)`.
    """
    batch = tf.shape(logits)[0]
    num_classes = tf.shape(logits)[1]
    picked = keras.random.randint([batch], 0, num_classes, seed=seed, dtype="int32")
    random_logit = tf.gather(logits, picked, batch_dims=1)
    tandem = keras.random.uniform([batch], seed=seed) < zeta
    return tf.where(tandem, margin(logits, labels), random_logit)


def margin(logits, labels):
    """True-class logit minus the largest other logit, per example."""
    true_logit = tf.gather(logits, labels, batch_dims=1)
    is_true = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)
    others = tf.where(is_true, tf.constant(-np.inf, logits.dtype), logits)
    return true_logit - tf.reduce_max(others, axis=1)


def lipschitz_penalty(input_gradient, z=2.0):
    """`mean(|g|^z)` over batch, pixels and channels (docs/method.md §3), before the ψ weight."""
    if z == 2:
        return tf.reduce_mean(tf.square(input_gradient))
    return tf.reduce_mean(tf.pow(tf.abs(input_gradient), z))


def update_psi_accumulator(accumulator, batch_loss, target_loss, epsilon_better, epsilon_worse):
    """One step of `R ← max(0, R + clip(−ln(L_CE / L_target), −ε_worse, ε_better))` (docs/method.md §3)."""
    change = tf.clip_by_value(
        -tf.math.log(batch_loss / target_loss), -epsilon_worse, epsilon_better
    )
    return tf.maximum(0.0, accumulator + change)


def psi_from_accumulator(accumulator, psi_initial, psi_rate):
    """`ψ = ψ0 · exp(k_ψ · R)` (docs/method.md §3)."""
    return psi_initial * tf.exp(psi_rate * accumulator)


def bound_engaged(first_ratio, ratio):
    """Whether a network whose first batch had gradient ratio `first_ratio` is bounded at `ratio` from then
    on (docs/method.md §3a): past `BOUND_ENGAGES_AT` of it."""
    return first_ratio > ratio * BOUND_ENGAGES_AT


def regularizer_bound(regularizer_norm, classification_norm, ratio):
    """`b = min(1, ratio · |∇θ CE| / |∇θ L_adv|)`: the factor on ψ that keeps the regulariser's
    weight gradient within `ratio` times the classification loss's (docs/method.md §3a).

    1 exactly when it is already within, or is 0.
    """
    bound = ratio * classification_norm
    return tf.where(regularizer_norm > bound, bound / tf.maximum(regularizer_norm, bound), 1.0)
