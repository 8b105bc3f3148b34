"""What became of each adversarial explanation, and why one fell short (docs/explanations.md, "Outcomes").

An explanation is evidence only when the attack did what it claims: δ
reached its budget ρ by step ⌊N/2⌋ (docs/method.md §4's sanity check) and
the network now gives the target. When δ did not reach ρ, the input
gradient at `x` tells why:

- `"held"`: the network already gives the target at p ≈ 1, so the softmax's
  gradient, and the input gradient with it, is below what the attack can
  follow: there is nothing to explain, and more steps or a larger ρ change
  nothing;
- `"vanishing"`: the input gradient vanishes for another reason (a dead or
  saturated network, e.g. an untrained deep network);
- `"short"`: the gradient is there but δ wandered, as on non-robust
  networks: more steps or a larger ρ may reach it.

Each step moves δ along `g / (ε + RMSE(g))` (ε = `RMSE_EPSILON`): a gradient
of RMSE below ε/10 moves δ by under a tenth of the step, so with the
explanation's overshoot (at most 10 in practice) δ cannot reach ρ.

Example:

>>> kinds = outcomes(first_met_step=np.array([3, -1, 30]), steps=35,
...                  gradient_rmse=np.array([0.1, 0.0, 0.1]), probability=np.array([0.2, 1.0, 0.3]))
>>> kinds.tolist()
['reached', 'held', 'late']
"""

import numpy as np
import tensorflow as tf

from keras_robust.common.defaults import RMSE_EPSILON
from keras_robust.method.attacks import AttackSanityError, per_example_rmse
from keras_robust.method.model_calls import call_model

# Below this input-gradient RMSE an explanation cannot move (see above).
VANISHING_GRADIENT_RMSE = RMSE_EPSILON / 10
# A target the network gives with at least this probability (1.000 to three decimals) is "held": a softmax
# that saturated, rather than a dead network, is then why the gradient vanishes.
HELD_PROBABILITY = 0.9995
OUTCOMES = ("reached", "late", "held", "vanishing", "short")
# What each outcome that fails the sanity check means, and what to do about it.
FAILURES = {
    "late": "reached the budget rho only after step {half} of {steps}: increase steps or rho",
    "held": "are toward a class the network already gives at p ≈ 1.000, where its input gradient vanishes: there is "
            "nothing to explain (more steps or a larger rho change nothing)",
    "vanishing": "have an input gradient below what the attack can follow (RMSE < {vanishing:g}: a dead or "
                 "saturated network, e.g. an untrained one), so delta hardly moves",
    "short": "did not reach the budget rho by step {half} of {steps}: increase rho or steps",
}


class ExplanationOutcomeWarning(UserWarning):
    """Some explanations could not move: their input gradient vanishes (`"held"` or `"vanishing"`)."""


class ExplanationSanityError(AttackSanityError):
    """Some explanations fell short of docs/method.md §4's sanity check; `describe` says which and why.

    Attributes:
        outcomes: Each explanation's outcome (`OUTCOMES`), shape `(n, t)`.
        targets: The target names (or indices) of the explanations, `(n, t)`.
        steps: The attack's steps N.
    """

    def __init__(self, outcomes, targets, steps):
        self.outcomes, self.targets, self.steps = outcomes, targets, steps
        super().__init__(self.describe("pass sanity_check=False"))

    def describe(self, switch):
        """The message, ending with `switch`, the way to get the explanations anyway."""
        failed = ~np.isin(self.outcomes, ("reached",))
        num_images, per_image = self.outcomes.shape
        parts = []
        for kind, text in FAILURES.items():
            where = np.argwhere(self.outcomes == kind)
            if len(where):
                shown = ", ".join(f"image {i} toward {self.targets[i, j]}" for i, j in where[:3])
                more = f" and {len(where) - 3} more" if len(where) > 3 else ""
                text = text.format(half=self.steps // 2, steps=self.steps, vanishing=VANISHING_GRADIENT_RMSE)
                parts.append(f"{len(where)} {text} ({shown}{more})")
        return (f"{int(failed.any(axis=1).sum())} of {num_images} images ({int(failed.sum())} of {failed.size} "
                f"explanations, {per_image} target{'s' * (per_image > 1)} per image) fell short of the sanity check "
                f"of docs/method.md §4: " + "; ".join(parts) + f". To get them anyway, {switch}: first_met_step "
                "then marks each one that fell short (-1: never reached rho).")


def outcomes(first_met_step, steps, gradient_rmse, probability):
    """Each explanation's outcome (`OUTCOMES`), from its first met step and, for those that never met it,
    the RMSE of the input gradient and the target's probability at `x`.

    Args:
        first_met_step: `AttackResult.first_met_step` of each explanation.
        steps: The attack's steps N.
        gradient_rmse: RMSE of ∇x CE(target) at `x` per explanation (read only where `first_met_step` < 0).
        probability: The target's softmax probability at `x` per explanation (likewise).
    """
    first_met_step = np.asarray(first_met_step)
    vanishing = np.asarray(gradient_rmse) < VANISHING_GRADIENT_RMSE
    held = vanishing & (np.asarray(probability) >= HELD_PROBABILITY)
    never = np.where(held, "held", np.where(vanishing, "vanishing", "short"))
    return np.where(first_met_step < 0, never, np.where(first_met_step > steps // 2, "late", "reached"))


def gradient_rmse(model, images, targets):
    """RMSE of the input gradient of the targets' cross-entropy at `images`, per image (float64 NumPy)."""
    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = tf.cast(call_model(model, images, False), tf.float32)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(targets, tf.int32), logits))
    return per_example_rmse(tape.gradient(loss, images)).numpy().astype("float64")
