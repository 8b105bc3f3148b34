"""Tests for `keras_robust.method.attacks` (docs/method.md §4, Algorithm 1; §6 conventions).

Everything is checked against independent computations: a NumPy
reimplementation of Algorithm 1 written from docs/method.md §4 for a linear softmax
model (analytic cross-entropy gradient), closed-form step schedules, and the
analytic distance to a linear decision boundary. Models are tiny (4x4x3
images, linear layers) so the file runs in well under a minute on 2 CPUs.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust.method import attacks
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.attacks import (
    AttackResult,
    AttackSanityError,
    attack,
    attack_details,
    per_example_rmse,
)

SHAPE = (4, 4, 3)
D = int(np.prod(SHAPE))


# ---------------------------------------------------------------------------
# Independent reference: Algorithm 1 (docs/method.md §4) in float64 NumPy for a linear
# softmax model logits = x_flat @ W + b.
# ---------------------------------------------------------------------------


def np_rmse(v):
    v = np.asarray(v, np.float64).reshape(len(v), -1)
    return np.sqrt(np.mean(v**2, axis=1))


def np_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def np_attack(x, y, W, b, *, rho, steps, overshoot=1.0, mode="bounded",
              targeted=False, momentum=0.0, a=None):
    """Algorithm 1 of docs/method.md §4, written from the pseudo-code.

    Returns (delta, first_met_step, deltas_after_each_step).
    """
    x = np.asarray(x, np.float64)
    B = x.shape[0]
    xf = x.reshape(B, -1)
    y = np.asarray(y)
    K = W.shape[1]
    onehot = np.eye(K)[y]
    a = np.ones(B) if a is None else np.asarray(a, np.float64)
    N = steps
    tracking = mode in ("l2min", "btr")

    def criterion_met(delta, logits):
        p = np_softmax(logits)
        if mode == "bounded":
            return np_rmse(delta) >= rho
        if mode == "l2min":
            return np.argmax(logits, axis=1) != y
        return p[np.arange(B), y] <= 1.0 / K

    delta = np.zeros_like(xf)
    v = np.zeros_like(xf)
    best = np.zeros_like(xf)
    best_r = np.full(B, np.inf)
    first = np.full(B, -1)
    history = []

    def record(i, met, delta):
        nonlocal best, best_r, first
        first = np.where((first < 0) & met, i, first)
        if tracking:
            r = np_rmse(delta)
            better = met & (r < best_r)
            best = np.where(better[:, None], delta, best)
            best_r = np.where(better, r, best_r)

    for i in range(N):
        logits = (xf + delta) @ W + b
        p = np_softmax(logits)
        g = (p - onehot) @ W.T  # d sum CE / d x for a linear model
        if targeted:
            g = -g
        met = criterion_met(delta, logits)
        record(i, met, delta)
        keep = (~met).astype(np.float64)[:, None]
        d = keep * g + (1.0 - keep) * (-delta)
        d = d / (1e-8 + np_rmse(d))[:, None]
        if momentum > 0:
            v = momentum * v + (1.0 - momentum) * d
            d = v
        d = d * a[:, None]
        delta = delta + rho * overshoot * (N - i) / (N * (N + 1) / 2) * d
        history.append(delta.reshape(x.shape).copy())
    if tracking:
        logits = (xf + delta) @ W + b
        record(N, criterion_met(delta, logits), delta)
        delta = best
    return delta.reshape(x.shape), first, history


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def linear_keras(W, b, dtype="float64"):
    model = keras.Sequential([
        keras.Input(SHAPE, dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(W.shape[1], dtype=dtype),
    ])
    model.layers[-1].set_weights([W.astype(dtype), b.astype(dtype)])
    return model


def linear_callable(W, b):
    Wt = tf.constant(W, tf.float64)
    bt = tf.constant(b, tf.float64)

    def model(z, training=False):
        return tf.reshape(z, [tf.shape(z)[0], -1]) @ Wt + bt

    return model


def constant_direction_model(c=3.0, recorder=None):
    """logits = [c·sum(x), 0].

    With label 1 the CE gradient w.r.t. x is c·p_0·1: the same direction (+1 in
    every pixel) everywhere, and with x ≥ 0 its RMSE c·p_0 is ≈ c, so the 1e-8
    in the normalisation is negligible.
    """

    def model(z, training=False):
        s = c * tf.reduce_sum(tf.reshape(z, [tf.shape(z)[0], -1]), axis=1)
        return tf.stack([s, tf.zeros_like(s)], axis=1)

    return model if recorder is None else recording(model, recorder)


def recording(model, recorder):
    """Wraps `model` so every evaluated input x + δ is appended to `recorder`
    (works inside the attack's tf.function / while_loop)."""

    def wrapped(z, training=False):
        seen = tf.numpy_function(
            lambda v: (recorder.append(np.array(v)), v)[1],
            [tf.stop_gradient(z)], z.dtype, stateful=True,
        )
        seen = tf.reshape(seen, tf.shape(z))
        seen.set_shape(z.shape)
        return model(z + 0.0 * seen, training=training)

    return wrapped


def problem(seed=0, batch=6, K=10, w_scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, size=(batch,) + SHAPE)
    W = rng.normal(scale=w_scale, size=(D, K))
    b = rng.normal(scale=0.1, size=K)
    return x, W, b


def assert_close(actual, expected, rtol=1e-4, atol=1e-7):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def check_against_reference(res, x, y, W, b, **kw):
    delta_ref, first_ref, _ = np_attack(x, y, W, b, **kw)
    assert isinstance(res, AttackResult)
    scale = np.abs(delta_ref).max()
    assert scale > 0
    assert_close(res.delta, delta_ref, rtol=1e-4, atol=1e-6 * scale)
    assert_close(res.images, x + delta_ref, rtol=1e-4, atol=1e-6 * scale)
    assert_close(res.rmse, np_rmse(delta_ref), rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(res.first_met_step), first_ref)
    return delta_ref, first_ref


# ---------------------------------------------------------------------------
# 1. Comparison with the NumPy reimplementation
# ---------------------------------------------------------------------------


def test_bounded_explain_overshoot5_matches_reference():
    x, W, b = problem(seed=1)
    t = np.array([3, 0, 7, 2, 9, 5])
    res = attack_details(linear_keras(W, b), x, t, rho=0.1, steps=35,
                         overshoot=5.0, mode="bounded", targeted=True)
    _, first = check_against_reference(res, x, t, W, b, rho=0.1, steps=35,
                                       overshoot=5.0, mode="bounded", targeted=True)
    assert np.all(first >= 0)


def test_bounded_untargeted_o1_matches_reference():
    x, W, b = problem(seed=2)
    y = np.array([1, 4, 4, 0, 8, 2])
    res = attack_details(linear_keras(W, b), x, y, rho=0.05, steps=7,
                         overshoot=1.0, mode="bounded")
    check_against_reference(res, x, y, W, b, rho=0.05, steps=7, overshoot=1.0, mode="bounded")


def test_bounded_float32_keras_model_matches_reference():
    x, W, b = problem(seed=3)
    y = np.array([0, 1, 2, 3, 4, 5])
    res = attack_details(linear_keras(W, b, dtype="float32"), x.astype("float32"), y,
                         rho=0.05, steps=10, overshoot=1.0)
    assert res.delta.dtype == tf.float32
    delta_ref, _, _ = np_attack(x.astype("float32").astype("float64"), y,
                                W.astype("float32").astype("float64"),
                                b.astype("float32").astype("float64"),
                                rho=0.05, steps=10)
    assert_close(res.delta, delta_ref, rtol=1e-3, atol=1e-5 * np.abs(delta_ref).max())


def test_l2min_momentum_matches_reference():
    x, W, b = problem(seed=4, w_scale=0.5)
    xf = x.reshape(len(x), -1)
    y = np.argmax(xf @ W + b, axis=1)  # correctly classified
    y[0] = (y[0] + 1) % 10  # one misclassified from the start
    kw = dict(rho=1.0, steps=40, mode="l2min", momentum=0.9)
    res = attack_details(linear_keras(W, b), x, y, **kw)
    delta_ref, first = check_against_reference(res, x, y, W, b, **kw)
    assert first[0] == 0 and np.all(first[1:] > 0)
    # Returned images are misclassified (the criterion holds at the best δ).
    pred = np.argmax((x + delta_ref).reshape(len(x), -1) @ W + b, axis=1)
    assert np.all(pred != y)


def test_btr_matches_reference():
    x, W, b = problem(seed=5, w_scale=0.5)
    y = np.argmax(x.reshape(len(x), -1) @ W + b, axis=1)
    kw = dict(rho=1.0, steps=30, mode="btr")
    res = attack_details(linear_callable(W, b), x, y, **kw)
    delta_ref, first = check_against_reference(res, x, y, W, b, **kw)
    p = np_softmax((x + delta_ref).reshape(len(x), -1) @ W + b)
    assert np.all(p[np.arange(len(y)), y] <= 0.1)
    assert np.all(first >= 1)


def test_half_and_half_matches_reference_with_returned_mask():
    x, W, b = problem(seed=6, batch=16)
    y = np.arange(16) % 10
    kw = dict(rho=0.1, steps=8, overshoot=2.0, mode="bounded")
    res = attack_details(linear_keras(W, b), x, y, half_and_half=True, seed=7, **kw)
    a = np.asarray(res.attacked)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert 0 < a.sum() < len(a), "seed 7 should give a mixed mask"
    delta = np.asarray(res.delta)
    assert np.all(delta[a == 0] == 0.0)
    assert np.all(np.abs(delta[a == 1]).reshape(int(a.sum()), -1).max(axis=1) > 0)
    delta_ref, _, _ = np_attack(x, y, W, b, a=a, **kw)
    assert_close(delta, delta_ref, atol=1e-7)
    assert_close(res.images, x + delta_ref, atol=1e-7)


def test_half_and_half_mask_probability_and_seed_determinism():
    rng = np.random.default_rng(8)
    x = rng.uniform(size=(2000, 2, 2, 1))
    model = constant_direction_model()
    y = np.ones(2000, np.int32)
    r1 = attack_details(model, x, y, rho=0.1, steps=1, half_and_half=True, seed=11)
    r2 = attack_details(model, x, y, rho=0.1, steps=1, half_and_half=True, seed=11)
    a = np.asarray(r1.attacked)
    assert 0.45 < a.mean() < 0.55
    np.testing.assert_array_equal(a, np.asarray(r2.attacked))
    full = attack_details(model, x, y, rho=0.1, steps=1)
    np.testing.assert_array_equal(np.asarray(full.attacked), np.ones(2000))


# ---------------------------------------------------------------------------
# 2. Step schedule: steps sum to ρ·o, step i has size ρ·o·(N−i)/(N(N+1)/2)
# ---------------------------------------------------------------------------


def test_bounded_o1_constant_direction_ends_exactly_at_rho():
    x = np.random.default_rng(9).uniform(size=(3,) + SHAPE)
    rho, N = 0.07, 12
    res = attack_details(constant_direction_model(), x, [1, 1, 1], rho=rho, steps=N)
    # The unit-RMSE gradient direction is +1 in every pixel.
    assert_close(res.delta, rho * np.ones_like(x), rtol=1e-6)
    assert_close(res.rmse, [rho] * 3, rtol=1e-6)
    # The budget is only reached after the last step: never met at a step.
    np.testing.assert_array_equal(np.asarray(res.first_met_step), [-1, -1, -1])


def test_single_step_with_overshoot_has_rmse_o_rho():
    x = np.random.default_rng(10).uniform(size=(2,) + SHAPE)
    res = attack_details(constant_direction_model(), x, [1, 1], rho=0.03, steps=1,
                         overshoot=5.0)
    assert_close(res.rmse, [0.15, 0.15], rtol=1e-6)
    assert_close(res.delta, 0.15 * np.ones_like(x), rtol=1e-6)


def test_per_step_schedule_recorded_inside_the_loop():
    rec = []
    x = np.random.default_rng(11).uniform(size=(2,) + SHAPE)
    rho, o, N = 0.2, 2.5, 6
    # Steps sum to 2.5ρ: the budget is reached after 2 steps (6+5 ≥ 21/2.5 > 6);
    # no partial sum lands exactly on ρ.
    res = attack_details(constant_direction_model(recorder=rec), x, [1, 1],
                         rho=rho, steps=N, overshoot=o)
    assert len(rec) == N  # bounded mode: no extra evaluation
    sizes = [np_rmse(rec[k] - x)[0] for k in range(N)] + [float(res.rmse[0])]
    cumulative = np.array(sizes)
    expected = [rho * o * sum(N - i for i in range(k)) / (N * (N + 1) / 2)
                for k in range(N + 1)]
    # Until RMSE(δ) ≥ ρ every step is a full step along the same direction.
    reached = np.argmax(np.array(expected) >= rho)
    assert_close(cumulative[: reached + 1], expected[: reached + 1], rtol=1e-6, atol=1e-12)
    # Afterwards the step walks back by exactly the scheduled size.
    for k in range(reached, N):
        step = rho * o * (N - k) / (N * (N + 1) / 2)
        if cumulative[k] >= rho:
            assert cumulative[k + 1] == pytest.approx(cumulative[k] - step, rel=1e-6, abs=1e-12)
        else:
            assert cumulative[k + 1] == pytest.approx(cumulative[k] + step, rel=1e-6, abs=1e-12)


def test_linear_model_history_steps_follow_schedule():
    """Each recorded step of the linear-model reference has the scheduled norm,
    and the implementation's δ after k steps of a never-met l2min run equals
    the reference's (δ = 0 is returned, but the recorded inputs are checked)."""
    x, W, b = problem(seed=12, batch=3)
    y = np.argmax(x.reshape(3, -1) @ W + b, axis=1)
    rho, N = 1e-4, 9  # far too small to change the class
    rec = []
    model = recording(linear_callable(W, b), rec)

    res = attack_details(model, x, y, rho=rho, steps=N, mode="l2min", sanity_check=False)
    assert len(rec) == N + 1  # N steps plus the extra final evaluation
    _, _, hist = np_attack(x, y, W, b, rho=rho, steps=N, mode="l2min")
    for k in range(1, N + 1):
        assert_close(rec[k] - x, hist[k - 1], rtol=1e-6, atol=1e-14)
        step = np_rmse(hist[k - 1] - (hist[k - 2] if k > 1 else 0 * x))
        assert_close(step, rho * (N - k + 1) / (N * (N + 1) / 2), rtol=1e-6)
    # Never met → the clean image is returned.
    assert np.all(np.asarray(res.delta) == 0)
    np.testing.assert_array_equal(np.asarray(res.first_met_step), [-1, -1, -1])


# ---------------------------------------------------------------------------
# 3. Keep masks (`_criterion_met` is the keep mask's negation)
# ---------------------------------------------------------------------------


def test_criterion_bounded_uses_rho_and_ge():
    delta = tf.constant(np.stack([np.full(SHAPE, 0.5), np.full(SHAPE, 0.25),
                                  np.zeros(SHAPE), np.full(SHAPE, -0.5)]))
    logits = tf.zeros([4, 3], tf.float64)
    labels = tf.constant([0, 1, 2, 0])
    met = attacks._criterion_met("bounded", logits, labels, delta, tf.constant(0.5, tf.float64))
    np.testing.assert_array_equal(np.asarray(met), [True, False, False, True])
    met = attacks._criterion_met("bounded", logits, labels, delta,
                                 tf.constant(0.5000001, tf.float64))
    np.testing.assert_array_equal(np.asarray(met), [False, False, False, False])
    met = attacks._criterion_met("bounded", logits, labels, delta, tf.constant(0.25, tf.float64))
    np.testing.assert_array_equal(np.asarray(met), [True, True, False, True])


def test_bounded_overshoot_pulls_back_to_rho_not_rho_times_o():
    x = np.random.default_rng(13).uniform(size=(2,) + SHAPE)
    rho, o, N = 0.05, 5.0, 35
    res = attack_details(constant_direction_model(), x, [1, 1], rho=rho, steps=N, overshoot=o)
    # The final step has size ρ·o/(N(N+1)/2); δ oscillates around ρ, far below ρ·o.
    last_steps = rho * o * 3 / (N * (N + 1) / 2)
    assert np.all(np.abs(np.asarray(res.rmse) - rho) <= last_steps)
    # Reached after 4 steps: 35+34+33+32 = 134 ≥ 630/5 = 126 > 35+34+33 = 102.
    np.testing.assert_array_equal(np.asarray(res.first_met_step), [4, 4])


def test_criterion_l2min_argmax_differs_including_ties():
    logits = tf.constant([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.0]],
                         tf.float64)
    labels = tf.constant([0, 1, 1, 2])
    delta = tf.zeros([4] + list(SHAPE), tf.float64)
    met = attacks._criterion_met("l2min", logits, labels, delta, tf.constant(1.0, tf.float64))
    # Ties: argmax takes the first index, as np.argmax does.
    np.testing.assert_array_equal(np.asarray(met), np.argmax(logits.numpy(), 1) != [0, 1, 1, 2])
    np.testing.assert_array_equal(np.asarray(met), [False, True, False, True])
    # δ does not matter in l2min.
    big = tf.ones([4] + list(SHAPE), tf.float64) * 100
    np.testing.assert_array_equal(
        np.asarray(attacks._criterion_met("l2min", logits, labels, big, tf.constant(1e-3, tf.float64))),
        [False, True, False, True])


