import math

import numpy as np
import pytest
import tensorflow as tf

from keras_robust.method import regularizer


def test_margin_against_numpy(rng):
    logits = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 5, 6)
    expected = [
        logits[i, labels[i]] - np.max(np.delete(logits[i], labels[i])) for i in range(6)
    ]
    out = regularizer.margin(tf.constant(logits), tf.constant(labels, tf.int32)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_outputs_are_margins_or_logits_in_spec_proportions(rng):
    logits = rng.normal(size=(4000, 10)).astype("float32")
    labels = tf.constant(rng.integers(0, 10, 4000), tf.int32)
    margins = regularizer.margin(tf.constant(logits), labels).numpy()
    assert np.allclose(regularizer.lipschitz_outputs(logits, labels, 1.0, seed=1).numpy(), margins)
    out = regularizer.lipschitz_outputs(logits, labels, 0.2, seed=3).numpy()
    is_margin = np.isclose(out, margins)
    is_logit = (logits == out[:, None]).any(axis=1)
    assert np.all(is_margin | is_logit)
    assert 0.17 < is_margin.mean() < 0.23
    random_logits = regularizer.lipschitz_outputs(logits, labels, 0.0, seed=5).numpy()
    picked = np.argmax(logits == random_logits[:, None], axis=1)
    counts = np.bincount(picked, minlength=10)
    assert counts.min() > 300  # roughly uniform over the 10 classes


def test_penalty_is_mean_of_powered_absolute_gradient():
    g = tf.constant([[1.0, -2.0], [0.5, 0.0]])
    assert float(regularizer.lipschitz_penalty(g, 2)) == pytest.approx((1 + 4 + 0.25) / 4)
    assert float(regularizer.lipschitz_penalty(g, 3)) == pytest.approx((1 + 8 + 0.125) / 4)


def test_psi_accumulator_follows_a_hand_computed_sequence():
    # L_target 1.5, eps_better 1, eps_worse 0.01, by hand:
    # CE 1.0: -ln(1/1.5) = 0.405465 -> R = 0.405465
    # CE 0.1: -ln(0.1/1.5) = 2.708 -> clipped to 1 -> R = 1.405465
    # CE 3.0: -ln(2) = -0.693 -> clipped to -0.01 -> R = 1.395465
    # CE 1.5: 0 -> R = 1.395465
    # CE 1.4: -ln(1.4/1.5) = 0.068993 -> R = 1.464458
    # then 200 batches at CE 100: each -0.01 -> R floors at 0
    expected = [0.405465, 1.405465, 1.395465, 1.395465, 1.464458]
    r = tf.constant(0.0)
    for ce, want in zip([1.0, 0.1, 3.0, 1.5, 1.4], expected):
        r = regularizer.update_psi_accumulator(r, tf.constant(ce), 1.5, 1.0, 0.01)
        assert float(r) == pytest.approx(want, abs=1e-5)
    for _ in range(200):
        r = regularizer.update_psi_accumulator(r, tf.constant(100.0), 1.5, 1.0, 0.01)
    assert float(r) == 0.0
    psi = regularizer.psi_from_accumulator(tf.constant(1.405465), 220.0, 0.02)
    assert float(psi) == pytest.approx(220 * math.exp(0.02 * 1.405465), rel=1e-6)


def test_the_bound_engages_past_half_the_ratio_where_the_papers_resnets_never_start():
    from keras_robust.method.regularizer import bound_engaged

    # docs/method.md §3a: ResNet-20 and -44 start at 0.22 and 0.31, ConvNeXtTiny 0.85, MobileNetV2 7e5.
    assert [bool(bound_engaged(r, 1.0)) for r in (0.22, 0.31, 0.5, 0.51, 0.85, 7e5)] == [
        False, False, False, True, True, True]
    assert bool(bound_engaged(0.3, 0.5)) and not bool(bound_engaged(0.3, 1.0))
