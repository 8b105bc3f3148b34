import re

import keras
import numpy as np
import pytest

import keras_robust
from keras_robust.explanations.adversarial import AdversarialExplainer
from keras_robust.method import attacks, replicated_attack


@pytest.fixture
def model(rng):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(5),
        ]
    )


def test_explanations_raise_target_probability_and_end_at_budget(model, rng):
    images = rng.random((6, 8, 8, 3)).astype("float32")
    least_likely = np.argmin(model.predict(images, verbose=0), axis=1)
    result = AdversarialExplainer(model).explain(images, least_likely)
    assert result.images.shape == (6, 1, 8, 8, 3)
    assert np.all(result.confidence_after > result.confidence_before)
    rmse = np.sqrt(np.mean(result.delta.reshape(6, -1) ** 2, axis=1))
    np.testing.assert_allclose(rmse, 0.1, rtol=0.05)
    np.testing.assert_allclose(result.images, images[:, None] + result.delta, atol=1e-6)
    probabilities = keras.ops.convert_to_numpy(
        keras.ops.softmax(model(result.images[:, 0]))
    )[np.arange(6), least_likely]
    np.testing.assert_allclose(result.confidence_after[:, 0], probabilities, rtol=1e-4)


def test_standard_targets_are_true_runner_up_and_every_class(model, rng):
    images = rng.random((3, 8, 8, 3)).astype("float32")
    explainer = AdversarialExplainer(model)
    logits = model.predict(images, verbose=0)
    targets = explainer.standard_targets(images, labels=[4, 0, 2])
    assert targets.shape == (3, 7)
    np.testing.assert_array_equal(targets[:, 0], [4, 0, 2])
    for i, label in enumerate([4, 0, 2]):
        others = np.delete(np.arange(5), label)
        assert targets[i, 1] == others[np.argmax(logits[i, others])]
        np.testing.assert_array_equal(targets[i, 2:], np.arange(5))
    predicted = explainer.standard_targets(images)
    np.testing.assert_array_equal(predicted[:, 0], logits.argmax(axis=1))


def test_all_targets_run_as_one_batched_attack_each_pair_once(model, rng, monkeypatch):
    calls = []
    real = replicated_attack.attack_details

    def counting(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(replicated_attack, "attack_details", counting)
    images = rng.random((2, 8, 8, 3)).astype("float32")
    result = AdversarialExplainer(model, class_names=list("abcde")).explain_standard(images)
    # Predicted and runner-up classes are also among "every class": 2 x 5 pairs.
    assert calls == [2 * 5]
    assert result.targets.shape == (2, 7)
    for i in range(2):
        for column in (0, 1):
            again = 2 + result.targets[i, column]
            np.testing.assert_array_equal(result.delta[i, column], result.delta[i, again])
            assert result.confidence_after[i, column] == result.confidence_after[i, again]
    assert result.target_name(0, 2) == "a"


def test_targets_by_name(model, rng):
    images = rng.random((2, 8, 8, 3)).astype("float32")
    explainer = AdversarialExplainer(model, class_names=["cat", "dog", "car", "ship", "frog"], steps=4)
    result = explainer.explain(images, ["ship", "cat"])
    np.testing.assert_array_equal(result.targets[:, 0], [3, 0])
    with pytest.raises(ValueError, match="Unknown class name.*'horse'"):
        explainer.explain(images, ["horse", "cat"])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"rho": 0}, "Received: rho=0"), ({"steps": 1}, "Received: steps=1"),
     ({"overshoot": 0.5}, "Received: overshoot=0.5")],
)
def test_bad_settings(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialExplainer(model, **kwargs)


def test_bad_inputs(model, rng):
    explainer = AdversarialExplainer(model, steps=4)
    images = rng.random((2, 8, 8, 3)).astype("float32")
    with pytest.raises(ValueError, match="target 7"):
        explainer.explain(images, [7, 0])
    with pytest.raises(ValueError, match="class_names"):
        explainer.explain(images, ["cat", "dog"])
    with pytest.raises(ValueError, match="divide integer images"):
        explainer.explain((images * 255).astype("uint8"), [0, 1])
    single = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="K >= 2"):
        AdversarialExplainer(single).explain(images, [0, 0])


def test_budget_check_can_be_turned_off_and_is_reported(model, rng):
    images = rng.random((2, 8, 8, 3)).astype("float32")
    # Overshoot 1: the steps sum to exactly rho, so the budget is met only
    # after the last step, later than docs/method.md §4's step floor(N/2).
    strict = AdversarialExplainer(model, overshoot=1.0, steps=6)
    with pytest.raises(attacks.AttackSanityError, match=r"^2 of 2 images \(2 of 2 explanations, 1 target per image\) "
                                                        r".*2 did not reach the budget rho by step 3 of 6: increase "
                                                        r"rho or steps \(image 0 toward 0, image 1 toward 1\)"):
        strict.explain(images, [0, 1])
    lenient = AdversarialExplainer(model, overshoot=1.0, steps=6, sanity_check=False)
    result = lenient.explain(images, [0, 1])
    assert result.first_met_step.shape == (2, 1)
    assert np.all(result.first_met_step == -1)
    assert result.outcome.tolist() == [["short"], ["short"]]
    passing = AdversarialExplainer(model).explain(images, [0, 1])
    assert np.all((passing.first_met_step >= 0) & (passing.first_met_step <= 17))
    assert np.all(passing.outcome == "reached")


def _dense_classifier(scale, bias):
    """Logits `W·(scale·x) + bias` of 8×8 images: a tiny `scale` kills the input gradient, a huge one saturates."""
    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(scale)(inputs))
    dense = keras.layers.Dense(4, kernel_initializer="glorot_uniform", bias_initializer=keras.initializers.Constant(bias))
    return keras.Model(inputs, dense(flat))