def test_criterion_btr_probability_at_most_one_over_k():
    K = 4
    logits = np.array([
        [0.0, 0.0, 0.0, 0.0],      # p_y = 1/4 exactly → met (boundary, ≤)
        [1.0, 0.0, 0.0, 0.0],      # p_0 > 1/4 → not met
        [1.0, 0.0, 0.0, 0.0],      # y = 1: p_1 < 1/4 → met
        [0.0, 0.01, 0.0, 0.0],     # y = 1 argmax, p ≈ 0.2519 > 1/4 → not met
        [0.0, -0.01, 0.0, 0.0],    # y = 1, p ≈ 0.2481 → met
    ])
    labels = np.array([0, 0, 1, 1, 1])
    p = np_softmax(logits)[np.arange(5), labels]
    expected = p <= 1.0 / K
    np.testing.assert_array_equal(expected, [True, False, True, False, True])
    met = attacks._criterion_met("btr", tf.constant(logits), tf.constant(labels, tf.int32),
                                 tf.zeros([5] + list(SHAPE), tf.float64),
                                 tf.constant(1.0, tf.float64))
    np.testing.assert_array_equal(np.asarray(met), expected)
    # l2min differs on the tie row: argmax == y there.
    met_l2 = attacks._criterion_met("l2min", tf.constant(logits), tf.constant(labels, tf.int32),
                                    tf.zeros([5] + list(SHAPE), tf.float64),
                                    tf.constant(1.0, tf.float64))
    assert not bool(met_l2[0])


