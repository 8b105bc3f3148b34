"""Each explanation's outcome, from its first met step and the input gradient at x."""

import numpy as np
import pytest

from keras_robust.common.defaults import RMSE_EPSILON
from keras_robust.explanations import outcome
from tests.helpers import REPO_ROOT


def test_outcomes_follow_the_step_and_the_gradient():
    kinds = outcome.outcomes(first_met_step=np.array([0, 17, 18, -1, -1, -1, -1]), steps=35,
                             gradient_rmse=np.array([0.0, 0.0, 0.0, 5e-10, 5e-10, 2e-9, 5e-10]),
                             probability=np.array([0.1, 0.1, 0.1, 0.9996, 0.9, 0.9999, 0.0]))
    # Reached by ⌊35/2⌋ = 17 whatever the gradient; after it, late; never: by the gradient and p.
    assert kinds.tolist() == ["reached", "reached", "late", "held", "vanishing", "short", "vanishing"]


def test_a_gradient_below_the_threshold_cannot_carry_delta_to_its_budget():
    # Hand-worked from Algorithm 1's normalisation g / (ε + RMSE(g)): N steps of overshoot o sum to
    # ρ·o·RMSE(g)/(ε + RMSE(g)), which at the threshold and o = 10 is under ρ.
    fraction = outcome.VANISHING_GRADIENT_RMSE / (RMSE_EPSILON + outcome.VANISHING_GRADIENT_RMSE)
    assert 10 * fraction < 1


def test_the_docs_state_the_thresholds_the_code_uses():
    text = (REPO_ROOT / "docs" / "explanations.md").read_text(encoding="utf-8")
    assert f"p ≥ {outcome.HELD_PROBABILITY:g}" in text
    assert f"below {outcome.VANISHING_GRADIENT_RMSE:g}" in text and f"ε = {RMSE_EPSILON:g}" in text
    assert [f"`{kind}`" in text for kind in outcome.OUTCOMES] == [True] * len(outcome.OUTCOMES)


def test_the_sanity_error_counts_images_and_explanations_apart():
    kinds = np.array([["reached", "short", "held"], ["reached", "reached", "reached"]])
    targets = np.array([["cat", "dog", "ship"], ["cat", "dog", "ship"]], dtype=object)
    error = outcome.ExplanationSanityError(kinds, targets, steps=10)
    assert str(error).startswith("1 of 2 images (2 of 6 explanations, 3 targets per image) fell short")
    assert "1 did not reach the budget rho by step 5 of 10: increase rho or steps (image 0 toward dog)" in str(error)
    assert "(image 0 toward ship)" in str(error)
    with pytest.raises(ValueError):  # an AttackSanityError, hence a ValueError: the CLI's one-line errors
        raise error
