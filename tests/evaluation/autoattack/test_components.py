"""APGD, FAB-T, Square and FAB's projections, each checked on linear models whose answers are known."""

import keras
import numpy as np
import pytest

from keras_robust.evaluation.autoattack import apgd as apgd_module
from keras_robust.evaluation.autoattack.apgd import apgd, checkpoints
from keras_robust.evaluation.autoattack.fab import fab_targeted
from keras_robust.evaluation.autoattack.fab_projections import projection_l2, projection_linf
from keras_robust.evaluation.autoattack.norms import norm_of
from keras_robust.evaluation.autoattack.oracle import Oracle, per_example_loss
from keras_robust.evaluation.autoattack.square import square, window_fraction

SHAPE = (10, 10, 3)
DIMS = int(np.prod(SHAPE))


def linear_model(weights):
    model = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(weights.shape[1])])
    model.layers[-1].set_weights([weights.astype("float32"), np.zeros(weights.shape[1], "float32")])
    return model


@pytest.fixture
def linear(rng):
    """A 10-class linear model and grey-ish images it classifies, with their exact boundary distances."""
    weights = rng.normal(size=(DIMS, 10))
    images = (0.5 + 0.02 * rng.normal(size=(40, *SHAPE))).astype("float32")
    logits = images.reshape(40, -1) @ weights
    labels = logits.argmax(axis=1)
    return linear_model(weights), weights, images, labels, logits


def distance_to(weights, logits, labels, targets, norm):
    """Exact distance from each image to the hyperplane z_t = z_y of a linear model, ignoring the box."""
    rows = np.arange(len(labels))
    normal = weights[:, targets].T - weights[:, labels].T
    dual = np.abs(normal).sum(axis=1) if norm == "Linf" else np.linalg.norm(normal, axis=1)
    return (logits[rows, labels] - logits[rows, targets]) / dual


def nearest_boundary(weights, logits, labels, norm):
    others = [distance_to(weights, logits, labels, np.full(len(labels), j), norm) for j in range(weights.shape[1])]
    others = np.stack(others, axis=1)
    others[np.arange(len(labels)), labels] = np.inf
    return others.min(axis=1)


def test_the_step_size_checkpoints_are_the_originals():
    # 22 % of 100, then 3 fewer each time, never fewer than 6: 22, 19, 16, 13, 10, 7, 6, 6.
    assert checkpoints(100) == {21: 22, 40: 19, 56: 16, 69: 13, 79: 10, 86: 7, 92: 6, 98: 6}


def test_the_losses_match_a_numpy_computation(rng):
    import tensorflow as tf

    logits = rng.normal(size=(6, 10)).astype("float32")
    labels, targets = rng.integers(0, 10, 6), rng.integers(0, 10, 6)
    ranked = -np.sort(-logits, axis=1)
    rows = np.arange(6)
    dlr = -(logits[rows, labels] - logits[rows, targets]) / (ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + 1e-12)
    np.testing.assert_allclose(per_example_loss("dlr-targeted", tf.constant(logits), labels, targets), dlr, rtol=1e-5)
    np.testing.assert_allclose(per_example_loss("target-margin", tf.constant(logits), labels, targets),
                               logits[rows, targets] - logits[rows, labels], rtol=1e-6)
    shifted = logits - logits.max(axis=1, keepdims=True)
    ce = -(shifted[rows, labels] - np.log(np.exp(shifted).sum(axis=1)))
    np.testing.assert_allclose(per_example_loss("ce", tf.constant(logits), labels, targets), ce, rtol=1e-5)


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_apgd_ce_breaks_what_lies_within_eps_and_nothing_beyond(linear, norm):
    model, weights, images, labels, logits = linear
    nearest = nearest_boundary(weights, logits, labels, norm)
    eps = float(np.median(nearest))
    found, broken = apgd(Oracle(model), images, labels, eps=eps, norm=norm, rng=np.random.default_rng(0))
    # No class change is nearer than the nearest boundary; the box only makes them farther.
    assert not np.any(broken & (nearest > eps))
    assert np.all(broken[nearest < 0.8 * eps])
    assert np.all(norm_of(found - images, norm) <= eps + 1e-5)
    assert np.all(model.predict(found[broken], verbose=0).argmax(axis=1) != labels[broken])
    np.testing.assert_array_equal(found[~broken], images[~broken])


def test_apgd_t_ascends_the_targeted_dlr_loss_toward_its_target(linear):
    model, weights, images, labels, logits = linear
    targets = np.argsort(-logits, axis=1)[:, 1]
    eps = float(np.median(distance_to(weights, logits, labels, targets, "L2")))
    oracle = Oracle(model)
    found, broken = apgd(oracle, images, labels, eps=eps, norm="L2", loss="dlr-targeted", targets=targets,
                         rng=np.random.default_rng(0))
    assert broken.mean() >= 0.4
    before = oracle.loss_and_gradient("dlr-targeted", images, labels, targets)[1]
    after = oracle.loss_and_gradient("dlr-targeted", found, labels, targets)[1]
    assert np.all(after[broken] > before[broken])
    # A broken image lands in its target class here: the linear model's DLR loss pulls only toward it.
    assert np.mean(oracle.logits(found[broken]).argmax(axis=1) == targets[broken]) > 0.9