def test_per_example_rmse():
    v = np.random.default_rng(14).normal(size=(3, 5, 2, 2))
    assert_close(per_example_rmse(tf.constant(v)), np.sqrt((v**2).reshape(3, -1).mean(1)),
                 rtol=1e-12)


# ---------------------------------------------------------------------------
# 4. Explanation mode
# ---------------------------------------------------------------------------


def test_bounded_explanation_reaches_rho_and_raises_target_probability():
    rng = np.random.default_rng(15)
    keras.utils.set_random_seed(15)
    model = keras.Sequential([
        keras.Input(SHAPE),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(5),
    ])
    x = rng.uniform(size=(8,) + SHAPE).astype("float32")
    p0 = keras.ops.convert_to_numpy(keras.ops.softmax(model(x)))
    targets = np.argmin(p0, axis=1)  # least likely class: hardest direction
    xe = attack(model, x, targets, rho=0.1, steps=35, overshoot=5.0, targeted=True)
    rmse = np_rmse(np.asarray(xe) - x)
    assert np.all(np.abs(rmse - 0.1) <= 0.005), rmse
    p1 = keras.ops.convert_to_numpy(keras.ops.softmax(model(xe)))
    idx = np.arange(8)
    assert np.all(p1[idx, targets] > p0[idx, targets])


