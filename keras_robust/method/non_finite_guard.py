"""The guard that keeps a non-finite training step away from the weights (docs/method.md §3a).

`RobustModel.train_step` applies its update only when the step's loss and
gradients are finite on every replica (`apply_if`), and records the first
step of the epoch that was not (`NonFiniteRecord`); `StopOnNonFiniteStep`,
which `RobustModel.fit` puts before every other callback, turns that record
into a `NonFiniteTrainingError` at the end of the batch, before any other
callback can look at the model.
"""

import keras
import numpy as np
import tensorflow as tf

# What went wrong, as `NonFiniteRecord` stores it: its index + 1 (0: nothing).
FAILURES = ("the loss", "the gradients", "the weights after the update")


class NonFiniteTrainingError(RuntimeError):
    """A training step's loss, gradients or updated weights were NaN or infinite.

    Attributes:
        epoch: The epoch, from 1.
        batch: The batch of that epoch, from 1.
        values: The step's `{"ce", "l_adv", "psi"}`.
    """

    def __init__(self, message, epoch, batch, values):
        super().__init__(message)
        self.epoch, self.batch, self.values = epoch, batch, values


def all_finite(tensors):
    """A scalar bool: every value of every floating tensor in `tensors` (None and integer
    ones, such as a dropout layer's seed, skipped) is finite."""
    floating = [tf.convert_to_tensor(t) for t in tensors if t is not None]
    return tf.reduce_all([True] + [tf.reduce_all(tf.math.is_finite(t)) for t in floating if t.dtype.is_floating])


def agreed(flag):
    """`flag` and-ed over every replica in sync, so that each takes the same decision."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return flag
    failed = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(flag), tf.float32))
    return tf.equal(failed, 0.0)


def apply_if(condition, update, args=(), changed=(), before=()):
    """Runs `update(*args)` (which returns None) in every replica where the scalar bool `condition`
    (the same on all) holds; where it fails, the variables of `before`, `(variable, its value
    before the step)` pairs, are put back.

    Where a strategy's optimizer updates go through `merge_call`
    (MirroredStrategy), the update's all-reduces cannot sit inside a
    `tf.cond`: the replicas' collectives are then not created in one order and
    can pair up wrongly. So there the update always runs, with its non-finite
    values zeroed, and when `condition` fails the `changed` variables (the
    weights, the optimizer's state, R) and `before`'s are put back from the
    cross-replica context, where assigning a mirrored variable needs no
    collective.
    """
    variables = [variable for variable, _ in before]
    values = [value for _, value in before]

    def put_back(variables, values):
        for variable, value in zip(variables, values):
            variable.assign(value)

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(condition, lambda: update(*args), lambda: put_back(variables, values))
        return
    saved = [tf.identity(v.value) for v in changed]
    update(*tf.nest.map_structure(lambda t: tf.where(tf.math.is_finite(t), t, tf.zeros_like(t))
                                  if t.dtype.is_floating else t, args))

    def in_cross_replica_context(strategy, condition, saved):
        # Mirrored variables: every replica held the same values before the step.
        decided, saved = (tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], x)
                          for x in (condition, saved))
        tf.cond(decided, lambda: None, lambda: put_back([*changed, *variables], saved))

    tf.distribute.get_replica_context().merge_call(in_cross_replica_context, args=(condition, [*saved, *values]))


@keras.saving.register_keras_serializable(package="keras_robust")
class NonFiniteRecord(keras.metrics.Metric):
    """The epoch's step count and its first non-finite step: where, what, and the step's values.

    Reset by Keras with the other metrics at every epoch's start; never in the
    logs (`RobustModel` leaves it out); the same on every replica.

    Args:
        name: The metric's name.
        **kwargs: Base `keras.metrics.Metric` keyword arguments.
    """

    FIELDS = ("steps", "failed_step", "failure", "ce", "l_adv", "psi")

    def __init__(self, name="non_finite_record", **kwargs):
        super().__init__(name=name, **kwargs)
        self.values = self.add_variable(shape=(len(self.FIELDS),), initializer="zeros",
                                        aggregation="only_first_replica", name="values")

    def update_state(self, failure, ce, l_adv, psi):
        """Counts a step; `failure` (int, 0 for none) and the values are kept for the first failed one."""
        current = self.values.value
        steps = current[0] + 1.0
        first = tf.logical_and(tf.equal(current[1], 0.0), failure > 0)
        failed = tf.stack([steps, steps, tf.cast(failure, tf.float32),
                           *(tf.cast(v, tf.float32) for v in (ce, l_adv, psi))])
        self.values.assign(tf.where(first, failed, tf.concat([[steps], current[1:]], axis=0)))

    def has_failed(self):
        """A scalar bool tensor, for the graph: a step of this epoch has failed."""
        return self.values.value[1] > 0

    def result(self):
        return self.values.value[1]

    def failure(self):
        """`None`, or a dict of `FIELDS` for the epoch's first failed step, read on the host."""
        values = dict(zip(self.FIELDS, np.asarray(keras.ops.convert_to_numpy(self.values), dtype="float64")))
        return values if values["failed_step"] > 0 else None


class StopOnNonFiniteStep(keras.callbacks.Callback):
    """Raises `NonFiniteTrainingError` at the end of the batch whose step failed.

    `RobustModel.fit` puts it first, so no other callback (a checkpoint, a
    backup, TensorBoard) runs on that batch's end or after it.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        failure = self.model.non_finite_record.failure()
        if failure is not None:
            raise failure_error(failure, self.epoch + 1, self.model.robust)


def failure_error(failure, epoch, robust):
    """The `NonFiniteTrainingError` for `failure`, a `NonFiniteRecord.failure()` dict."""
    batch = int(failure["failed_step"])
    values = {key: failure[key] for key in ("ce", "l_adv", "psi")}
    what = FAILURES[int(failure["failure"]) - 1]
    state = ("the weights are those after batch " + str(batch - 1) if batch > 1 else "the weights are the epoch's first")
    if what == FAILURES[2]:
        state = "the update was applied and made them so; do not save this model"
    regulariser = f", l_adv {values['l_adv']:.4g}, psi {values['psi']:.6g}" if robust else ""
    message = (
        f"Training step non-finite at epoch {epoch}, batch {batch}: {what} had NaN or infinite values "
        f"(cross-entropy {values['ce']:.4g}{regulariser}); {state}. Lower the learning rate, clip the "
        "gradients (e.g. keras.optimizers.SGD(..., global_clipnorm=1.0)) or warm the learning rate up"
        + (", lower RobustModel(max_gradient_ratio=...)" if robust else "")
        + ", and check the data"
    )
    return NonFiniteTrainingError(message, epoch, batch, values)
