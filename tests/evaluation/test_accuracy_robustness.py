import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust import AttackSanityError
from keras_robust.evaluation.accuracy_robustness import (
    accuracy_curve,
    accuracy_robustness_area,
    ara,
    evaluation_indices,
)


def exact_area(m, num_classes):
    """∫ max(0, acc(ε) − 1/K) dε for the step function acc(ε) = #(m > ε) / n."""
    m = np.sort(np.asarray(m, dtype="float64"))
    n = len(m)
    lower = np.concatenate([[0.0], m[:-1]])
    level = (n - np.arange(n)) / n  # acc on [m_(k-1), m_(k))
    return float(np.sum((m - lower) * np.maximum(0.0, level - 1.0 / num_classes)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_area_matches_closed_form_within_histogram_resolution(seed):
    m = np.random.default_rng(seed).exponential(0.02, size=500)
    m[:40] = 0.0  # misclassified from the start
    area = accuracy_robustness_area(m, 10)
    assert abs(area - exact_area(m, 10)) <= m.max() / 1000
    assert area < exact_area(m, 10) + 1e-12  # right-endpoint sum never overestimates


def test_area_hand_worked_case():
    # K = 2, m = {0, 1, 1, 1}: acc = 3/4 on [0, 1), so the exact area is
    # (3/4 - 1/2) * 1 = 0.25; the right-endpoint sum loses the last bin,
    # where acc(1) = 0: 999 bins of width 1/1000 at 0.25 = 0.24975.
    assert exact_area([0.0, 1.0, 1.0, 1.0], 2) == pytest.approx(0.25)
    assert accuracy_robustness_area([0.0, 1.0, 1.0, 1.0], 2) == pytest.approx(0.24975)
    # A random guesser (acc never above 1/K) scores 0.
    assert accuracy_robustness_area([0.0] * 9 + [5.0], 10) == 0.0
    assert accuracy_robustness_area([0.0, 0.0], 10) == 0.0


def test_area_counts_an_unbroken_image_as_correct_up_to_the_largest_finite_m():
    # K = 4, m = {0, 1, 1, inf}: acc = 3/4 on [0, 1) and 1/4 = 1/K at ε = 1, so the
    # right-endpoint sum is 999 bins of width 1/1000 at 3/4 − 1/4.
    assert accuracy_robustness_area([0.0, 1.0, 1.0, np.inf], 4) == pytest.approx(0.4995)
    edges, accuracy = accuracy_curve([0.0, 1.0, 1.0, np.inf])
    assert edges[-1] == 1.0 and accuracy[-1] == 0.25


@pytest.mark.parametrize("bad", [[], [-0.1, 0.2], [np.nan], [[0.1]], [np.inf], [-np.inf, 0.1]])
def test_area_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="Received:"):
        accuracy_robustness_area(bad, 10)


def linear_model(weights, bias):
    dims, classes = weights.shape
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(classes)])
    model.layers[-1].set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


