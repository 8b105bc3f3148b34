"""AutoAttack's standard version (Croce & Hein, ICML 2020): four attacks, each on the images the
previous ones left robust.

1. APGD-CE: Auto-PGD on the cross-entropy (`apgd`).
2. APGD-T: Auto-PGD on the targeted DLR loss, toward each of the 9 classes
   the model ranks highest after the label on the clean image, in turn.
3. FAB-T: targeted FAB toward the same classes (`fab`).
4. Square: 5,000 queries of random search, no gradient (`square`).

An image is robust if the model classifies it correctly and none of the four
finds a misclassified point within ε of it; a network that hides its
gradients from one attack rarely hides them from the others.
"""

import dataclasses

import numpy as np
import tensorflow as tf
import tqdm

from keras_robust.common import evaluation_checkpoint
from keras_robust.common.strategies import agree_on_progress, is_chief
from keras_robust.common.validation import check_labels, check_positive_int
from keras_robust.data.image_files import check_images
from keras_robust.evaluation.autoattack.apgd import apgd
from keras_robust.evaluation.autoattack.fab import fab_targeted
from keras_robust.evaluation.autoattack.norms import NORMS, norm_of
from keras_robust.evaluation.autoattack.oracle import Oracle
from keras_robust.evaluation.autoattack.square import TILES, square
from keras_robust.method.model_calls import check_image_shape, check_logits

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
VERSIONS = ("standard",)
TARGET_CLASSES = 9
# The targeted DLR loss divides by z_π1 − (z_π3 + z_π4) / 2: four classes at least.
FEWEST_CLASSES = 4
BATCH_SIZE = 250
# How far past ε a returned point may lie from float32 rounding before it counts as a bug.
NORM_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
    """What `autoattack` found, per image and overall.

    Attributes:
        robust: Bool per image: classified correctly, and no attack found a
            misclassified point within ε (False where the clean image is
            already misclassified).
        adversarial_images: The misclassified point found, within ε of the
            image; the image itself where none was (robust or misclassified
            from the start).
        broken_by: The name of the attack that broke each image (one of
            `ATTACKS`), "" where none did.
        clean_accuracy: Fraction of images classified correctly.
        robust_accuracy: The mean of `robust`.
        norm: `"Linf"` or `"L2"`.
        eps: The radius ε.
    """

    robust: np.ndarray
    adversarial_images: np.ndarray
    broken_by: np.ndarray
    clean_accuracy: float
    robust_accuracy: float
    norm: str
    eps: float

    def to_dict(self):
        return {
            "norm": self.norm, "eps": self.eps, "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy, "num_images": int(self.robust.size),
            **{f"broken_by_{name}": int(np.sum(self.broken_by == name)) for name in ATTACKS},
        }


def autoattack(model, images, labels, norm="L2", eps=0.5, version="standard", seed=0,
               batch_size=BATCH_SIZE, *, strategy=None, progress=True, checkpoint=None):
    """AutoAttack's robust accuracy of `model` on `images` (standard version, as RobustBench runs it).

    Example:

    >>> result = keras_robust.autoattack(model, images, labels, norm="L2", eps=0.5)
    >>> result.robust_accuracy == result.robust.mean()
    True
    >>> set(result.broken_by) <= {"", "apgd-ce", "apgd-t", "fab-t", "square"}
    True

    Args:
        model: Maps [0, 1] images to logits over K >= 4 classes; called in
            inference mode.
        images: Float images in [0, 1], `(n, H, W, C)`.
        labels: Integer labels `(n,)`.
        norm: `"L2"` or `"Linf"`.
        eps: The radius ε > 0 (RobustBench's CIFAR-10: L2 0.5, L∞ 8/255).
        version: `"standard"`: APGD-CE, APGD-T, FAB-T and Square with the
            original's settings.
        seed: Seed of the random starts and of Square's search.
        batch_size: Images attacked at once.
        strategy: A `tf.distribute.Strategy` whose replicas share each model
            evaluation; defaults to the active one. Every worker passes the
            same images and gets the same result.
        progress: Show a progress bar over attacks and batches.
        checkpoint: Optional path of an `.npz` file rewritten atomically after
            every batch; a rerun with the same inputs and settings continues
            after the last finished batch.

    Returns:
        An `AutoAttackResult`.
    """
    images, labels = _checked(model, images, labels, norm, eps, version, batch_size)
    strategy = strategy or tf.distribute.get_strategy()
    oracle = Oracle(model, strategy)
    num_classes = check_logits(oracle.logits(images[:1])).shape[1]
    if num_classes < FEWEST_CLASSES:
        raise ValueError(f"AutoAttack's targeted DLR loss needs at least {FEWEST_CLASSES} classes. "
                         f"Received: a model with {num_classes} classes")
    check_labels(labels, num_classes)
    fingerprint = evaluation_checkpoint.fingerprint(images, labels, (norm, eps, version, seed, batch_size))
    state = _read_checkpoint(checkpoint, fingerprint) or _fresh_state(oracle, images, labels, batch_size)
    agree_on_progress(strategy, state["attack"] * (len(images) + 1) + state["batch"], checkpoint)
    if not is_chief(strategy):
        checkpoint = None  # every worker reads what the chief writes
    targets = min(TARGET_CLASSES, num_classes - 1)
    bar = tqdm.tqdm(total=len(ATTACKS), desc="AutoAttack", unit="attack", disable=not progress)
    bar.update(state["attack"])
    while state["attack"] < len(ATTACKS):
        name = ATTACKS[state["attack"]]
        chosen = state["pending"][state["batch"] * batch_size:][:batch_size]
        if chosen.size:
            rng = np.random.default_rng([seed, state["attack"], state["batch"]])
            found = _run(name, oracle, images[chosen], labels[chosen], eps, norm, targets, rng)
            _record(state, name, chosen, found, oracle, images, labels, eps, norm)
            state["batch"] += 1
        if chosen.size < batch_size or state["batch"] * batch_size >= len(state["pending"]):
            state["attack"], state["batch"] = state["attack"] + 1, 0
            state["pending"] = np.flatnonzero(state["robust"])
            bar.update(1)
        evaluation_checkpoint.write_checkpoint(checkpoint, fingerprint, state)
    bar.close()
    return AutoAttackResult(
        robust=state["robust"], adversarial_images=state["adversarial"], broken_by=state["broken_by"],
        clean_accuracy=float(state["clean_accuracy"]), robust_accuracy=float(np.mean(state["robust"])),
        norm=norm, eps=float(eps),
    )


