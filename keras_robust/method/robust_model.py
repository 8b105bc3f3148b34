"""`RobustModel`: robust training around any Keras classifier (docs/method.md §3)."""

import keras
import tensorflow as tf

from keras_robust.common.defaults import ADVERSARIAL_MODES, ADVERSARIAL_STEPS, MAX_GRADIENT_RATIO, SEED
from keras_robust.common.strategies import is_multi_worker
from keras_robust.common.validation import (
    check_adversarial_mode,
    check_positive_int,
    check_range,
    check_tensorflow_backend,
)
from keras_robust.method import double_backprop, non_finite_guard, regularizer
from keras_robust.method.classifier_inspection import has_normalization, warn_about_kinked_activations
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.attacks import attack_details
from keras_robust.method.model_calls import num_classes_of
from keras_robust.method.training_batches import (
    bad_batch_message,
    check_training_inputs,
    checked_dataset,
    checked_generator,
)


@keras.saving.register_keras_serializable(package="keras_robust")
class RobustModel(keras.Model):
    """Wraps a classifier with the paper's robust training (docs/method.md §3).

    The training loss of each batch is

    ```
    L = mean CE(f(x), y) + psi * mean(|d s / d x|^z)
    ```

    where `s` is, per example, a random logit or (with probability `zeta`)
    the true-class margin, the gradient is taken with respect to the [0, 1]
    input and kept in the graph (double backpropagation), and `psi` adapts
    so that the cross-entropy settles near `target_loss`:

    ```
    R   <- max(0, R + clip(-ln(L_CE / target_loss), -epsilon_worse, epsilon_better))
    psi  = psi_initial * exp(psi_rate * R)
    ```

    A classifier with normalisation layers whose first batch has a regulariser
    gradient more than half of `max_gradient_ratio` times the cross-entropy's
    trains with ψ scaled down per batch to keep it within the ratio
    (docs/method.md §3a).

    Optionally each batch is first replaced by adversarial examples from
    `keras_robust.attack` (7 steps, training mode), attacking each example
    with probability 0.5 when the robust additions are on.

    Example:

    >>> model = RobustModel(keras_robust.resnet(depth=20))
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    >>> history = model.fit(images, labels, batch_size=128, epochs=1)
    >>> model.psi  # the adaptive weight after training

    Args:
        classifier: A Keras model mapping images in [0, 1] to logits.
        robust: Whether to add the regulariser and adaptive psi. Default True.
        z: Exponent of the gradient norm, >= 1 (paper: 2).
        zeta: Probability of the tandem margin output, in [0, 1] (paper: 0.2).
        target_loss: L_target, the cross-entropy psi steers toward (1.5).
        psi_initial: psi_0 (220).
        psi_rate: k_psi (0.02).
        epsilon_better: Largest increase of R per batch (1).
        epsilon_worse: Largest decrease of R per batch (0.01).
        adversarial_training: None, `"bounded"` (standard, rho 0.01) or
            `"l2min"` (rho 0.1).
        adversarial_rho: Attack budget; defaults to the mode's value above.
        adversarial_steps: Attack steps N (7).
        half_and_half: Attack each example with probability 0.5. Defaults to
            `robust`, as in the reference.
        weight_decay: Coupled L2 weight decay added to every gradient, as
            `torch.optim.SGD(weight_decay=...)` does in the reference (1e-4
            there). Keras optimizers' own `weight_decay` is decoupled, which is
            a different recipe.
        initial_psi_accumulator: R to start from, >= 0. Defaults to the
            classifier's own if it was loaded by `keras_robust.pretrained`
            (its card's `psi_accumulator_R`), else 0.
        max_gradient_ratio: This package's addition (docs/method.md §3a),
            for classifiers with normalisation layers that start from R = 0
            (not a shipped network, which continues its own ψ): if on the first batch
            the regulariser's weight gradient is more than half (`BOUND_ENGAGES_AT`)
            of this many times the cross-entropy's (1.0), every batch scales ψ
            down to keep it within this many times, and ψ does not climb while
            it does. The paper's ResNets start below half and train exactly as in the paper;
            `keras.applications` networks start far above it and diverge
            without it (docs/method.md §3a has the table). None turns it off.
        **kwargs: Base `keras.Model` keyword arguments, such as `name`.
    """

    def __init__(
        self,
        classifier,
        robust=True,
        z=2.0,
        zeta=0.2,
        target_loss=1.5,
        psi_initial=220.0,
        psi_rate=0.02,
        epsilon_better=1.0,
        epsilon_worse=0.01,
        adversarial_training=None,
        adversarial_rho=None,
        adversarial_steps=ADVERSARIAL_STEPS,
        half_and_half=None,
        weight_decay=0.0,
        initial_psi_accumulator=None,
        max_gradient_ratio=MAX_GRADIENT_RATIO,
        **kwargs,
    ):
        check_tensorflow_backend("RobustModel")
        super().__init__(**kwargs)
        if initial_psi_accumulator is None:
            card = getattr(classifier, "pretrained_card", None) or {}
            initial_psi_accumulator = card.get("psi_accumulator_R") or 0.0
        if adversarial_rho is None and adversarial_training:
            adversarial_rho = ADVERSARIAL_MODES.get(adversarial_training)
        _check_arguments(classifier, z=z, zeta=zeta, target_loss=target_loss, psi_initial=psi_initial,
                         psi_rate=psi_rate, epsilon_better=epsilon_better, epsilon_worse=epsilon_worse,
                         weight_decay=weight_decay, initial_psi_accumulator=initial_psi_accumulator,
                         max_gradient_ratio=max_gradient_ratio,
                         adversarial_training=adversarial_training, adversarial_rho=adversarial_rho,
                         adversarial_steps=adversarial_steps)
        self.classifier = classifier
        self.robust = bool(robust)
        self.z = float(z)
        self.zeta = float(zeta)
        self.target_loss = float(target_loss)
        self.psi_initial = float(psi_initial)
        self.psi_rate = float(psi_rate)
        self.epsilon_better = float(epsilon_better)
        self.epsilon_worse = float(epsilon_worse)
        self.adversarial_training = adversarial_training
        self.adversarial_rho = None if adversarial_rho is None else float(adversarial_rho)
        self.adversarial_steps = adversarial_steps
        self.half_and_half = self.robust if half_and_half is None else bool(half_and_half)
        self.weight_decay = float(weight_decay)
        self.initial_psi_accumulator = float(initial_psi_accumulator)
        self.max_gradient_ratio = None if max_gradient_ratio is None else float(max_gradient_ratio)
        # docs/method.md §3a: the blow-up the bound prevents comes from normalisation layers,
        # and a classifier that brings its own R (a shipped network) continues the paper's ψ.
        self._bounds_regularizer = (self.max_gradient_ratio is not None and has_normalization(classifier)
                                    and self.initial_psi_accumulator == 0)
        # R must be one value on every replica: each replica computes the same
        # update from the globally reduced cross-entropy, and only the first
        # replica's write is kept.
        self.psi_accumulator = self.add_weight(
            name="psi_accumulator",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_psi_accumulator),
            trainable=False,
            aggregation="only_first_replica",
        )
        # docs/method.md §3a: |∇θ L_adv| / |∇θ CE| on the first batch trained; 0 until then.
        self.first_gradient_ratio = self.add_weight(
            name="first_gradient_ratio",
            shape=(),
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self.seed_generator = keras.random.SeedGenerator(SEED, name="robust_seed")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.l_adv_tracker = keras.metrics.Mean(name="l_adv")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.adv_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="adv_accuracy"
        )
        self.non_finite_record = non_finite_guard.NonFiniteRecord()
        # Metrics that mean nothing in this configuration stay out of the logs,
        # and so does the guard's record, which is no measurement.
        self._unused_metric_names = {
            name
            for name, used in [("l_adv", self.robust), ("adv_accuracy", adversarial_training),
                               (self.non_finite_record.name, False)]
            if not used
        }
        if self.robust:
            warn_about_kinked_activations(classifier)
        if getattr(classifier, "built", False):
            self.built = True

    @property
    def psi(self):
        """The current adaptive weight ψ (`regularizer.psi_from_accumulator`), a float."""
        accumulator = tf.cast(keras.ops.convert_to_tensor(self.psi_accumulator), tf.float64)
        return float(regularizer.psi_from_accumulator(accumulator, self.psi_initial, self.psi_rate))

    def load_own_variables(self, store):
        # Files saved before the first batch's gradient ratio was kept hold R alone; the
        # ratio is then measured on the next batch trained.
        if len(store.keys()) == 1:
            self.psi_accumulator.assign(store["0"])
            return
        super().load_own_variables(store)

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def build(self, input_shape):
        if not self.classifier.built:
            self.classifier.build(input_shape)
        self.built = True

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        if loss is not None:
            raise ValueError(
                "RobustModel trains on sparse cross-entropy from logits (docs/method.md §3) "
                f"and takes no `loss`. Received: loss={loss!r}"
            )
        # Accuracy is always reported; a second "accuracy" would clash by name.
        if isinstance(metrics, (list, tuple)):
            metrics = [m for m in metrics if m not in ("accuracy", "acc")] or None
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """`keras.Model.export` of the classifier: what is served is images to
        logits; the regulariser and adversarial training exist only in training.
        For the explanation endpoint too, use `keras_robust.export.export_model`."""
        return self.classifier.export(filepath, format=format, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with every batch of the training data checked.

        Arrays are checked whole before training; a `tf.data.Dataset` or a
        generator is checked batch by batch as it is read (finite images in
        [0, 1], labels in range), and a bad batch stops training with a
        `ValueError` that gives its number, before it reaches the weights.
        """
        check_training_inputs(self.classifier, x, y)
        streamed = isinstance(x, tf.data.Dataset) or callable(getattr(x, "__next__", None))
        if isinstance(x, tf.data.Dataset):
            x = checked_dataset(x, num_classes_of(self.classifier))
        elif streamed:
            x = checked_generator(self.classifier, x)
        args = list(args)
        if len(args) > _CALLBACKS_AFTER_Y:
            args[_CALLBACKS_AFTER_Y] = _guard_first(args[_CALLBACKS_AFTER_Y], self)
        else:
            kwargs["callbacks"] = _guard_first(kwargs.get("callbacks"), self)
        if streamed and not args:
            # Datasets and generators shuffle themselves; Keras would warn
            # that its default shuffle=True is ignored for them.
            kwargs.setdefault("shuffle", False)
        try:
            return super().fit(x, y, *args, **kwargs)
        except tf.errors.InvalidArgumentError as error:
            problem = bad_batch_message(error)
            if problem is None:
                raise
            raise ValueError(problem) from None

    def train_step(self, data):
        images, labels = self._unpack(data)
        # Batch norm's moving statistics move in the forward passes; a step
        # that is not applied puts them back (`_guarded_update`).
        statistics = [tf.identity(v.value) for v in self.classifier.non_trainable_variables]
        attacked = None
        if self.adversarial_training:
            settings = AttackSettings(rho=self.adversarial_rho, steps=self.adversarial_steps,
                                      mode=self.adversarial_training, half_and_half=self.half_and_half, training=True)
            result = attack_details(self.classifier, images, labels, settings, sanity_check=False,
                                    seed=self.seed_generator)
            images = tf.stop_gradient(result.images)
            attacked = result.attacked
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Persistent where a batch may also need the classification loss's own gradient (§3a).
        with tf.GradientTape(persistent=self._bounds_regularizer) as tape:
            logits, input_gradient = self._forward(images, labels)
            ce = tf.reduce_mean(_cross_entropy(labels, logits))
            classification = ce + tf.add_n(self.losses) if self.losses else ce
            loss, l_adv = classification, tf.constant(0.0)
            if self.robust:
                penalty = regularizer.lipschitz_penalty(input_gradient, self.z)
                psi, accumulator = self._next_psi(tf.stop_gradient(_global_mean(ce)))
                l_adv = psi * penalty
                loss = classification + l_adv
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
            scaled_classification = self.optimizer.scale_loss(classification / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        logs, psi_state = {}, None
        if self.robust:
            bound, gradients, first_ratio = self._bound_regularizer(tape, scaled_classification, gradients, variables)
            psi, l_adv, loss = psi * bound, l_adv * bound, classification + l_adv * bound
            # While bounded, a larger ψ would change nothing, and R could climb until ψ overflows.
            accumulator = tf.where(bound < 1.0, tf.minimum(accumulator, self.psi_accumulator.value), accumulator)
            psi_state = (accumulator, first_ratio)
            self.l_adv_tracker.update_state(l_adv)
            logs["psi"] = psi
        if self.weight_decay:
            # Scaled like the loss, so a loss-scaling optimizer unscales it too.
            decay = self.optimizer.scale_loss(self.weight_decay / replicas)
            gradients = [g + decay * v for g, v in zip(gradients, variables)]
        self._guarded_update(gradients, variables, statistics, loss, psi_state,
                             (_global_mean(ce), _global_mean(l_adv), logs.get("psi", 0.0)))
        self._update_trackers(loss, ce, labels, logits, attacked)
        logs.update(self.compute_metrics(images, labels, logits))
        return _reducible_logs({k: v for k, v in logs.items() if k not in self._unused_metric_names})

    def _guarded_update(self, gradients, variables, statistics, loss, psi_state, values):
        """Applies the step only if its loss and gradients are finite on every replica (docs/method.md §3a).

        A loss-scaling optimizer (mixed_float16) skips steps whose scaled
        gradients overflow by design, so there only the loss is checked.
        """
        if not self.optimizer.built:
            self.optimizer.build(variables)
        loss_finite = non_finite_guard.agreed(tf.math.is_finite(loss))
        checked = [] if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else gradients
        gradients_finite = non_finite_guard.agreed(non_finite_guard.all_finite(checked))
        values = [tf.convert_to_tensor(v, tf.float32) for v in values]
        # After every collective of the step so far: replicas must run theirs in one order, and
        # the update's all-reduce does not otherwise wait for these.
        with tf.control_dependencies(values):
            go = tf.logical_and(tf.logical_and(loss_finite, gradients_finite),
                                tf.logical_not(self.non_finite_record.has_failed()))

        def update(go, gradients, psi_state):
            with tf.control_dependencies([go]):
                gradients = [tf.identity(g) for g in gradients]
            self.optimizer.apply_gradients(zip(gradients, variables))
            if psi_state:
                self.psi_accumulator.assign(psi_state[0])
                self.first_gradient_ratio.assign(psi_state[1])

        changed = [*variables, *self.optimizer.variables, self.psi_accumulator, self.first_gradient_ratio]
        non_finite_guard.apply_if(go, update, (go, list(gradients), tuple(psi_state or ())), changed,
                                  list(zip(self.classifier.non_trainable_variables, statistics)))
        weights_finite = non_finite_guard.agreed(non_finite_guard.all_finite(self.classifier.variables))
        failure = tf.where(loss_finite, tf.where(gradients_finite, tf.where(weights_finite, 0, 3), 2), 1)
        self.non_finite_record.update_state(failure, *values)

    def test_step(self, data):
        images, labels = self._unpack(data)
        logits = self.classifier(images, training=False)
        ce = tf.reduce_mean(_cross_entropy(labels, logits))
        self._loss_tracker.update_state(ce)
        self.accuracy_tracker.update_state(labels, logits)
        logs = self.compute_metrics(images, labels, logits)
        keep = {"loss", "accuracy", *(m.name for m in self._compiled_metric_objects())}
        return _reducible_logs({k: v for k, v in logs.items() if k in keep})

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 builds from the first distributed batch reduced with
        # `strategy.reduce`, which MultiWorkerMirroredStrategy cannot do for
        # a nest of per-replica tensors (keras-team/keras#20585). Building
        # needs shapes only, so this replica's own batch serves as well.
        # The one place this class touches a private Keras hook.
        if iterator is not None:
            strategy = self.distribute_strategy
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches)
                )
                break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _compiled_metric_objects(self):
        compiled = getattr(self, "_compile_metrics", None)
        return compiled.metrics if compiled is not None else []

    def _unpack(self, data):
        images, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(
                "RobustModel does not support sample weights: the regulariser "
                "and psi are defined on unweighted batch means (docs/method.md §3). "
                "Received: sample_weight"
            )
        # Images stay in the variables' precision (float32 under a mixed
        # policy): the classifier casts them itself, so the input gradient the
        # regulariser penalises and every attack's δ are float32.
        images = tf.cast(images, self.classifier.variable_dtype)
        return images, tf.cast(tf.reshape(labels, [-1]), tf.int32)

    def _forward(self, images, labels):
        """Logits and, with the robust additions, the kept-graph input gradient."""
        if not self.robust:
            return self.classifier(images, training=True), None
        with tf.GradientTape() as input_tape, double_backprop.twice_differentiated():
            input_tape.watch(images)
            logits = self.classifier(images, training=True)
            outputs = regularizer.lipschitz_outputs(
                tf.cast(logits, tf.float32), labels, self.zeta, seed=self.seed_generator
            )
            total = tf.reduce_sum(outputs)
        return logits, input_tape.gradient(total, images)

    def _next_psi(self, batch_ce):
        """This batch's R and the paper's ψ from it (docs/method.md §3)."""
        accumulator = regularizer.update_psi_accumulator(
            self.psi_accumulator.value,
            batch_ce,
            self.target_loss,
            self.epsilon_better,
            self.epsilon_worse,
        )
        return regularizer.psi_from_accumulator(accumulator, self.psi_initial, self.psi_rate), accumulator

    def _bound_regularizer(self, tape, scaled_classification, gradients, variables):
        """The factor b on this batch's ψ, the gradients with it applied, and the first batch's
        gradient ratio to keep (docs/method.md §3a).

        The first batch measures |∇θ L_adv| / |∇θ CE|. Within `BOUND_ENGAGES_AT`
        of `max_gradient_ratio` (the paper's ResNets) b is 1 from then on and
        nothing more is computed; beyond it, every batch takes
        b = min(1, ratio · |∇θ CE| / |∇θ L_adv|).
        ψ enters the loss linearly, so b scales the regulariser's gradient,
        `gradients - classification gradients`, exactly. Each replica bounds
        its own gradients, before they are summed; the ratio kept is the first
        replica's.
        """
        first = self.first_gradient_ratio.value
        if not self._bounds_regularizer:
            return tf.constant(1.0), gradients, first
        needed = tf.logical_or(tf.equal(first, 0.0), regularizer.bound_engaged(first, self.max_gradient_ratio))

        def classification_gradients():
            return tape.gradient(scaled_classification, variables)

        def none_needed():
            return [tf.zeros_like(g) for g in gradients]

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            own = tf.cond(needed, classification_gradients, none_needed)
        else:
            # Under MirroredStrategy a branch holding this gradient unsettled the order in which the
            # replicas create their later collectives (non_finite_guard.apply_if): computed on every
            # batch there, and zeroed where not needed.
            own = [tf.where(needed, c, tf.zeros_like(c)) for c in classification_gradients()]
        regularizer_norm = tf.linalg.global_norm([g - c for g, c in zip(gradients, own)])
        classification_norm = tf.linalg.global_norm(own)
        first = tf.where(tf.equal(first, 0.0), regularizer_norm / tf.maximum(classification_norm, 1e-30), first)
        bound = regularizer.regularizer_bound(regularizer_norm, classification_norm, self.max_gradient_ratio)
        bound = tf.where(regularizer.bound_engaged(first, self.max_gradient_ratio), bound, 1.0)
        # A selection, not a tf.cond: replicas may bound differently, and branching apart there
        # unsettled the order of their later collectives under MirroredStrategy.
        gradients = [tf.where(bound < 1.0, c + bound * (g - c), g) for g, c in zip(gradients, own)]
        return bound, gradients, first

    def _update_trackers(self, loss, ce, labels, logits, attacked):
        self._loss_tracker.update_state(loss)
        self.ce_tracker.update_state(ce)
        self.accuracy_tracker.update_state(labels, logits)
        if attacked is not None:
            self.adv_accuracy_tracker.update_state(labels, logits, sample_weight=attacked)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "robust": self.robust,
                "z": self.z,
                "zeta": self.zeta,
                "target_loss": self.target_loss,
                "psi_initial": self.psi_initial,
                "psi_rate": self.psi_rate,
                "epsilon_better": self.epsilon_better,
                "epsilon_worse": self.epsilon_worse,
                "adversarial_training": self.adversarial_training,
                "adversarial_rho": self.adversarial_rho,
                "adversarial_steps": self.adversarial_steps,
                "half_and_half": self.half_and_half,
                "weight_decay": self.weight_decay,
                "initial_psi_accumulator": self.initial_psi_accumulator,
                "max_gradient_ratio": self.max_gradient_ratio,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def _check_arguments(classifier, *, z, zeta, weight_decay, initial_psi_accumulator, max_gradient_ratio,
                     adversarial_training, adversarial_rho, adversarial_steps, **positive):
    """`RobustModel`'s argument checks; `positive` holds the settings that must be > 0."""
    check_range("z", z, low=1.0)
    check_range("zeta", zeta, low=0.0, high=1.0)
    for name, value in positive.items():
        check_range(name, value, low=0.0, strict=True)
    check_range("weight_decay", weight_decay, low=0.0)
    check_range("initial_psi_accumulator", initial_psi_accumulator, low=0.0)
    if max_gradient_ratio is not None:
        check_range("max_gradient_ratio", max_gradient_ratio, low=0.0, strict=True)
    check_adversarial_mode(adversarial_training)
    if adversarial_rho is not None:
        check_range("adversarial_rho", adversarial_rho, low=0.0, strict=True)
    check_positive_int("adversarial_steps", adversarial_steps)
    if not callable(classifier):
        raise ValueError(
            "`classifier` must be a Keras model mapping images to logits. "
            f"Received: classifier={classifier!r}"
        )


# `fit(x, y, batch_size, epochs, verbose, callbacks, ...)`: callbacks' index among the arguments after y.
_CALLBACKS_AFTER_Y = 3


def _guard_first(callbacks, model):
    """`callbacks` with `StopOnNonFiniteStep` first, so that it runs before any of them."""
    guard = non_finite_guard.StopOnNonFiniteStep()
    if isinstance(callbacks, keras.callbacks.CallbackList):
        if not any(isinstance(c, non_finite_guard.StopOnNonFiniteStep) for c in callbacks.callbacks):
            guard.set_model(model)
            callbacks.callbacks.insert(0, guard)
        return callbacks
    others = [c for c in callbacks or [] if not isinstance(c, non_finite_guard.StopOnNonFiniteStep)]
    return [guard, *others]


def _cross_entropy(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(
        labels, tf.cast(logits, tf.float32), from_logits=True
    )


def _reducible_logs(logs):
    """`logs` in a shape Keras can average over workers.

    Keras 3 averages a step's logs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars
    (keras-team/keras#20585); a shape-(1,) value reduces to the scalar mean.
    """
    if not is_multi_worker(tf.distribute.get_strategy()):
        return logs
    return {k: tf.reshape(v, [1]) if tf.convert_to_tensor(v).shape.rank == 0 else v for k, v in logs.items()}


def _global_mean(local_mean):
    """Mean over the global batch of per-replica means of equal-sized batches."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return local_mean
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local_mean)
    return total / context.num_replicas_in_sync