# ---------------------------------------------------------------------------
# 5. L2,min returns the smallest successful δ
# ---------------------------------------------------------------------------


def test_l2min_linear_two_class_close_to_analytic_boundary():
    rng = np.random.default_rng(16)
    W = rng.normal(size=(D, 2))
    b = np.array([0.3, -0.2])
    x = rng.uniform(size=(6,) + SHAPE)
    xf = x.reshape(6, -1)
    logits = xf @ W + b
    y = np.argmax(logits, axis=1)
    w = W[:, 0] - W[:, 1]
    dist = np.abs(xf @ w + b[0] - b[1]) / np.linalg.norm(w)
    dist_rmse = dist / np.sqrt(D)
    rho = 2.0 * dist_rmse.max()
    kw = dict(rho=rho, steps=200, mode="l2min", momentum=0.9)
    res = attack_details(linear_keras(W, b), x, y, **kw)
    r = np.asarray(res.rmse)
    assert np.all(r >= dist_rmse * (1 - 1e-9))
    assert np.all(r <= dist_rmse * 1.03), r / dist_rmse
    pred = np.argmax(np.asarray(res.images).reshape(6, -1) @ W + b, axis=1)
    assert np.all(pred != y)
    # The smallest-RMSE δ among all met steps (incl. the extra final evaluation).
    delta_ref, first, _ = np_attack(x, y, W, b, **kw)
    assert_close(r, np_rmse(delta_ref), rtol=1e-6)
    assert_close(res.delta, delta_ref, rtol=1e-5, atol=1e-9)
    assert np.all((first > 0) & (first <= 100))