def _checked(model, images, labels, norm, eps, version, batch_size):
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {NORMS}. Received: norm={norm!r}")
    if not isinstance(eps, (int, float, np.number)) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"`eps` must be a finite number > 0. Received: eps={eps!r}")
    if version not in VERSIONS:
        raise ValueError(f"`version` must be one of {VERSIONS} (AutoAttack's standard ensemble). "
                         f"Received: version={version!r}")
    check_positive_int("batch_size", batch_size)
    images = check_images(images)
    labels = np.asarray(labels).reshape(-1)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError("`images` and `labels` must be non-empty and of equal length. "
                         f"Received: {len(images)} images, {len(labels)} labels")
    check_image_shape(model, images)
    if norm == "L2" and min(images.shape[1:3]) < TILES:
        raise ValueError(f"Square's L2 attack tiles the image with squares of a fifth of its side, so images "
                         f"need at least {TILES}×{TILES} pixels. Received: images.shape={images.shape}")
    return images, labels.astype("int64")


def _fresh_state(oracle, images, labels, batch_size):
    predicted = np.concatenate([oracle.logits(images[start:start + batch_size]).argmax(axis=1)
                                for start in range(0, len(images), batch_size)])
    robust = predicted == labels
    return {"robust": robust, "adversarial": images.copy(), "broken_by": np.full(len(images), "", "<U7"),
            "clean_accuracy": float(np.mean(robust)), "attack": 0, "batch": 0, "pending": np.flatnonzero(robust)}


def _run(name, oracle, images, labels, eps, norm, targets, rng):
    """The adversarial images `name` finds for one batch (the image itself where none)."""
    if name == "apgd-ce":
        return apgd(oracle, images, labels, eps=eps, norm=norm, loss="ce", rng=rng)[0]
    if name == "square":
        return square(oracle, images, labels, eps=eps, norm=norm, rng=rng)[0]
    adversarial, robust = images.copy(), np.ones(len(images), bool)
    # Toward the class ranked second on the clean image first, then third, and so on.
    ranked = np.argsort(-oracle.logits(images), axis=1, kind="stable")
    for rank in range(1, targets + 1):
        left = np.flatnonzero(robust)
        if left.size == 0:
            break
        chosen_targets = ranked[left, rank]
        if name == "apgd-t":
            found, broken = apgd(oracle, images[left], labels[left], eps=eps, norm=norm, loss="dlr-targeted",
                                 targets=chosen_targets, rng=rng)
        else:
            found, broken = fab_targeted(oracle, images[left], labels[left], chosen_targets, eps=eps, norm=norm)
        adversarial[left[broken]] = found[broken]
        robust[left[broken]] = False
    return adversarial


def _record(state, name, chosen, found, oracle, images, labels, eps, norm):
    """Marks the images of `chosen` that the model misclassifies at `found` as broken by `name`."""
    broken = oracle.logits(found).argmax(axis=1) != labels[chosen]
    distance = norm_of(found[broken] - images[chosen][broken], norm)
    if np.any(distance > eps + NORM_TOLERANCE):
        raise RuntimeError(f"{name} returned a point {distance.max():.6g} from its image, beyond "
                           f"eps={eps:g} ({norm}); this is a bug in keras_robust's AutoAttack")
    hit = chosen[broken]
    state["robust"][hit] = False
    state["adversarial"][hit] = found[broken]
    state["broken_by"][hit] = name


def _read_checkpoint(path, fingerprint):
    state = evaluation_checkpoint.read_checkpoint(path, fingerprint, "AutoAttack")
    if state is None:
        return None
    for key in ("attack", "batch"):
        state[key] = int(state[key])
    state["clean_accuracy"] = float(state["clean_accuracy"])
    return state
