"""The reference training recipe (docs/method.md §3 "Optimisation"), resumable and logged."""

import dataclasses
import warnings

import keras
import tensorflow as tf

from keras_robust.common.strategies import agree_on_progress, is_chief, make_strategy, worker_description
from keras_robust.data.options import DataOptions
from keras_robust.data.pipeline import load_dataset
from keras_robust.data.streaming import stream_images
from keras_robust.method.non_finite_guard import NonFiniteTrainingError
from keras_robust.method.robust_model import RobustModel
from keras_robust.models.cifar_resnet import resnet
from keras_robust.models.imagenet_resnet import resnet50
from keras_robust.reporting.training_report import TrainingReport
from keras_robust.training.checkpoint import RunState, restore_latest
from keras_robust.training.config import TrainingConfig
from keras_robust.training.jit_choice import choose_jit_compile
from keras_robust.training.precision import check_precision_devices, precision_scope
from keras_robust.training.recipes import get_recipe
from keras_robust.training.run_folder import RunFolder

# The settings that do not change what a run computes; every other one is part
# of its identity, and resuming with another value is refused unless forced.
NOT_IDENTITY_FIELDS = ("jit_compile",)


def learning_rate_at(epoch, config, replicas=1):
    """The recipe's schedule: lr × replicas, ÷10 after each drop epoch scaled to
    `config.epochs` (cifar: 170/200 and 195/200 of the epochs, docs/method.md §3)."""
    recipe = get_recipe(config.recipe)
    # Integer arithmetic: the drop comes at epoch ceil(170/200 · epochs).
    drops = sum(epoch * recipe.epochs >= e * config.epochs for e in recipe.lr_drop_epochs)
    return config.learning_rate * replicas * 0.1**drops


def use_xla(config, strategy, build_model, batch_size, input_shape, num_classes):
    """Whether to XLA-compile the step. `"auto"` measures it on one device
    (`keras_robust.training.jit_choice`); TF 2.21 cannot compile a `train_step` under
    MirroredStrategy (resource on the wrong device), so it is off there."""
    if config.jit_compile != "auto":
        return config.jit_compile == "on"
    if strategy.num_replicas_in_sync > 1:
        return False
    return choose_jit_compile(build_model, batch_size, input_shape, num_classes)


def build_model(config, num_classes, input_shape):
    """The ResNet of `config` wrapped in `RobustModel` (not yet compiled)."""
    activation = "half_huber_relu" if config.robust else "relu"
    if get_recipe(config.recipe).streamed:
        classifier = resnet50(num_classes=num_classes, activation=activation, input_shape=input_shape)
    else:
        classifier = resnet(depth=config.depth, num_classes=num_classes, activation=activation,
                            input_shape=input_shape)
    return RobustModel(
        classifier,
        robust=config.robust,
        adversarial_training=config.adversarial_training,
        weight_decay=config.weight_decay,
        # The paper's recipe on the paper's networks, exactly: no bound (docs/method.md §3a).
        max_gradient_ratio=None,
    )


class NonFiniteLossError(RuntimeError):
    """Training diverged; the last good checkpoint is kept."""


class WorkerLostError(RuntimeError):
    """A multi-worker run lost a worker; restarting all of them resumes it."""