def test_l2min_best_is_minimum_over_met_steps_not_final():
    """Without momentum δ oscillates across the boundary; the returned δ must
    be the minimum over every evaluated δ at which the class had changed."""
    x, W, b = problem(seed=17, batch=5, K=3)
    y = np.argmax(x.reshape(5, -1) @ W + b, axis=1)
    rec = []
    model = recording(linear_keras(W, b), rec)

    N = 25
    res = attack_details(model, x, y, rho=3.0, steps=N, mode="l2min")
    assert len(rec) == N + 1
    seen = np.stack(rec)  # (N+1, B, ...)
    deltas = (seen - x[None]).reshape(N + 1, 5, -1)
    met = np.argmax(seen.reshape(N + 1, 5, -1) @ W + b, axis=2) != y[None]
    r = np.sqrt(np.mean(deltas**2, axis=2))
    r_met = np.where(met, r, np.inf)
    assert np.all(np.isfinite(r_met.min(axis=0)))
    assert_close(res.rmse, r_met.min(axis=0), rtol=1e-9)
    best = np.argmin(r_met, axis=0)
    assert_close(np.asarray(res.delta).reshape(5, -1), deltas[best, np.arange(5)], rtol=1e-9,
                 atol=1e-12)
    np.testing.assert_array_equal(np.asarray(res.first_met_step), np.argmax(met, axis=0))
    # The best δ is not simply the last one for at least one example.
    assert np.any(best != N)


# ---------------------------------------------------------------------------
# 6. Images failing from the start
# ---------------------------------------------------------------------------


def test_misclassified_from_start_gets_zero_delta_l2min_and_btr():
    K = 4
    rng = np.random.default_rng(18)
    W = rng.normal(size=(D, K))
    b = np.zeros(K)
    x = rng.uniform(size=(4,) + SHAPE)
    x[3] = 0.0  # logits all 0: argmax = 0 = y, but p_y = 1/4 exactly
    pred = np.argmax(x.reshape(4, -1) @ W + b, axis=1)
    y = pred.copy()
    y[0] = (pred[0] + 1) % K  # misclassified from the start
    y[3] = 0
    model = linear_keras(W, b)
    r = attack_details(model, x, y, rho=5.0, steps=30, mode="l2min")
    first = np.asarray(r.first_met_step)
    assert first[0] == 0 and np.all(np.asarray(r.delta)[0] == 0) and r.rmse[0] == 0
    assert np.all(first[1:] > 0) and np.all(np.asarray(r.rmse)[1:] > 0)
    r = attack_details(model, x, y, rho=5.0, steps=30, mode="btr")
    first = np.asarray(r.first_met_step)
    for j in (0, 3):
        assert first[j] == 0
        assert np.all(np.asarray(r.delta)[j] == 0)
        assert float(r.rmse[j]) == 0.0
    assert np.all(first[1:3] > 0)