def test_apgd_halves_its_step_where_the_loss_stops_rising(linear, monkeypatch):
    model, _, images, labels, _ = linear
    halved = []
    real = apgd_module._oscillating

    def recording(history, iteration, distance):
        flags = real(history, iteration, distance)
        halved.append((iteration, int(flags.sum())))
        return flags

    monkeypatch.setattr(apgd_module, "_oscillating", recording)
    apgd(Oracle(model), images, labels, eps=1e-3, norm="Linf", rng=np.random.default_rng(0))
    assert [iteration for iteration, _ in halved] == sorted(checkpoints(100))
    # With ε tiny the loss is nearly flat at once, so some step halves at the first checkpoint.
    assert halved[0][1] > 0


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_fab_t_returns_the_nearest_point_of_the_target_boundary(linear, norm):
    model, weights, images, labels, logits = linear
    targets = np.argsort(-logits, axis=1)[:, 1]
    exact = distance_to(weights, logits, labels, targets, norm)
    eps = float(np.max(exact)) * 2
    found, broken = fab_targeted(Oracle(model), images, labels, targets, eps=eps, norm=norm, iterations=20)
    assert np.all(broken)
    # FAB's projection is exact for a linear model: it reaches the boundary at its nearest point,
    # overshooting by at most its η = 1.05 before the backward steps bring it in.
    distance = norm_of(found - images, norm)
    assert np.all(distance >= exact * (1 - 1e-4))
    np.testing.assert_allclose(distance, exact, rtol=0.02)
    assert np.all(model.predict(found, verbose=0).argmax(axis=1) != labels)


def test_fab_t_leaves_images_whose_boundary_lies_beyond_eps(linear):
    model, weights, images, labels, logits = linear
    targets = np.argsort(-logits, axis=1)[:, 1]
    exact = distance_to(weights, logits, labels, targets, "L2")
    eps = float(np.median(exact))
    found, broken = fab_targeted(Oracle(model), images, labels, targets, eps=eps, norm="L2", iterations=20)
    assert np.all(broken[exact < 0.99 * eps]) and not np.any(broken[exact > eps])
    np.testing.assert_array_equal(found[~broken], images[~broken])


class GradientFree(Oracle):
    def loss_and_gradient(self, *args, **kwargs):
        raise AssertionError("Square read a gradient")


# Random search needs room: ε a few times the nearest boundary's distance (in 300 dimensions the
# L2 attack breaks 5 % of these images at 3 times the median distance and 88 % at 5 times).
@pytest.mark.parametrize("norm, room", [("L2", 5.0), ("Linf", 3.0)])
def test_square_breaks_images_without_any_gradient(linear, norm, room):
    model, weights, images, labels, logits = linear
    nearest = nearest_boundary(weights, logits, labels, norm)
    eps = room * float(np.median(nearest))
    oracle = GradientFree(model)
    found, broken = square(oracle, images, labels, eps=eps, norm=norm, queries=300, rng=np.random.default_rng(0))
    assert broken.mean() > 0.6
    assert np.all(norm_of(found - images, norm) <= eps * (1 + 1e-4))
    assert np.all(oracle.logits(found[broken]).argmax(axis=1) != labels[broken])
    # Each query evaluates only the images still unbroken.
    assert oracle.evaluations <= len(images) * 301


def test_square_window_schedule_is_the_originals():
    assert [window_fraction(q) for q in (0, 10, 11, 50, 51, 5000, 9000)] == [
        0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 128, 0.8 / 512]


def test_projections_match_the_closed_form_when_the_box_does_not_bind(rng):
    points = 0.5 + 0.01 * rng.normal(size=(5, 12))
    weights = rng.normal(size=(5, 12))
    offsets = np.sum(weights * points, axis=1) + 0.01 * rng.normal(size=5)
    gap = offsets - np.sum(weights * points, axis=1)
    # L2: along the normal; L∞: every coordinate moves by the same amount, signed as its weight.
    np.testing.assert_allclose(projection_l2(points, weights, offsets),
                               (gap / np.sum(weights**2, axis=1))[:, None] * weights, atol=1e-10)
    np.testing.assert_allclose(projection_linf(points, weights, offsets),
                               (gap / np.abs(weights).sum(axis=1))[:, None] * np.sign(weights), atol=1e-10)


def test_projections_stop_at_the_box_and_reach_the_plane_with_the_other_coordinates():
    # 2 coordinates at t = (0.9, 0.5), plane z1 + z2 = 1.9: L2 would move both by 0.25, but z1 may
    # only reach 1, so it moves 0.1 and z2 the remaining 0.4; L∞ moves both by 0.25 first,
    # capped the same way: z1 + 0.1, z2 + 0.4.
    points, weights, offsets = np.array([[0.9, 0.5]]), np.array([[1.0, 1.0]]), np.array([1.9])
    np.testing.assert_allclose(projection_l2(points, weights, offsets), [[0.1, 0.4]], atol=1e-12)
    np.testing.assert_allclose(projection_linf(points, weights, offsets), [[0.1, 0.4]], atol=1e-12)
