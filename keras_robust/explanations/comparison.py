"""Claim 1 of docs/method.md §1: attacks invalidate attribution maps, not adversarial explanations."""

import dataclasses

import numpy as np

from keras_robust.explanations import attributions
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.attacks import attack_details
from keras_robust.common.defaults import ATTACK_MOMENTUM, SMALLEST_CHANGE_RHO, SMALLEST_CHANGE_STEPS
from keras_robust.method.model_calls import predict_logits
from keras_robust.explanations.adversarial import AdversarialExplainer


@dataclasses.dataclass(frozen=True)
class ExplanationComparison:
    """Attribution maps before and after a small class-changing attack.

    Attributes:
        images: The clean images `(n, H, W, C)`.
        attacked_images: The images moved by the smallest class-changing
            perturbation found, `(n, H, W, C)`.
        attack_rmse: RMSE of each perturbation `(n,)`.
        predicted: Predicted class on the clean images `(n,)`.
        predicted_attacked: Predicted class on the attacked images `(n,)`.
        maps: `{method: (maps_clean, maps_attacked)}`, each `(n, H, W)`; each
            map explains the class the model predicts on that image.
        rank_correlation: `{method: (n,)}` Spearman correlation of the two maps.
        explanation: The adversarial explanations of the clean images toward
            their predicted class and toward the attacked class (an
            `Explanation` with two targets per image).
        explanation_steps: The explainer's N, for the docs/method.md §4 budget check.
    """

    images: np.ndarray
    attacked_images: np.ndarray
    attack_rmse: np.ndarray
    predicted: np.ndarray
    predicted_attacked: np.ndarray
    maps: dict
    rank_correlation: dict
    explanation: object
    explanation_steps: int = 35

    def summary(self):
        """Mean rank correlation per method, and how often the class changed."""
        half = self.explanation_steps // 2
        met = self.explanation.first_met_step
        return {
            "class_changed": float(np.mean(self.predicted != self.predicted_attacked)),
            "explanations_within_budget_check": float(np.mean((met >= 0) & (met <= half))),
            "mean_attack_rmse": float(np.mean(self.attack_rmse)),
            **{f"rank_correlation_{m}": float(np.mean(r)) for m, r in self.rank_correlation.items()},
        }


def spearman(a, b):
    """Spearman rank correlation of two arrays, per leading index."""
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    ranks_a = a.argsort(axis=1).argsort(axis=1).astype("float64")
    ranks_b = b.argsort(axis=1).argsort(axis=1).astype("float64")
    ranks_a -= ranks_a.mean(axis=1, keepdims=True)
    ranks_b -= ranks_b.mean(axis=1, keepdims=True)
    return (ranks_a * ranks_b).sum(axis=1) / np.sqrt(
        (ranks_a**2).sum(axis=1) * (ranks_b**2).sum(axis=1)
    )


def compare_explanations(
    model,
    images,
    labels,
    methods=tuple(attributions.METHODS),
    attack_rho=SMALLEST_CHANGE_RHO,
    attack_steps=SMALLEST_CHANGE_STEPS,
    explainer=None,
    attack_sanity_check=True,
):
    """Attacks each image minimally (L2,min mode) and compares explanations.

    Args:
        model: Maps [0, 1] images to logits.
        images: Float images `(n, H, W, C)`.
        labels: True labels `(n,)`; the attack moves away from them.
        methods: Baseline attribution methods (names in
            `keras_robust.explanations.attributions.METHODS`).
        attack_rho: Budget of the L2,min attack; it only needs to be large
            enough, the smallest successful δ is returned.
        attack_steps: Steps of the L2,min attack (momentum 0.9).
        explainer: An `AdversarialExplainer`; defaults to docs/method.md §5's settings
            with the sanity check off, because this experiment is run on
            non-robust networks too; `summary()` reports how many
            explanations reached the budget in time.
        attack_sanity_check: Raise `AttackSanityError` if some image's class
            has not changed by step ⌊N/2⌋. Off, such an image keeps δ = 0 and
            counts as unchanged in `summary()["class_changed"]`.

    Returns:
        An `ExplanationComparison`.
    """
    unknown = set(methods) - set(attributions.METHODS)
    if unknown:
        raise ValueError(
            f"Unknown attribution methods; known: {', '.join(attributions.METHODS)}. "
            f"Received: methods={sorted(unknown)}"
        )
    images = np.asarray(images, dtype="float32")
    labels = np.asarray(labels).reshape(-1).astype("int32")
    settings = AttackSettings(rho=attack_rho, steps=attack_steps, mode="l2min", momentum=ATTACK_MOMENTUM)
    result = attack_details(model, images, labels, settings, sanity_check=attack_sanity_check)
    attacked_images = result.images.numpy()
    predicted = np.argmax(predict_logits(model, images), axis=1)
    predicted_attacked = np.argmax(predict_logits(model, attacked_images), axis=1)
    maps, correlation = {}, {}
    for name in methods:
        method = attributions.METHODS[name]
        clean = attributions.heatmap(method(model, images, predicted))
        moved = attributions.heatmap(method(model, attacked_images, predicted_attacked))
        maps[name] = (clean, moved)
        correlation[name] = spearman(clean, moved)
    explainer = explainer or AdversarialExplainer(model, sanity_check=False)
    explanation = explainer.explain(images, np.stack([predicted, predicted_attacked], axis=1))
    return ExplanationComparison(
        images=images,
        attacked_images=attacked_images,
        attack_rmse=result.rmse.numpy(),
        predicted=predicted,
        predicted_attacked=predicted_attacked,
        maps=maps,
        rank_correlation=correlation,
        explanation=explanation,
        explanation_steps=explainer.steps,
    )