# ---------------------------------------------------------------------------
# 7. Sanity check
# ---------------------------------------------------------------------------


def frozen_model(z, training=False):
    """Class 0 always wins; output does not depend on the input (zero gradient)."""
    s = 0.0 * tf.reduce_sum(tf.reshape(z, [tf.shape(z)[0], -1]), axis=1)
    return tf.stack([s + 10.0, s, s], axis=1)


def test_sanity_error_when_class_cannot_change():
    x = np.random.default_rng(19).uniform(size=(4,) + SHAPE)
    y = np.array([0, 0, 1, 0])  # example 2 is misclassified from the start
    with pytest.raises(AttackSanityError, match="Increase rho or steps") as info:
        attack(frozen_model, x, y, rho=1.0, steps=10, mode="l2min")
    assert isinstance(info.value, ValueError)
    assert re.search(r"\b3 of 4 images\b", str(info.value)), str(info.value)
    with pytest.raises(AttackSanityError, match="Increase rho or steps"):
        attack(frozen_model, x, np.zeros(4, np.int64), rho=1.0, steps=10, mode="btr")
    res = attack_details(frozen_model, x, y, rho=1.0, steps=10, mode="l2min",
                         sanity_check=False)
    np.testing.assert_array_equal(np.asarray(res.delta), np.zeros_like(x))
    np.testing.assert_array_equal(np.asarray(res.images), x)
    np.testing.assert_array_equal(np.asarray(res.first_met_step), [-1, -1, 0, -1])


def test_sanity_bounded_explain_budget_step_limit():
    """N = 35, limit ⌊N/2⌋ = 17. With a constant direction the budget is first
    reached after k updates when o·k(2N−k+1)/(N(N+1)) ≥ 1:
    o = 1.35 → k = 18 (too late), o = 1.40 → k = 17 (just in time)."""
    x = np.random.default_rng(20).uniform(size=(2,) + SHAPE)
    model = constant_direction_model()
    with pytest.raises(AttackSanityError, match="Increase rho or steps") as info:
        attack(model, x, [1, 1], rho=0.1, steps=35, overshoot=1.35, targeted=True)
    assert "2 of 2" in str(info.value) and "17" in str(info.value)
    ok = attack_details(model, x, [1, 1], rho=0.1, steps=35, overshoot=1.40, targeted=True)
    np.testing.assert_array_equal(np.asarray(ok.first_met_step), [17, 17])
    late = attack_details(model, x, [1, 1], rho=0.1, steps=35, overshoot=1.35, targeted=True,
                          sanity_check=False)
    np.testing.assert_array_equal(np.asarray(late.first_met_step), [18, 18])
    # o = 1: the budget is reached only after the last step → raise.
    with pytest.raises(AttackSanityError):
        attack(model, x, [1, 1], rho=0.1, steps=35, overshoot=1.0, targeted=True)
    # Default: no sanity check for training-style bounded attacks...
    attack(model, x, [1, 1], rho=0.1, steps=35, overshoot=1.0)
    # ...nor when training=True.
    attack(model, x, [1, 1], rho=0.1, steps=35, overshoot=1.0, targeted=True, training=True)
    # Explicit sanity_check=True turns it on for plain bounded.
    with pytest.raises(AttackSanityError):
        attack(model, x, [1, 1], rho=0.1, steps=35, sanity_check=True)


# ---------------------------------------------------------------------------
# 8. Argument validation
# ---------------------------------------------------------------------------

X8 = np.zeros((2,) + SHAPE, np.float32)


