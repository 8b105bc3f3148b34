"""Adversarial explanations (docs/method.md §5): the targeted attack as the explanation."""

import dataclasses
import warnings

import numpy as np
import tensorflow as tf
import tqdm

from keras_robust.method.model_calls import predict_logits, probability_of
from keras_robust.data.image_files import check_images
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.attacks import step_listener
from keras_robust.method.replicated_attack import attack_on_replicas
from keras_robust.common.defaults import EXPLAIN_OVERSHOOT, EXPLAIN_RHO, EXPLAIN_STEPS
from keras_robust.common.strategies import local_replicas
from keras_robust.common.validation import check_explanation_settings, check_tensorflow_backend
from keras_robust.explanations.outcome import (
    FAILURES,
    VANISHING_GRADIENT_RMSE,
    ExplanationOutcomeWarning,
    ExplanationSanityError,
    gradient_rmse,
    outcomes,
)



# An explanation run this long shows its progress bar (with `progress=True`).
PROGRESS_DELAY_S = 3.0


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Adversarial explanations of a batch of images toward a set of targets.

    Arrays have a leading `(num_images, num_targets)` shape: entry `[i, j]`
    explains image `i` toward class `targets[i, j]`.

    Attributes:
        images: The explanations `x + δ`, shape `(n, t, H, W, C)`.
        delta: The perturbations `δ`, shape `(n, t, H, W, C)`.
        targets: Target classes, shape `(n, t)`.
        confidence_before: Softmax confidence of each target on `x`, `(n, t)`.
        confidence_after: Softmax confidence of each target on `x + δ`, `(n, t)`.
        original: The explained images `x`, shape `(n, H, W, C)`.
        class_names: Names of the classes, if known.
        first_met_step: Step at which each δ first reached RMSE ρ, or -1 if
            it never did, `(n, t)`. docs/method.md §4 requires a step <= ⌊N/2⌋; on
            a non-robust network the direction changes so much from step
            to step that δ can wander without reaching the budget.
        target_is_top: Whether each target is the top class on `x + δ`,
            `(n, t)`: the network now gives the explained answer.
        outcome: What became of each explanation, `(n, t)` strings
            (`keras_robust.explanations.outcome`): `"reached"` (ρ by step
            ⌊N/2⌋), `"late"`, or, when δ never reached ρ, `"held"` (the
            network already gives the target at p ≈ 1: nothing to explain),
            `"vanishing"` (input gradient too small to follow) or `"short"`.
    """

    images: np.ndarray
    delta: np.ndarray
    targets: np.ndarray
    confidence_before: np.ndarray
    confidence_after: np.ndarray
    original: np.ndarray
    class_names: tuple = None
    first_met_step: np.ndarray = None
    target_is_top: np.ndarray = None
    outcome: np.ndarray = None

    def target_name(self, i, j):
        """The name (or index) of target `[i, j]`."""
        target = int(self.targets[i, j])
        return self.class_names[target] if self.class_names else str(target)


class AdversarialExplainer:
    """Explains a classifier's decision with adversarial explanations (docs/method.md §5).

    Explaining image `x` toward class `t` runs the attack of docs/method.md §4 in
    explanation mode (targeted, bounded, inference mode): δ is what the
    network needs to see to call `x` class `t`, and the network really does
    change its answer on `x + δ`, so the explanation is faithful by
    construction. On a very robust network δ is perceptually meaningful.

    Example:

    >>> explainer = AdversarialExplainer(model)
    >>> result = explainer.explain(images, targets=[3, 5])      # one target per image
    >>> result = explainer.explain_standard(images, labels)     # true, runner-up, every class
    >>> result.images.shape                                     # (n, 2 + K, 32, 32, 3)

    Args:
        model: A Keras model (or callable) mapping [0, 1] images to logits
            over K >= 2 classes.
        rho: Budget ρ in (0, 1], an RMSE in pixel units (0.1 for CIFAR-10).
        overshoot: Overshoot o >= 1 (5, the g_explain+ variant).
        steps: Attack steps N >= 2 (35).
        batch_size: Images attacked at once; larger batches are split.
        class_names: Optional class names, for targets given by name and for
            labels in pictures.
        progress: Show a progress bar of the attack's steps on any run that
            lasts longer than `PROGRESS_DELAY_S` seconds.
        sanity_check: Raise `ExplanationSanityError` (an `AttackSanityError`)
            naming which explanations did not reach RMSE ρ by step ⌊N/2⌋
            (docs/method.md §4) and why. Turn off only to look at what a
            non-robust network does; `Explanation.outcome` and
            `first_met_step` then tell which explanations fell short, and a
            warning names those whose input gradient vanishes.
    """

    def __init__(self, model, rho=EXPLAIN_RHO, overshoot=EXPLAIN_OVERSHOOT, steps=EXPLAIN_STEPS, batch_size=256,
                 class_names=None, sanity_check=True, progress=False):
        check_tensorflow_backend("AdversarialExplainer")
        check_explanation_settings(rho, steps, overshoot)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
        self.model = model
        self.rho = float(rho)
        self.overshoot = float(overshoot)
        self.steps = steps
        self.batch_size = batch_size
        self.class_names = tuple(class_names) if class_names is not None else None
        self.sanity_check = bool(sanity_check)
        self.progress = bool(progress)

    def explain(self, images, targets, strategy=None):
        """Explains every image toward its targets in one batched attack.

        Args:
            images: Float images in [0, 1], shape `(n, H, W, C)`.
            targets: Class indices or names: one per image `(n,)`, or several
                per image `(n, t)`.
            strategy: A `tf.distribute.Strategy` whose replicas share the
                attacks (`keras_robust.method.replicated_attack`); defaults to the
                active one. Every worker passes the same images.

        Returns:
            An `Explanation`.
        """
        images = check_images(images)
        logits_before = self._logits(images)
        targets = self._target_indices(targets, len(images), logits_before.shape[1])
        num_targets = targets.shape[1]
        flat_targets = targets.reshape(-1)
        # An (image, target) pair asked for twice (the standard targets name
        # the predicted and runner-up classes twice) is attacked once.
        pairs = np.stack([np.repeat(np.arange(len(images)), num_targets), flat_targets], axis=1)
        unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        strategy = strategy or tf.distribute.get_strategy()
        unique_delta, unique_first_met = self._attack(images, unique, strategy)
        unique_delta = unique_delta.astype(images.dtype)
        logits_after = self._logits(images[unique[:, 0]] + unique_delta)[inverse]
        delta = unique_delta[inverse]
        repeated = np.repeat(images, num_targets, axis=0)
        shape = (len(images), num_targets)
        confidence_before = probability_of(np.repeat(logits_before, num_targets, axis=0), flat_targets)
        first_met_step = unique_first_met[inverse]
        explanation = Explanation(
            images=(repeated + delta).reshape(shape + images.shape[1:]),
            delta=delta.reshape(shape + images.shape[1:]),
            targets=targets,
            confidence_before=confidence_before.reshape(shape),
            confidence_after=probability_of(logits_after, flat_targets).reshape(shape),
            original=images,
            class_names=self.class_names,
            first_met_step=first_met_step.reshape(shape),
            target_is_top=(np.argmax(logits_after, axis=1) == flat_targets).reshape(shape),
            outcome=self._outcomes(repeated, flat_targets, first_met_step, confidence_before).reshape(shape),
        )
        self._check(explanation)
        return explanation

    def _attack(self, images, pairs, strategy):
        """`(δ, first met step)` of each `(image, target)` pair, in chunks of `batch_size` per replica."""
        settings = AttackSettings(rho=self.rho, steps=self.steps, overshoot=self.overshoot, targeted=True)
        chunk_size = self.batch_size * strategy.num_replicas_in_sync
        chunks = [pairs[start : start + chunk_size] for start in range(0, len(pairs), chunk_size)]
        bar = tqdm.tqdm(total=len(chunks) * self.steps * local_replicas(strategy), desc="explaining", unit="step",
                        disable=not self.progress, delay=PROGRESS_DELAY_S)
        deltas, first_met = [], []
        with bar, step_listener(lambda: bar.update(1)):
            for chunk in chunks:
                result = attack_on_replicas(self.model, images[chunk[:, 0]], chunk[:, 1], settings, strategy=strategy,
                                            sanity_check=False, report_steps=self.progress)
                deltas.append(result.delta)
                first_met.append(result.first_met_step)
        return np.concatenate(deltas), np.concatenate(first_met)

    def _outcomes(self, images, targets, first_met_step, confidence_before):
        """`outcome.outcomes` of each explanation; the input gradient is computed only where δ never met ρ."""
        rmse = np.full(len(targets), np.inf)
        never = np.flatnonzero(first_met_step < 0)
        for start in range(0, len(never), self.batch_size):
            chosen = never[start : start + self.batch_size]
            rmse[chosen] = gradient_rmse(self.model, images[chosen], targets[chosen])
        return outcomes(first_met_step, self.steps, rmse, confidence_before)

    def _check(self, explanation):
        """Raises on any explanation that fell short with the sanity check on; warns of vanishing gradients."""
        if self.sanity_check and np.any(explanation.outcome != "reached"):
            names = np.array([[explanation.target_name(i, j) for j in range(explanation.targets.shape[1])]
                              for i in range(len(explanation.targets))], dtype=object)
            raise ExplanationSanityError(explanation.outcome, names, self.steps)
        for kind in ("held", "vanishing"):
            count = int(np.sum(explanation.outcome == kind))
            if count:
                what = FAILURES[kind].format(vanishing=VANISHING_GRADIENT_RMSE)
                warnings.warn(f"{count} of {explanation.outcome.size} explanations {what}; Explanation.outcome "
                              f"marks them '{kind}'.", ExplanationOutcomeWarning, stacklevel=3)

    def standard_targets(self, images, labels=None):
        """docs/method.md §5's targets per image: the true (or predicted) class, the
        highest-logit other class, then every class. Shape `(n, 2 + K)`."""
        images = check_images(images)
        logits = self._logits(images)
        if labels is None:
            first = np.argmax(logits, axis=1)
        else:
            first = self._target_indices(labels, len(images), logits.shape[1])[:, 0]
        others = logits.copy()
        others[np.arange(len(first)), first] = -np.inf
        runner_up = np.argmax(others, axis=1)
        every = np.tile(np.arange(logits.shape[1]), (len(images), 1))
        return np.concatenate([first[:, None], runner_up[:, None], every], axis=1)

    def explain_standard(self, images, labels=None, strategy=None):
        """Explains toward `standard_targets` in one batched attack."""
        return self.explain(images, self.standard_targets(images, labels), strategy=strategy)

    def _logits(self, images):
        return predict_logits(self.model, images, self.batch_size)

    def _target_indices(self, targets, num_images, num_classes):
        targets = np.asarray(targets)
        if targets.dtype.kind in "US":
            targets = np.vectorize(self._class_index)(targets)
        if targets.dtype.kind not in "iu":
            raise ValueError(
                f"Targets must be class indices or names. Received: targets.dtype={targets.dtype}"
            )
        if targets.ndim == 1:
            targets = targets[:, None]
        if targets.ndim != 2 or targets.shape[0] != num_images:
            raise ValueError(
                f"Targets must have shape ({num_images},) or ({num_images}, t). "
                f"Received: targets.shape={targets.shape}"
            )
        bad = targets[(targets < 0) | (targets >= num_classes)]
        if bad.size:
            raise ValueError(
                f"Targets must be class indices in [0, {num_classes}). Received: target {int(bad[0])}"
            )
        return targets.astype("int32")

    def _class_index(self, name):
        if self.class_names is None:
            raise ValueError(
                f"Targets given by name need `class_names`. Received: target {str(name)!r}"
            )
        if name not in self.class_names:
            raise ValueError(
                f"Unknown class name; known: {', '.join(self.class_names)}. Received: target {str(name)!r}"
            )
        return self.class_names.index(name)
