"""The Accuracy-Robustness Area and robust accuracy (docs/method.md §6)."""

import dataclasses

import numpy as np
import tensorflow as tf
import tqdm

from keras_robust.common.defaults import ARA_BATCH_SIZE, ARA_STEPS, ATTACK_MOMENTUM, SEED, SMALLEST_CHANGE_RHO
from keras_robust.common import evaluation_checkpoint
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.model_calls import predict_logits
from keras_robust.method.attacks import late_examples
from keras_robust.method.replicated_attack import attack_on_replicas
from keras_robust.common.strategies import agree_on_progress, is_chief
from keras_robust.data.image_files import check_images
from keras_robust.common.validation import check_labels, check_positive_int

ARA_SEED = SEED
HISTOGRAM_BINS = 1000


def accuracy_robustness_area(min_rmse, num_classes, bins=HISTOGRAM_BINS):
    """ARA = ∫ max(0, acc(ε) − 1/K) dε from per-image minimal perturbations (docs/method.md §6).

    Uses the reference's right-endpoint sum over a `bins`-bin histogram on
    [0, max m], which is within `max m / bins` of the exact integral.

    Args:
        min_rmse: Per-image minimal perturbation sizes m_j (RMSE), 0 for
            images that fail from the start, inf for images the attack never
            broke (they count as correct at every ε up to the largest finite m_j).
        num_classes: K, so that a random guesser scores 0.
        bins: Number of histogram bins.

    Returns:
        The area, a float.
    """
    min_rmse = np.asarray(min_rmse, dtype="float64")
    if (min_rmse.ndim != 1 or min_rmse.size == 0 or np.any(np.isnan(min_rmse)) or np.any(min_rmse < 0)
            or np.all(np.isinf(min_rmse))):
        raise ValueError(
            "`min_rmse` must be a non-empty 1-D array of values >= 0 (inf for an image never broken), "
            f"not all inf. Received: min_rmse with shape {min_rmse.shape}"
        )
    top = _largest_finite(min_rmse)
    if top == 0:
        return 0.0
    _, accuracy = accuracy_curve(min_rmse, bins)
    return float(np.sum(np.maximum(0.0, accuracy - 1.0 / num_classes)) * top / bins)


def accuracy_curve(min_rmse, bins=HISTOGRAM_BINS):
    """acc(ε) = fraction of images with m_j > ε at each bin's upper edge (docs/method.md §6)."""
    min_rmse = np.asarray(min_rmse, dtype="float64")
    edges = np.linspace(0.0, _largest_finite(min_rmse), bins + 1)[1:]
    accuracy = 1.0 - np.searchsorted(np.sort(min_rmse), edges, side="right") / min_rmse.size
    return edges, accuracy


def _largest_finite(min_rmse):
    finite = min_rmse[np.isfinite(min_rmse)]
    return finite.max() if finite.size else 0.0


def evaluation_indices(num_examples, n, seed=ARA_SEED):
    """The first `n` indices of a fixed random permutation of the test set (docs/method.md §6)."""
    if not 1 <= n <= num_examples:
        raise ValueError(f"`n` must be in [1, {num_examples}]. Received: n={n}")
    return np.random.RandomState(seed).permutation(num_examples)[:n]


