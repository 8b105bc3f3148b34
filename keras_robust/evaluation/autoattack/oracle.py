"""What AutoAttack asks of a classifier: logits, and a loss with its input gradient, per image.

The attacks keep their bookkeeping in NumPy, as the original keeps it in
PyTorch tensors, and ask the `Oracle` for every model evaluation. The oracle
compiles each evaluation once and, under a `tf.distribute` strategy with
several replicas, shares each batch out over them (one shard per replica, the
results gathered back in order), so every worker of a cluster gets the same
answers and runs the same bookkeeping.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_robust.common.strategies import equal_shards, gathered
from keras_robust.method.model_calls import call_model

LOSSES = ("ce", "dlr-targeted", "target-margin")
# The smallest logit spread the DLR loss divides by, as the original adds it.
DLR_EPSILON = 1e-12


def per_example_loss(kind, logits, labels, targets):
    """AutoAttack's losses, one value per image, each one the attack ascends.

    - `"ce"`: cross-entropy of the label (APGD-CE).
    - `"dlr-targeted"`: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2), with z_π the
      logits sorted in decreasing order (APGD-T).
    - `"target-margin"`: z_t − z_y, whose gradient FAB-T linearises.
    """
    labels = tf.cast(labels, tf.int32)
    targets = tf.cast(targets, tf.int32)
    if kind == "ce":
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    label_logit = tf.gather(logits, labels, batch_dims=1)
    target_logit = tf.gather(logits, targets, batch_dims=1)
    if kind == "target-margin":
        return target_logit - label_logit
    ranked = tf.sort(logits, axis=1, direction="DESCENDING")
    spread = ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + DLR_EPSILON
    return -(label_logit - target_logit) / spread


class Oracle:
    """Compiled inference-mode evaluations of `model` over `strategy`'s replicas.

    Args:
        model: Maps [0, 1] images to logits.
        strategy: A `tf.distribute.Strategy`; defaults to the active one.
    """

    def __init__(self, model, strategy=None):
        self._model = model
        self._strategy = strategy or tf.distribute.get_strategy()
        self._compiled = {}
        self.evaluations = 0

    def logits(self, images):
        """Logits `(n, K)` as float32 NumPy."""
        (logits,) = self._run("logits", images)
        return logits

    def loss_and_gradient(self, kind, images, labels, targets=None):
        """`(logits, loss per image, gradient of the summed loss w.r.t. the images)` as NumPy."""
        if kind not in LOSSES:
            raise ValueError(f"`kind` must be one of {LOSSES}. Received: kind={kind!r}")
        targets = labels if targets is None else targets
        return self._run(kind, images, np.asarray(labels, "int32"), np.asarray(targets, "int32"))

    def _run(self, kind, *arrays):
        self.evaluations += len(arrays[0])
        function = self._function(kind)
        arrays = (np.asarray(arrays[0], "float32"), *arrays[1:])
        if self._strategy.num_replicas_in_sync == 1:
            return tuple(np.array(value) for value in function(*arrays))
        shards = equal_shards(self._strategy, *arrays)
        return tuple(np.array(value)[:len(arrays[0])] for value in self._distributed(kind)(shards))

    def _function(self, kind):
        if kind not in self._compiled:
            self._compiled[kind] = tf.function(self._evaluation(kind), reduce_retracing=True)
        return self._compiled[kind]

    def _evaluation(self, kind):
        model = self._model
        if kind == "logits":
            return lambda images: (tf.cast(call_model(model, images, False), tf.float32),)

        def evaluate(images, labels, targets):
            with tf.GradientTape() as tape:
                tape.watch(images)
                logits = tf.cast(call_model(model, images, False), tf.float32)
                loss = per_example_loss(kind, logits, labels, targets)
                total = tf.reduce_sum(loss)
            return logits, loss, tape.gradient(total, images)

        return evaluate

    def _distributed(self, kind):
        key = ("distributed", kind)
        if key not in self._compiled:
            strategy, evaluation = self._strategy, self._evaluation(kind)

            @tf.function
            def run(batch):
                outputs = strategy.run(lambda shard: evaluation(*shard), args=(batch,))
                return tuple(gathered(strategy, value) for value in outputs)

            self._compiled[key] = run
        return self._compiled[key]