def train(config, data, out_dir, *, limit_train=None, limit_test=None, data_options=None, force=False,
          verbose="auto"):
    """Trains with the reference recipe, resuming from `out_dir` if it holds a run.

    The batch size and learning rate scale with the number of replicas, as in
    the reference (batch 128 and lr 0.1 per GPU).

    Args:
        config: A `TrainingConfig`.
        data: Any source `keras_robust.data.load_dataset` takes: `"tfds:NAME"`,
            a folder or `.tar.gz` of class folders, or `(images, labels)`;
            for the imagenet recipe, a folder of class folders or
            `"tfds:imagenet2012"` (`keras_robust.data.streaming`).
        out_dir: The run's folder (`RunFolder`: checkpoints, `model.keras`,
            `log.csv`, TensorBoard logs, `summary.json`).
        limit_train: Train on this many examples only (short runs).
        limit_test: Evaluate on this many test examples only.
        data_options: A `keras_robust.data.DataOptions`: where the data's
            files are and whether a `tfds:` source may download.
        force: Resume a run in `out_dir` even if it was started with other
            settings (named in a warning); the run then mixes them.
        verbose: Keras `fit` verbosity.

    Returns:
        The summary dict also written to `summary.json`.
    """
    if not isinstance(config, TrainingConfig):
        raise ValueError(f"`config` must be a TrainingConfig. Received: config={config!r}")
    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    check_precision_devices(config.precision, strategy)
    run = RunFolder(out_dir).make()
    load = _data_loader(config, data, data_options or DataOptions(), strategy.num_replicas_in_sync)
    test_data = load("test", limit=limit_test)
    identity = run_identity(config, test_data, limit_train)
    check_same_run(run, identity, force)
    finished, restored, start = _resume_point(run, config, strategy)
    if finished is not None:
        return finished
    train_data = load("train", limit=limit_train, first_epoch=start)
    chief = is_chief(strategy)
    if chief:
        run.remove_leftovers()
        run.write_json(run.identity, identity)
    model, xla = _compiled_model(config, strategy, train_data)
    callbacks = _callbacks(run, config, strategy, restored, chief)
    history = _fit(model, train_data, strategy, config, callbacks, verbose, run)
    test = model.evaluate(test_data.distribute(strategy), steps=test_data.steps_per_epoch, verbose=0,
                          return_dict=True)
    summary = {
        "config": dataclasses.asdict(config),
        "psi": model.psi if config.robust else None,
        "psi_accumulator": float(model.psi_accumulator.numpy()),
        "train_last_epoch": {k: float(v[-1]) for k, v in history.history.items() if v},
        "test": {**test, "num_examples": test_data.num_examples},
        "train_examples": train_data.num_examples,
        "class_names": train_data.class_names,
        "replicas": strategy.num_replicas_in_sync,
        "xla": xla,
    }
    if chief:
        run.write_json(run.summary, summary)
    return summary


def _data_loader(config, data, options, replicas):
    """`load(split, **keywords)` for the recipe: in memory, or streamed (ImageNet)."""
    recipe = get_recipe(config.recipe)
    common = dict(batch_size=config.batch_size * replicas, seed=config.seed)
    if recipe.streamed:
        common.update(data_dir=options.data_dir, manual_dir=options.manual_dir, image_size=recipe.image_size)
        return lambda split, **keywords: stream_images(data, split, **common, **keywords)
    common.update(options.load_keywords())

    def load(split, **keywords):
        # Equal per-replica batches keep the mean of per-replica means exact.
        drop = dict(drop_remainder=replicas > 1) if split == "train" else {}
        return load_dataset(data, split, **common, **drop, **keywords)

    return load


def _resume_point(run, config, strategy):
    """`(finished summary or None, restored checkpoint or None, first epoch)`, agreed by every worker.

    Epochs are numbered from the resume point, so a resumed run sees the
    batches an uninterrupted one would.
    """
    finished = finished_summary(run, config)
    restored = None if finished else restore_latest(run.backup)
    start = config.epochs if finished else restored[1]["epoch"] if restored else 0
    agree_on_progress(strategy, start, run.path)
    return finished, restored, start


def _compiled_model(config, strategy, train_data):
    """The compiled `RobustModel`, and whether its step is XLA-compiled."""
    num_classes = len(train_data.class_names)

    def fresh_model():
        with precision_scope(config.precision):
            return build_model(config, num_classes, train_data.image_shape)

    xla = use_xla(config, strategy, fresh_model, config.batch_size, train_data.image_shape, num_classes)
    # The probe drew random numbers; the run's weights must not depend on whether it ran.
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = fresh_model()
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate=learning_rate_at(0, config, strategy.num_replicas_in_sync), momentum=config.momentum
            ),
            jit_compile=xla,
        )
    return model, xla