@dataclasses.dataclass(frozen=True)
class AraResult:
    """Minimal perturbations and areas from `ara`.

    Attributes:
        attack_ara: Area under the class-change curve (L2,min mode).
        btr_ara: Area under the better-than-random curve (BTR mode).
        attack_min_rmse: Per-image smallest RMSE that changes the class.
        btr_min_rmse: Per-image smallest RMSE that brings p_y to 1/K.
        num_classes: K.
        clean_accuracy: Accuracy on the unperturbed images.
        attack_late_images: Images whose class first changed after step
            ⌊N/2⌋ (only with `sanity_check=False`): their m_j, and so the
            area, may be loose upper bounds.
        btr_late_images: The same for the BTR criterion.
        attack_unbroken_images, btr_unbroken_images: Images the attack never
            broke within ρ (only with `sanity_check=False`): their m_j is
            inf, and they count as correct up to the largest finite m_j.
    """

    attack_ara: float
    btr_ara: float
    attack_min_rmse: np.ndarray
    btr_min_rmse: np.ndarray
    num_classes: int
    clean_accuracy: float
    attack_late_images: int = 0
    btr_late_images: int = 0

    @property
    def attack_unbroken_images(self):
        return int(np.sum(np.isinf(self.attack_min_rmse)))

    @property
    def btr_unbroken_images(self):
        return int(np.sum(np.isinf(self.btr_min_rmse)))

    def robust_accuracy(self, eps, mode="attack"):
        """Fraction of images still correct under every perturbation of RMSE ≤ eps.

        For an L2 norm ε on images of D values, pass `eps / sqrt(D)`.
        """
        m = self._min_rmse(mode)
        return np.mean(m[None, :] > np.atleast_1d(eps)[:, None], axis=1).reshape(np.shape(eps))

    def curve(self, mode="attack", bins=HISTOGRAM_BINS):
        """`(eps, accuracy)` at the histogram's upper edges (docs/method.md §6)."""
        return accuracy_curve(self._min_rmse(mode), bins)

    def _min_rmse(self, mode):
        if mode not in ("attack", "btr"):
            raise ValueError(f"`mode` must be 'attack' or 'btr'. Received: mode={mode!r}")
        return self.attack_min_rmse if mode == "attack" else self.btr_min_rmse

    def to_dict(self):
        return {
            "attack_ara": self.attack_ara,
            "btr_ara": self.btr_ara,
            "clean_accuracy": self.clean_accuracy,
            "num_images": int(self.attack_min_rmse.size),
            "num_classes": self.num_classes,
            "attack_late_images": self.attack_late_images,
            "btr_late_images": self.btr_late_images,
            "attack_unbroken_images": self.attack_unbroken_images,
            "btr_unbroken_images": self.btr_unbroken_images,
        }