def test_a_vanishing_input_gradient_is_named_not_hidden(rng):
    images = rng.random((2, 8, 8, 3)).astype("float32")
    dead = _dense_classifier(1e-12, [0.0, 9.0, 0.0, 0.0])
    names = ["ant", "bee", "cat", "dog"]
    # Hand-worked: ∇x CE = 1e-12·Wᵀ(p − onehot), RMSE ~1e-13, far below what a step can follow (1e-9).
    with pytest.raises(keras_robust.ExplanationSanityError) as raised:
        AdversarialExplainer(dead, class_names=names).explain(images, [[1, 2]] * 2)
    message = str(raised.value)
    assert message.startswith("2 of 2 images (4 of 4 explanations, 2 targets per image) fell short")
    assert ("2 are toward a class the network already gives at p ≈ 1.000, where its input gradient vanishes: "
            "there is nothing to explain (more steps or a larger rho change nothing) (image 0 toward bee, "
            "image 1 toward bee)") in message
    assert "2 have an input gradient below what the attack can follow" in message
    assert message.endswith("pass sanity_check=False: first_met_step then marks each one that fell short (-1: "
                            "never reached rho).")
    assert raised.value.describe("rerun with --no-sanity-check").endswith(
        "To get them anyway, rerun with --no-sanity-check: first_met_step then marks each one that fell short "
        "(-1: never reached rho).")
    with pytest.warns(UserWarning) as warned:
        result = AdversarialExplainer(dead, sanity_check=False).explain(images, [[1, 2]] * 2)
    assert [str(w.message)[:12] for w in warned] == ["2 of 4 expla", "2 of 4 expla"]
    assert result.outcome.tolist() == [["held", "vanishing"]] * 2
    assert result.first_met_step.tolist() == [[-1, -1]] * 2
    assert result.target_is_top.tolist() == [[True, False]] * 2
    assert np.sqrt(np.mean(result.delta**2, axis=(2, 3, 4))).max() < 1e-3  # δ hardly moved


def test_a_saturated_softmax_holds_its_top_class_but_explains_the_others(rng):
    images = rng.random((2, 8, 8, 3)).astype("float32")
    saturated = _dense_classifier(1.0, [0.0, 200.0, 0.0, 0.0])
    with pytest.warns(UserWarning, match="2 of 4 explanations are toward a class the network already gives"):
        result = AdversarialExplainer(saturated, rho=0.5, sanity_check=False).explain(images, [[1, 2]] * 2)
    # p(bee) rounds to 1 in float32, so p − onehot is exactly 0 for it; toward cat the gradient is W_cat − W_bee.
    assert result.confidence_before[:, 0].tolist() == [1.0, 1.0]
    assert result.outcome[:, 0].tolist() == ["held", "held"]
    assert result.outcome[:, 1].tolist() == ["reached", "reached"]


def test_first_hour_mistakes_get_plain_messages(model, rng):
    explainer = AdversarialExplainer(model, steps=4, class_names=["ant", "bee", "cow", "dog"])
    with pytest.raises(ValueError, match=re.escape("The images are 16×16×3; this model takes 8×8×3")):
        explainer.explain(np.zeros((1, 16, 16, 3), "float32"), [0])
    # A NumPy string (from an array of names) is shown as the string it is.
    with pytest.raises(ValueError, match=re.escape("Received: target 'cat'")):
        explainer.explain(rng.random((1, 8, 8, 3)).astype("float32"), np.array(["cat"]))
    with pytest.raises(ValueError, match=re.escape("`steps` must be an integer in [2, 10000]")):
        AdversarialExplainer(model, steps=100_000_000)


def test_progress_counts_every_step_of_every_chunk(model, rng, monkeypatch):
    from keras_robust.explanations import adversarial

    updates = []
    monkeypatch.setattr(adversarial.tqdm, "tqdm", lambda **kwargs: _Bar(kwargs, updates))
    images = rng.random((3, 8, 8, 3)).astype("float32")
    AdversarialExplainer(model, steps=5, batch_size=2, progress=True, sanity_check=False).explain(images, [0, 1, 2])
    # Two chunks (2 + 1 pairs) of 5 steps each, and the bar's total says so.
    assert updates == [("total", 10)] + [("update", 1)] * 10


class _Bar:
    """A stand-in for tqdm's bar that records its total and updates."""

    def __init__(self, options, updates):
        self.updates = updates
        updates.append(("total", options["total"]))

    def update(self, count):
        self.updates.append(("update", count))

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return False


def test_target_range_is_checked_for_plain_callables(model, rng):
    images = rng.random((2, 8, 8, 3)).astype("float32")
    explainer = AdversarialExplainer(lambda x: model(x), steps=4)
    with pytest.raises(ValueError, match="target 5"):
        explainer.explain(images, [5, 0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rho": float("inf")}, "`rho` must be a finite number > 0.0 and <= 1.0. Received: rho=inf"),
        ({"rho": "0.1"}, "Received: rho='0.1'"),
        ({"rho": 2.0}, "Received: rho=2.0"),
        ({"overshoot": float("nan")}, "Received: overshoot=nan"),
    ],
)
def test_explainer_refuses_budgets_that_overflow(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        AdversarialExplainer(keras_robust.resnet(depth=8), **kwargs)


def test_explainer_refuses_images_in_0_to_255():
    explainer = AdversarialExplainer(keras_robust.resnet(depth=8))
    with pytest.raises(ValueError, match=r"divide 0\.\.255 images by 255 first. Received: images in \[0, 255\]"):
        explainer.explain(np.full((1, 32, 32, 3), 255.0, "float32") * np.eye(32)[None, :, :, None], [0])
