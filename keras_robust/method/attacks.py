"""The one attack routine (docs/method.md §4, Algorithm 1) used by training, explanation and ARA.

Modes differ only in the per-example `keep` mask, which is "the stopping
criterion is not met yet":

- `"bounded"`: keep while RMSE(δ) < ρ (adversarial training, explanations);
- `"l2min"`: keep while the model still predicts the label (attack ARA);
- `"btr"`: keep while softmax(logits)[label] > 1/K (BTR ARA).

Outside the mask the step walks δ back toward 0. `l2min` and `btr` return the
smallest-RMSE δ seen at a step where the criterion was met.
"""

import collections
import contextlib

import keras
import numpy as np
import tensorflow as tf

from keras_robust.common.defaults import RMSE_EPSILON
from keras_robust.common.validation import check_labels, check_tensorflow_backend
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.model_calls import call_model, check_image_shape, num_classes_of

MAX_UNROLLED_STEPS = 16
# Called after each step of a loop traced with `report_steps=True` (`step_listener`).
_STEP_LISTENERS = []

AttackResult = collections.namedtuple(
    "AttackResult", ["images", "delta", "rmse", "first_met_step", "attacked"]
)
AttackResult.__doc__ = """What one run of the attack found, per example.

Fields:
    images: The attacked images `x + δ`.
    delta: The returned perturbation `δ` (the best one in `l2min`/`btr`).
    rmse: RMSE of `delta` per example (docs/method.md §4).
    first_met_step: 0-based step at which the criterion was first met
        (`steps` for the extra evaluation after the last step), or -1 if
        never met.
    attacked: 1.0 for examples the attack perturbed, 0.0 for those the
        half-and-half mask left clean.
"""


class AttackSanityError(ValueError):
    """The criterion was not met by step ⌊N/2⌋ for some examples (docs/method.md §4)."""


def attack(model, images, labels, settings=None, *, sanity_check=None, seed=None, **options):
    """Attacks `images` with Algorithm 1 (docs/method.md §4) and returns `x + δ`.

    Each step moves δ along the RMSE-normalised gradient of the
    cross-entropy; step `i` of `N` has size `ρ·o·(N − i) / (N(N + 1)/2)`, so
    the steps sum to `ρ·o`.

    Example:

    >>> model = keras_robust.resnet(depth=20)
    >>> x = keras.random.uniform((4, 32, 32, 3))
    >>> x_adv = attack(model, x, [0, 1, 2, 3], rho=0.01, steps=7)
    >>> x_adv.shape
    TensorShape([4, 32, 32, 3])

    Args:
        model: A callable (usually a `keras.Model`) mapping images in [0, 1]
            to logits.
        images: Float images, shape `(batch, ...)`.
        labels: Integer labels, shape `(batch,)`; with `targeted=True`, the
            classes to move toward (the explanation targets).
        settings: An `AttackSettings`; or give its fields as keywords: `rho`,
            `steps`, `overshoot`, `mode`, `targeted`, `momentum`,
            `half_and_half`, `training`, `clip_range` (see `AttackSettings`).
        sanity_check: Raise `AttackSanityError` unless every example meets
            the criterion by step ⌊N/2⌋ (docs/method.md §4). Defaults to on for
            targeted attacks and for the `l2min`/`btr` modes outside training.
        seed: Optional int or `keras.random.SeedGenerator` for the
            half-and-half mask.
        **options: The fields of `AttackSettings`, when `settings` is not given.

    Returns:
        The attacked images, a tensor of the input's shape.
    """
    return attack_details(model, images, labels, settings, sanity_check=sanity_check, seed=seed, **options).images


def attack_details(model, images, labels, settings=None, *, sanity_check=None, seed=None, report_steps=False,
                   **options):
    """Like `attack`, but returns the full `AttackResult`; with `report_steps`, each step calls the
    callbacks of the active `step_listener` blocks (progress bars)."""
    settings = AttackSettings.resolve(settings, **options)
    check_tensorflow_backend("The attack (keras_robust.method.attacks)")
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(
            "`images` must be floating point in [0, 1] pixel units. "
            f"Received: images.dtype={images.dtype.name}"
        )
    labels = _as_labels(labels, images)
    if tf.executing_eagerly():
        check_image_shape(model, images)
    num_classes = num_classes_of(model)
    if tf.executing_eagerly() and num_classes is not None:
        check_labels(labels.numpy(), num_classes, "targets" if settings.targeted else "labels")
    if sanity_check is None:
        sanity_check = settings.sanity_check_by_default
    mask = half_and_half_mask(images, settings.half_and_half, seed)
    rho = tf.cast(settings.rho, images.dtype)
    overshoot = tf.cast(settings.overshoot, images.dtype)
    if tf.executing_eagerly():
        result = _compiled(model, settings, report_steps)(images, labels, rho, overshoot, mask)
    else:
        result = attack_loop(model, images, labels, settings.with_budget(rho, overshoot), half_and_half_mask=mask,
                             report_steps=report_steps)
    if sanity_check:
        check_sanity(result.first_met_step, result.attacked, settings.steps, settings.mode)
    return result