def ara(model, images, labels, *, steps=ARA_STEPS, rho=SMALLEST_CHANGE_RHO, momentum=ATTACK_MOMENTUM,
        batch_size=ARA_BATCH_SIZE, progress=True, checkpoint=None, strategy=None, sanity_check=True):
    """Attack ARA and BTR ARA of `model` on `images` (docs/method.md §6).

    Runs Algorithm 1 (docs/method.md §4) in L2,min and in BTR mode, in inference mode,
    with the reference settings by default. Images misclassified from the
    start score 0 (in BTR mode, every image with p_y <= 1/K at the start).

    Args:
        model: Maps [0, 1] images to logits over K >= 2 classes.
        images: Float images in [0, 1], `(n, H, W, C)`; the reference uses
            1000 test images chosen by `evaluation_indices`.
        labels: Integer labels `(n,)`.
        steps: Attack steps N (450).
        rho: Budget ρ (20); it must be large enough for every image to meet
            the criterion by step ⌊N/2⌋, else `AttackSanityError`.
        momentum: Momentum μ (0.9).
        batch_size: Images attacked at once by each replica.
        progress: Show a progress bar.
        checkpoint: Optional path of an `.npz` file that holds the finished
            batches. It is rewritten atomically after every batch, and a
            rerun with the same images and settings continues after the
            last finished batch, so an interrupted evaluation loses at most
            one batch. Under a multi-worker strategy the chief writes it
            and every worker must be able to read it.
        strategy: A `tf.distribute.Strategy` whose replicas share each batch
            (`keras_robust.method.replicated_attack`); defaults to the active one,
            so `with strategy.scope(): ara(...)` spreads the work. Every
            worker passes the same images and gets the same result.
        sanity_check: Raise `AttackSanityError` when an image's criterion is
            first met after step ⌊N/2⌋, or never (docs/method.md §4). With
            False such images are counted instead: in `attack_late_images`/
            `btr_late_images`, and, never broken, with m_j = inf.

    Returns:
        An `AraResult`.
    """
    settings = {mode: AttackSettings(rho=rho, steps=steps, mode=mode, momentum=momentum) for mode in ("l2min", "btr")}
    check_positive_int("batch_size", batch_size)
    images = check_images(images)
    labels = np.asarray(labels).reshape(-1)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            "`images` and `labels` must be non-empty and of equal length. "
            f"Received: {len(images)} images, {len(labels)} labels"
        )
    num_classes = predict_logits(model, images[:1]).shape[1]
    check_labels(labels, num_classes)
    strategy = strategy or tf.distribute.get_strategy()
    # As floats, so that steps=450 and steps=450.0 continue the same evaluation.
    numbers = [float(value) for value in (steps, rho, momentum, batch_size)]
    fingerprint = evaluation_checkpoint.fingerprint(images, labels, numbers)
    found, correct, late = _read_checkpoint(checkpoint, fingerprint)
    done = agree_on_progress(strategy, len(found["l2min"]), checkpoint)
    if not is_chief(strategy):
        checkpoint = None
    chunk = batch_size * strategy.num_replicas_in_sync
    bar = tqdm.tqdm(total=len(images), initial=done, desc="ARA", unit="image", disable=not progress)
    for start in range(done, len(images), chunk):
        x, y = images[start : start + chunk], labels[start : start + chunk]
        for mode in found:
            result = attack_on_replicas(model, x, y, settings[mode], strategy=strategy, sanity_check=sanity_check)
            min_rmse, late_images = _minimal_perturbations(result, settings[mode])
            late[mode] += late_images
            found[mode] = np.concatenate([found[mode], min_rmse])
            if mode == "l2min":
                correct += int(np.sum(result.first_met_step != 0))
        _write_checkpoint(checkpoint, fingerprint, found, correct, late)
        bar.update(len(x))
    bar.close()
    return AraResult(
        attack_ara=accuracy_robustness_area(found["l2min"], num_classes),
        btr_ara=accuracy_robustness_area(found["btr"], num_classes),
        attack_min_rmse=found["l2min"],
        btr_min_rmse=found["btr"],
        num_classes=num_classes,
        clean_accuracy=correct / len(images),
        attack_late_images=late["l2min"],
        btr_late_images=late["btr"],
    )


def _minimal_perturbations(result, settings):
    """Each image's m_j, inf for one never broken (its δ would be 0), and how many broke after step ⌊N/2⌋."""
    first_met = np.asarray(result.first_met_step)
    min_rmse = np.where(first_met < 0, np.inf, np.asarray(result.rmse, dtype="float64"))
    late = np.asarray(late_examples(first_met, np.asarray(result.attacked), settings.steps)) & (first_met >= 0)
    return min_rmse, int(np.sum(late))


def _read_checkpoint(path, fingerprint):
    """The finished batches' minimal perturbations, correct count and late counts, or none."""
    empty = {"l2min": np.zeros(0), "btr": np.zeros(0)}
    state = evaluation_checkpoint.read_checkpoint(path, fingerprint, "ARA")
    if state is None:
        return empty, 0, {mode: 0 for mode in empty}
    try:
        found = {mode: state[mode] for mode in empty}
        correct = int(state["correct"])
    except KeyError as error:
        raise ValueError(f"The ARA checkpoint {path} cannot be read ({error}); delete it to start over") from None
    # A checkpoint from before late counts held only batches that passed the sanity check.
    late = {mode: int(state.get(f"late_{mode}", 0)) for mode in empty}
    return found, correct, late


def _write_checkpoint(path, fingerprint, found, correct, late):
    evaluation_checkpoint.write_checkpoint(
        path, fingerprint, {"correct": correct, **found, **{f"late_{mode}": count for mode, count in late.items()}})