def boundary_rmse(images, weights, bias, labels):
    """Exact distance to the nearest decision boundary of a linear model, as RMSE."""
    flat = images.reshape(len(images), -1).astype("float64")
    logits = flat @ weights + bias
    distance = np.full(len(images), np.inf)
    for j in range(weights.shape[1]):
        gap = logits[np.arange(len(images)), labels] - logits[:, j]
        norm = np.linalg.norm(weights[:, labels].T - weights[:, j], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.minimum(distance, np.where(j == labels, np.inf, gap / norm))
    return distance / np.sqrt(flat.shape[1])


@pytest.mark.parametrize("num_classes", [2, 4])
def test_l2min_minimal_perturbation_against_analytic_boundary_distance(rng, num_classes):
    weights = rng.normal(size=(12, num_classes))
    bias = rng.normal(size=num_classes) * 0.1
    model = linear_model(weights, bias)
    images = rng.random((24, 2, 2, 3)).astype("float32")
    labels = (images.reshape(24, -1) @ weights + bias).argmax(axis=1)
    result = ara(model, images, labels, progress=False, batch_size=8)
    exact = boundary_rmse(images, weights, bias, labels)
    # No class change is closer than the boundary.
    np.testing.assert_array_less(exact * (1 - 1e-4), result.attack_min_rmse)
    if num_classes == 2:
        # With two classes the cross-entropy gradient is normal to the boundary,
        # so the attack finds the minimum up to its final step sizes.
        np.testing.assert_allclose(result.attack_min_rmse, exact, rtol=0.03, atol=1e-3)
    assert result.clean_accuracy == 1.0
    assert np.all(result.btr_min_rmse > 0)


def test_images_failing_from_the_start_score_zero(rng):
    weights = rng.normal(size=(12, 3))
    model = linear_model(weights, np.zeros(3))
    images = rng.random((10, 2, 2, 3)).astype("float32")
    predicted = (images.reshape(10, -1) @ weights).argmax(axis=1)
    labels = predicted.copy()
    labels[:4] = (predicted[:4] + 1) % 3  # wrong from the start
    result = ara(model, images, labels, steps=60, progress=False)
    assert np.all(result.attack_min_rmse[:4] == 0)
    assert np.all(result.attack_min_rmse[4:] > 0)
    assert result.clean_accuracy == pytest.approx(0.6)
    assert result.robust_accuracy(0.0) == pytest.approx(0.6)
    eps, acc = result.curve()
    assert len(eps) == 1000 and np.all(np.diff(acc) <= 0)


def test_model_whose_class_cannot_change_fails_sanity_check(rng):
    frozen = keras.Sequential(
        [keras.Input((2, 2, 3)), keras.layers.Lambda(
            lambda x: tf.stack([tf.reduce_sum(x, axis=[1, 2, 3]) * 0.0 + 5.0,
                                tf.zeros(tf.shape(x)[:1])], axis=1))]
    )
    images = rng.random((6, 2, 2, 3)).astype("float32")
    with pytest.raises(AttackSanityError, match=r"6 of 6 images.*Increase rho or steps"):
        ara(frozen, images, np.zeros(6, "int32"), steps=20, progress=False)


def test_evaluation_indices_are_a_fixed_permutation_prefix():
    first = evaluation_indices(10000, 1000)
    assert len(set(first)) == 1000 and first.max() < 10000
    np.testing.assert_array_equal(first, evaluation_indices(10000, 1000))
    np.testing.assert_array_equal(evaluation_indices(10000, 10), first[:10])
    with pytest.raises(ValueError, match="Received: n=0"):
        evaluation_indices(100, 0)


def test_model_without_class_logits_is_refused(rng):
    single = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="K >= 2"):
        ara(single, rng.random((2, 2, 2, 3)).astype("float32"), [0, 0], progress=False)
    with pytest.raises(ValueError, match="equal length"):
        ara(single, rng.random((2, 2, 2, 3)).astype("float32"), [0], progress=False)