def attack_loop(model, x, y, settings, half_and_half_mask=None, report_steps=False):
    """The loop of Algorithm 1 (docs/method.md §4) as graph-friendly TensorFlow code.

    `settings.steps` is a Python int (short loops are unrolled) or an integer
    tensor, scalar or one N per example: a while loop then runs to the largest
    N and example `b` stops moving after its own N_b steps, each with the
    schedule of docs/method.md §4 for N_b. `settings.rho` may likewise be a
    scalar or one per example. `half_and_half_mask` holds 1 for each example
    to attack and 0 for each to leave clean (default: attack all).
    `report_steps` calls the active `step_listener` callbacks after each step.
    The ONNX explain graph (`keras_robust.export.onnx_endpoints`) is this
    loop's targeted bounded mode in ONNX operators, held equal to it by the tests.
    """
    steps, mode, momentum, clip_range = settings.steps, settings.mode, settings.momentum, settings.clip_range
    rho = tf.cast(settings.rho, x.dtype)
    overshoot = tf.cast(settings.overshoot, x.dtype)
    attacked = tf.ones([tf.shape(x)[0]], x.dtype) if half_and_half_mask is None else half_and_half_mask
    steps_float = tf.cast(steps, x.dtype)
    total = steps_float * (steps_float + 1.0) / 2.0
    rank = len(x.shape)
    best_tracking = mode != "bounded"

    def met_and_grad(delta, with_grad=True):
        with tf.GradientTape() as tape:
            tape.watch(delta)
            logits = tf.cast(call_model(model, x + delta, settings.training), x.dtype)
            loss = tf.reduce_sum(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        grad = tape.gradient(loss, delta) if with_grad else None
        if with_grad and grad is None:
            raise ValueError(
                "The model's logits do not depend on its input, so there is no "
                f"gradient to attack along. Received: model={model!r}"
            )
        return _criterion_met(mode, logits, y, delta, rho), grad

    def record(i, met, delta, best_delta, best_rmse, first_met):
        first_met = tf.where((first_met < 0) & met, i, first_met)
        if best_tracking:
            rmse = per_example_rmse(delta)
            better = met & (rmse < best_rmse)
            best_delta = tf.where(_expand(better, rank), delta, best_delta)
            best_rmse = tf.where(better, rmse, best_rmse)
        return best_delta, best_rmse, first_met

    def body(i, delta, velocity, best_delta, best_rmse, first_met):
        met, grad = met_and_grad(delta)
        best_delta, best_rmse, first_met = record(
            i, met, delta, best_delta, best_rmse, first_met
        )
        if settings.targeted:
            grad = -grad
        direction = tf.where(_expand(met, rank), -delta, grad)
        direction /= _expand(RMSE_EPSILON + per_example_rmse(direction), rank)
        if momentum > 0:
            velocity = momentum * velocity + (1.0 - momentum) * direction
            direction = velocity
        remaining = tf.maximum(steps_float - tf.cast(i, x.dtype), 0.0)
        step_size = rho * overshoot * remaining / total * attacked
        delta = delta + _expand(step_size, rank) * direction
        if clip_range is not None:
            delta = tf.clip_by_value(x + delta, *clip_range) - x
        if report_steps:
            with tf.control_dependencies([delta]):
                tf.py_function(_tick, [], [])
        return i + 1, delta, velocity, best_delta, best_rmse, first_met

    state = _run_steps(body, _initial_state(x), steps)
    end, delta, _, best_delta, best_rmse, first_met = state
    if best_tracking:
        # One more evaluation after the last step, so its δ can be the best.
        met, _ = met_and_grad(delta, with_grad=False)
        best_delta, _, first_met = record(end, met, delta, best_delta, best_rmse, first_met)
        delta = best_delta
    return AttackResult(x + delta, delta, per_example_rmse(delta), first_met, attacked)


def _initial_state(x):
    """`(step, δ, velocity, best δ, best RMSE, first met step)` before the first step."""
    batch = tf.shape(x)[0]
    zeros = tf.zeros_like(x)
    return (tf.constant(0), zeros, zeros, zeros, tf.fill([batch], tf.constant(np.inf, x.dtype)),
            tf.fill([batch], tf.constant(-1)))


def _run_steps(body, state, steps):
    """`body` applied `steps` times: unrolled for a short static N, else a while loop to the largest N."""
    if isinstance(steps, (int, np.integer)) and steps <= MAX_UNROLLED_STEPS:
        # XLA compiles a short unrolled loop far better than a while loop that
        # holds a tape and batch-norm updates (3.5x faster adversarial training).
        for _ in range(steps):
            state = body(*state)
        return state
    last = steps if isinstance(steps, (int, np.integer)) else tf.cast(tf.reduce_max(steps), tf.int32)
    return tf.while_loop(lambda i, *_: i < last, body, state)


@contextlib.contextmanager
def step_listener(callback):
    """Within the block, `callback()` runs after each step of every attack run with `report_steps=True`."""
    _STEP_LISTENERS.append(callback)
    try:
        yield
    finally:
        _STEP_LISTENERS.remove(callback)


def _tick():
    for callback in list(_STEP_LISTENERS):
        callback()


def per_example_rmse(values):
    """RMSE over every axis but the first (docs/method.md §4)."""
    flat = tf.reshape(values, [tf.shape(values)[0], -1])
    return tf.sqrt(tf.reduce_mean(tf.square(flat), axis=1))


def _criterion_met(mode, logits, labels, delta, rho):
    """Per-example stopping criterion; the keep mask is its negation."""
    if mode == "bounded":
        return per_example_rmse(delta) >= rho
    if mode == "l2min":
        return tf.argmax(logits, axis=-1, output_type=labels.dtype) != labels
    num_classes = tf.cast(tf.shape(logits)[-1], logits.dtype)
    true_prob = tf.gather(tf.nn.softmax(logits), labels, batch_dims=1)
    return true_prob <= 1.0 / num_classes


def _expand(per_example, rank):
    """Reshapes a `(batch,)` tensor to broadcast against `(batch, ...)` images."""
    return tf.reshape(per_example, [-1] + [1] * (rank - 1))


def _as_labels(labels, images):
    """Converts labels to int32 of shape (batch,), checking what can be checked."""
    labels = tf.convert_to_tensor(labels)
    if labels.dtype.is_floating or labels.dtype == tf.bool:
        raise ValueError(
            f"`labels` must be integer class indices. Received: labels.dtype={labels.dtype.name}"
        )
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if tf.executing_eagerly() and labels.shape[0] != images.shape[0]:
        raise ValueError(
            "`labels` needs one entry per image. Received: "
            f"labels.shape={tuple(labels.shape)}, images.shape={tuple(images.shape)}"
        )
    return labels


def half_and_half_mask(images, half_and_half, seed):
    """The half-and-half mask `a` (docs/method.md §4): one draw per call, P(1) = 0.5."""
    batch = tf.shape(images)[0]
    if not half_and_half:
        return tf.ones([batch], images.dtype)
    draw = keras.random.uniform([batch], seed=seed) if seed is not None else tf.random.uniform([batch])
    return tf.cast(draw < 0.5, images.dtype)


def _compiled(model, settings, report_steps=False):
    """A `tf.function` of the loop, taking the budget as tensors; cached per
    `settings.loop_key()` and `report_steps` on Keras layers.

    Only a Keras layer owns its state, so only there is a cached trace safe to
    reuse: a bound method's `__dict__` is its function's, shared by every
    instance, and a plain callable may read Python state that changes.
    """

    def run(images, labels, rho, overshoot, mask):
        return attack_loop(model, images, labels, settings.with_budget(rho, overshoot), half_and_half_mask=mask,
                           report_steps=report_steps)

    if not isinstance(model, keras.layers.Layer):
        return tf.function(run)
    cache = model.__dict__.setdefault("_keras_robust_attack_fns", {})
    key = (settings.loop_key(), report_steps)
    if key not in cache:
        cache[key] = tf.function(run, reduce_retracing=True)
    return cache[key]


def late_examples(first_met_step, attacked, steps):
    """True for each attacked example whose criterion was first met after step ⌊N/2⌋, or never."""
    return ((first_met_step < 0) | (first_met_step > steps // 2)) & (attacked > 0)


def check_sanity(first_met_step, attacked, steps, mode):
    """Raises unless every attacked example met the criterion by step ⌊N/2⌋ (docs/method.md §4).

    In graph mode a failure surfaces as `tf.errors.InvalidArgumentError`.
    """
    limit = steps // 2
    late = late_examples(first_met_step, attacked, steps)
    if not tf.executing_eagerly():
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(late)),
            [f"Attack sanity check (docs/method.md §4) failed: the criterion was not met by step {limit}"
             f" of {steps}. Increase rho or steps. Images failing:",
             tf.reduce_sum(tf.cast(late, tf.int32))],
        )
        return
    failed = int(np.sum(np.asarray(late)))
    if failed:
        what = "reach the budget" if mode == "bounded" else f"meet the {mode} criterion"
        raise AttackSanityError(
            f"{failed} of {int(tf.size(late))} images did not {what} by step {limit} of "
            f"{steps} (docs/method.md §4 sanity check); the bound would be loose. "
            "Increase rho or steps."
        )