@pytest.mark.parametrize("kwargs", [
    dict(rho=0.0, steps=3),
    dict(rho=-0.1, steps=3),
    dict(rho=0.1, steps=3, mode="linf"),
    dict(rho=0.1, steps=0),
    dict(rho=0.1, steps=2.0),
    dict(rho=0.1, steps=3, momentum=1.0),
    dict(rho=0.1, steps=3, momentum=-0.1),
    dict(rho=0.1, steps=3, overshoot=0.5),
    dict(rho=0.1, steps=3, clip_range=(1.0, 0.0)),
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="Received:"):
        attack(constant_direction_model(), X8, [0, 0], **kwargs)


def test_invalid_labels_and_images():
    model = constant_direction_model()
    with pytest.raises(ValueError, match="Received:"):
        attack(model, X8, np.array([0.0, 1.0]), rho=0.1, steps=2)
    with pytest.raises(ValueError, match="Received:"):
        attack(model, X8, [0, 1, 0], rho=0.1, steps=2)
    with pytest.raises(ValueError, match="Received:"):
        attack(model, np.zeros((2,) + SHAPE, np.uint8), [0, 1], rho=0.1, steps=2)
    with pytest.raises(ValueError, match="Received:"):
        attack(model, X8, np.array([True, False]), rho=0.1, steps=2)


# ---------------------------------------------------------------------------
# 9. Graph mode, clipping, training flag
# ---------------------------------------------------------------------------


def test_graph_mode_matches_eager():
    x, W, b = problem(seed=21, batch=4, K=5)
    y = np.argmax(x.reshape(4, -1) @ W + b, axis=1)
    model = linear_keras(W, b)
    kw = dict(rho=1.0, steps=20, mode="l2min", momentum=0.5)
    eager = attack_details(model, x, y, **kw)

    @tf.function
    def graph(images, labels):
        return attack_details(model, images, labels, **kw)

    g = graph(tf.constant(x), tf.constant(y, tf.int32))
    for name in AttackResult._fields:
        np.testing.assert_allclose(np.asarray(getattr(g, name)),
                                   np.asarray(getattr(eager, name)), rtol=1e-10, atol=1e-12)
    delta_ref, _, _ = np_attack(x, y, W, b, **kw)
    assert_close(g.delta, delta_ref, atol=1e-9)
    # `attack` inside a tf.function as well.
    imgs = tf.function(lambda i, l: attack(model, i, l, **kw))(tf.constant(x), tf.constant(y))
    assert_close(imgs, x + delta_ref, atol=1e-9)


def test_graph_mode_sanity_failure_raises():
    x = np.random.default_rng(22).uniform(size=(3,) + SHAPE)

    @tf.function
    def graph(images):
        return attack(frozen_model, images, tf.zeros([3], tf.int32), rho=1.0, steps=6,
                      mode="l2min")

    with pytest.raises(tf.errors.InvalidArgumentError, match="Increase rho or steps"):
        graph(tf.constant(x))


def test_clip_range_keeps_images_in_unit_interval():
    rng = np.random.default_rng(23)
    x = rng.uniform(0.9, 1.0, size=(3,) + SHAPE)
    x[1] = rng.uniform(0.0, 0.05, size=SHAPE)
    W = np.zeros((D, 2))
    W[:, 0] = 1.0
    W[: D // 2, 0] = -1.0
    model = linear_keras(W, np.zeros(2))
    for mode in ("bounded", "l2min"):
        res = attack_details(model, x, [0, 0, 0], rho=0.5, steps=10, overshoot=2.0,
                             mode=mode, clip_range=(0.0, 1.0), sanity_check=False)
        imgs = np.asarray(res.images)
        assert imgs.min() >= 0.0 and imgs.max() <= 1.0
        assert_close(res.delta, imgs - x, atol=1e-12)
    unclipped = np.asarray(attack(model, x, [0, 0, 0], rho=0.5, steps=10, overshoot=2.0))
    assert unclipped.max() > 1.0 or unclipped.min() < 0.0


def test_training_flag_reaches_the_model():
    seen = []

    def model(z, training=False):
        seen.append(training)
        s = tf.reduce_sum(tf.reshape(z, [tf.shape(z)[0], -1]), axis=1)
        return tf.stack([s, -s], axis=1)

    x = np.zeros((2,) + SHAPE)
    attack(model, x, [0, 1], rho=0.1, steps=2)
    assert seen and all(t is False for t in seen)
    seen.clear()
    attack(model, x, [0, 1], rho=0.1, steps=2, training=True)
    assert seen and all(t is True for t in seen)


def test_result_fields_and_shapes():
    x, W, b = problem(seed=24, batch=3, K=4)
    res = attack_details(linear_keras(W, b), x, [0, 1, 2], rho=0.1, steps=3)
    assert res.images.shape == x.shape and res.delta.shape == x.shape
    assert res.rmse.shape == (3,) and res.first_met_step.shape == (3,)
    assert res.attacked.shape == (3,)
    assert_close(res.rmse, np_rmse(np.asarray(res.delta)), rtol=1e-12)
    out = attack(linear_keras(W, b), x, [0, 1, 2], rho=0.1, steps=3)
    assert_close(out, res.images, rtol=1e-12)


class _SignedSum:
    """Logits [s·Σx, −s·Σx]: two instances differ only in Python state."""

    def __init__(self, sign):
        self.sign = sign

    def logits(self, images, training=False):
        s = self.sign * tf.reduce_sum(tf.reshape(images, [tf.shape(images)[0], -1]), axis=1)
        return tf.stack([s, -s], axis=1)


def test_bound_methods_of_different_instances_are_not_confused():
    x = np.full((1, 2, 2, 1), 0.5)
    up = attack_details(_SignedSum(1.0).logits, x, [1], rho=0.1, steps=1).delta.numpy()
    down = attack_details(_SignedSum(-1.0).logits, x, [1], rho=0.1, steps=1).delta.numpy()
    np.testing.assert_allclose(up, np.full_like(up, 0.1), rtol=1e-6)
    np.testing.assert_allclose(down, np.full_like(down, -0.1), rtol=1e-6)


def test_callable_without_training_argument_is_accepted():
    x = np.full((2, 2, 2, 1), 0.5)
    out = attack(lambda z: _SignedSum(1.0).logits(z), x, [1, 1], rho=0.1, steps=2)
    assert out.shape == x.shape


def test_input_independent_model_is_reported():
    x = np.full((2, 2, 2, 1), 0.5)
    with pytest.raises(ValueError, match="do not depend on its input"):
        attack(lambda z: tf.zeros([tf.shape(z)[0], 3], z.dtype), x, [1, 1], rho=0.1, steps=2)


def test_sanity_check_ignores_examples_left_clean_by_half_and_half():
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((16, 4, 4, 3)).astype("float32")
    result = attack_details(
        model, x, np.zeros(16, "int32"), rho=0.1, steps=35, overshoot=5,
        targeted=True, half_and_half=True, seed=3,
    )
    attacked = result.attacked.numpy()
    assert 0 < attacked.sum() < 16
    assert np.all(result.rmse.numpy()[attacked == 0] == 0)


def test_attack_settings_object_and_keywords_run_the_same_attack():
    x, W, b = problem(seed=3)
    t = np.array([1, 4, 2, 8, 5, 7])
    settings = AttackSettings(rho=0.1, steps=12, overshoot=5.0, targeted=True)
    by_object = attack_details(linear_keras(W, b), x, t, settings)
    by_keywords = attack_details(linear_keras(W, b), x, t, rho=0.1, steps=12, overshoot=5.0, targeted=True)
    np.testing.assert_array_equal(by_object.delta, by_keywords.delta)
    with pytest.warns(DeprecationWarning, match="targeted"):
        by_old_name = attack_details(linear_keras(W, b), x, t, rho=0.1, steps=12, overshoot=5.0, explain=True)
    np.testing.assert_array_equal(by_old_name.delta, by_object.delta)
    with pytest.raises(TypeError, match="not both"):
        attack(linear_keras(W, b), x, t, settings, rho=0.2)


@pytest.mark.parametrize("fields, match", [
    (dict(rho=0.0, steps=3), "Received: rho=0.0"),
    (dict(rho=0.1, steps=0), "Received: steps=0"),
    (dict(rho=0.1, steps=3, overshoot=0.5), "Received: overshoot=0.5"),
    (dict(rho=0.1, steps=3, momentum=1.0), "Received: momentum=1.0"),
    (dict(rho=0.1, steps=3, mode="linf"), "linf"),
    (dict(rho=0.1, steps=3, clip_range=(1, 0)), "clip_range"),
    (dict(rho="0.1", steps=3), "rho"),
])
def test_attack_settings_reject_bad_fields_by_name(fields, match):
    with pytest.raises(ValueError, match=match):
        AttackSettings(**fields)


def test_labels_outside_the_classes_are_refused_before_any_step():
    x, W, b = problem(seed=4)
    model = linear_keras(W, b)
    classes = W.shape[1]
    with pytest.raises(ValueError, match=f"Received: targets entry {classes}"):
        attack(model, x, [classes] * len(x), rho=0.1, steps=4, targeted=True)
    with pytest.raises(ValueError, match=r"Received: labels entry -1"):
        attack_details(model, x, [-1] * len(x), rho=0.1, steps=4)


# ---------------------------------------------------------------------------
# Progress and input checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [4, 40])  # unrolled, and a while loop
def test_report_steps_calls_the_listener_once_per_step_and_changes_nothing(steps):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(2).uniform(size=(2,) + SHAPE).astype("float32")
    ticks = []
    with attacks.step_listener(lambda: ticks.append(1)):
        reported = attack_details(model, x, [0, 1], rho=0.1, steps=steps, targeted=True, sanity_check=False,
                                  report_steps=True)
        quiet = attack_details(model, x, [0, 1], rho=0.1, steps=steps, targeted=True, sanity_check=False)
    assert len(ticks) == steps
    np.testing.assert_array_equal(reported.delta, quiet.delta)
    np.testing.assert_array_equal(reported.first_met_step, quiet.first_met_step)


def test_images_of_another_size_than_the_models_input_are_named():
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=re.escape("The images are 8×8×3; this model takes 4×4×3 (height × width "
                                                   "× channels). Resize them first")):
        attack(model, np.zeros((1, 8, 8, 3), "float32"), [0], rho=0.1, steps=2)