def test_bad_images_are_refused_before_attacking(rng):
    model = linear_model(rng.normal(size=(12, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="divide integer images by 255"):
        ara(model, np.zeros((2, 2, 2, 3), "uint8"), [0, 1], progress=False)
    nan_images = np.full((2, 2, 2, 3), np.nan, "float32")
    with pytest.raises(ValueError, match="finite"):
        ara(model, nan_images, [0, 1], progress=False)


def test_an_interrupted_ara_resumes_from_its_checkpoint(rng, tmp_path, monkeypatch):
    from keras_robust.method import replicated_attack

    weights = rng.normal(size=(12, 3))
    model = linear_model(weights, np.zeros(3))
    images = rng.random((20, 2, 2, 3)).astype("float32")
    labels = (images.reshape(20, -1) @ weights).argmax(axis=1)
    settings = dict(steps=40, progress=False, batch_size=8)
    whole = ara(model, images, labels, **settings)
    checkpoint = tmp_path / "ara.npz"
    real_attack = replicated_attack.attack_details
    calls, kill_at = [], [3]

    class Killed(Exception):
        pass

    def killed_in_the_second_batch(model, x, *args, **kwargs):
        calls.append(len(x))
        if len(calls) in kill_at:
            raise Killed
        return real_attack(model, x, *args, **kwargs)

    monkeypatch.setattr(replicated_attack, "attack_details", killed_in_the_second_batch)
    with pytest.raises(Killed):
        ara(model, images, labels, checkpoint=checkpoint, **settings)
    assert len(np.load(checkpoint)["l2min"]) == 8  # the first batch, both modes
    calls.clear()
    kill_at.clear()
    resumed = ara(model, images, labels, checkpoint=checkpoint, **settings)
    assert calls == [8, 8, 4, 4]  # only the unfinished batches ran again
    np.testing.assert_allclose(resumed.attack_min_rmse, whole.attack_min_rmse, rtol=1e-6)
    np.testing.assert_allclose(resumed.btr_min_rmse, whole.btr_min_rmse, rtol=1e-6)
    assert resumed.clean_accuracy == whole.clean_accuracy
    with pytest.raises(ValueError, match="written for other images or settings"):
        ara(model, images, labels, checkpoint=checkpoint, steps=41, progress=False, batch_size=8)
    checkpoint.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        ara(model, images, labels, checkpoint=checkpoint, **settings)


def test_ara_refuses_labels_outside_the_classes_before_attacking():
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    images = np.full((4, 2, 2, 1), 0.5, "float32")
    with pytest.raises(ValueError, match=r"\[0, 3\) for this 3-class model. Received: labels entry 7"):
        ara(model, images, [0, 1, 7, 2], steps=3, progress=False)


def images_at_boundary_distances(rng, distances):
    """A two-class linear model and images at the given RMSE distances from its boundary (class 0 side)."""
    direction = rng.normal(size=12)
    direction -= direction.mean()  # the grey image 0.5 lies on the boundary
    direction /= np.linalg.norm(direction)
    model = linear_model(np.stack([direction, -direction], axis=1), np.zeros(2))
    # An L2 step of a along the unit normal is an RMSE of a / sqrt(12).
    images = 0.5 + np.sqrt(12) * np.asarray(distances)[:, None] * direction
    return model, images.reshape(-1, 2, 2, 3).astype("float32"), np.zeros(len(distances), "int32")


def test_late_images_are_counted_without_the_sanity_check_and_refused_with_it(rng, tmp_path):
    # With μ = 0 the attack walks straight along the normal: after k of N steps it has covered
    # ρ (1 − (N − k)(N − k + 1) / (N (N + 1))), 0.744 ρ at k = N/2 = 20 of 40.
    rho, steps = 0.1, 40
    covered_at_half = 1 - (steps - 20) * (steps - 19) / (steps * (steps + 1))
    distances = rho * np.array([0.3, 0.6, 0.85, 0.95])
    model, images, labels = images_at_boundary_distances(rng, distances)
    settings = dict(steps=steps, rho=rho, momentum=0.0, progress=False)
    with pytest.raises(AttackSanityError, match="2 of 4 images did not meet the l2min criterion by step 20"):
        ara(model, images, labels, **settings)
    checkpoint = tmp_path / "ara.npz"
    result = ara(model, images, labels, sanity_check=False, checkpoint=checkpoint, **settings)
    late = int(np.sum(distances > covered_at_half * rho))
    assert late == 2
    assert result.attack_late_images == late and result.btr_late_images == late
    assert result.to_dict()["attack_late_images"] == late
    # Every m_j bounds the true distance from above; the late ones overshoot it by less than one final step.
    np.testing.assert_array_less(distances * (1 - 1e-4), result.attack_min_rmse)
    np.testing.assert_allclose(result.attack_min_rmse, distances, rtol=0.05)
    # A resumed run reads the counts back from the checkpoint without attacking again.
    resumed = ara(model, images, labels, sanity_check=False, checkpoint=checkpoint, **settings)
    assert (resumed.attack_late_images, resumed.btr_late_images) == (late, late)


def test_an_image_never_broken_is_refused_or_counted_with_an_infinite_minimal_perturbation(rng):
    distances = np.array([0.01, 0.02, 0.2])  # the last one lies beyond ρ = 0.1
    model, images, labels = images_at_boundary_distances(rng, distances)
    settings = dict(steps=40, rho=0.1, momentum=0.0, progress=False)
    with pytest.raises(AttackSanityError, match="1 of 3 images did not meet the l2min criterion by step 20"):
        ara(model, images, labels, **settings)
    result = ara(model, images, labels, sanity_check=False, **settings)
    assert np.isinf(result.attack_min_rmse[2]) and np.all(np.isfinite(result.attack_min_rmse[:2]))
    assert (result.attack_unbroken_images, result.btr_unbroken_images) == (1, 1)
    assert result.attack_late_images == 0 and result.to_dict()["attack_unbroken_images"] == 1
    assert result.attack_ara == pytest.approx(accuracy_robustness_area(result.attack_min_rmse, 2))
    assert result.robust_accuracy(1e6) == pytest.approx(1 / 3)