def _callbacks(run, config, strategy, restored, chief):
    replicas = strategy.num_replicas_in_sync
    run_state = RunState(run, restored, write=chief)
    # After the scheduler, so each epoch's log row holds its learning rate; TensorBoard's
    # events are on disk before the checkpoint, so a kill can repeat an epoch's, never lose it.
    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate_at(epoch, config, replicas)),
        *([_FlushedTensorBoard(run.tensorboard)] if chief else []),
        run_state,
        TrainingReport(run, run_state, write=chief),
    ]
    return callbacks


class _FlushedTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback, its events written to disk at every epoch's end.

    Keras flushes them every two minutes and at the end of training, so a
    killed run lost the epochs since the last flush.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        for writer in self._writers.values():  # Keras' writers, created as it logs
            writer.flush()


def _fit(model, train_data, strategy, config, callbacks, verbose, run):
    """`model.fit` on the run, with a lost worker or a non-finite step or weight as a clear error."""
    failure = None
    try:
        history = model.fit(
            train_data.distribute(strategy),
            epochs=config.epochs,
            steps_per_epoch=train_data.steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
        )
    except tf.errors.UnavailableError as error:
        raise WorkerLostError(
            f"Another worker of the cluster stopped, so {worker_description(strategy)} stops too "
            f"({error.message.splitlines()[0][:200]}). Restart every worker with the same command: "
            f"the run resumes from its last checkpoint in {run.backup}"
        ) from None
    except NonFiniteTrainingError as error:
        failure = str(error)
    weights_failure = next(c for c in callbacks if isinstance(c, RunState)).failure
    if failure is None and weights_failure:
        failure = f"Training stopped at {weights_failure}; lower the learning rate or check the data"
    if failure:
        kept = (f"The last good checkpoint is kept in {run.backup} (and {run.model}): to resume from it with a "
                "lower learning rate, rerun with the new --lr and --force (train(..., force=True)), which a change "
                "of settings needs; the same command again would resume it unchanged." if restore_latest(run.backup)
                else "No epoch finished with finite weights, so there is no checkpoint to resume from: start again.")
        raise NonFiniteLossError(f"{failure}. {kept}")
    return history


def run_identity(config, data, limit_train=None):
    """What a run computes depends on: every setting but `NOT_IDENTITY_FIELDS`, the
    training images used and the data's shape."""
    identity = {field: value for field, value in dataclasses.asdict(config).items() if field not in NOT_IDENTITY_FIELDS}
    identity.update(limit_train=limit_train, num_classes=len(data.class_names), image_shape=list(data.image_shape))
    return identity


def check_same_run(run, identity, force=False):
    """Refuses to resume a run in the `RunFolder` `run` started with other settings, naming
    what differs; with `force`, warns instead."""
    recorded = run.read_json(run.identity)
    if recorded is None:
        # Runs from before run.json: their summary holds the config.
        recorded = (run.read_json(run.summary) or {}).get("config")
    if not recorded:
        return
    recorded = upgraded_identity(recorded)
    differences = [
        f"{key}={recorded[key]!r} there, {value!r} now"
        for key, value in identity.items()
        if key in recorded and recorded[key] != value
    ]
    if not differences:
        return
    message = f"{run.path} holds a run started with other settings ({'; '.join(differences)})"
    if force:
        warnings.warn(f"{message}; resuming it with the new ones, as forced", stacklevel=3)
        return
    raise ValueError(f"{message}. Use another --out, the run's own options to resume it, or --force "
                     "(train(..., force=True)) to resume it with these")


def upgraded_identity(recorded):
    """A recorded identity in today's terms: earlier runs wrote
    `adversarial_training` as a bool and its attack as a separate `l2_min`."""
    if not isinstance(recorded.get("adversarial_training"), bool):
        return recorded
    mode = None
    if recorded["adversarial_training"]:
        mode = "l2min" if recorded.get("l2_min") else "bounded"
    return {**{k: v for k, v in recorded.items() if k != "l2_min"}, "adversarial_training": mode}


def finished_summary(run, config):
    """The summary of the run in `run` if it already trained `config.epochs` epochs, or None."""
    summary = run.read_json(run.summary)
    if summary is None or summary.get("config", {}).get("epochs") != config.epochs:
        return None
    return {**summary, "already_complete": True}

