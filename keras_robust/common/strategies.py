"""Which `tf.distribute` strategy a run uses, and each worker's part in it.

Placement is the strategies' business alone: nothing in keras-robust names a
device. `"mirrored"` spreads each batch over this machine's devices (GPUs, or
logical CPUs); `"multiworker"` over the worker processes that `TF_CONFIG`
describes (`docs/distributed.md`), each with its own devices.
"""

import math

import numpy as np
import tensorflow as tf

from keras_robust.common.defaults import STRATEGIES
from keras_robust.common.validation import check_choice, check_strategy_environment


def make_strategy(name):
    """The strategy called `name` (one of `STRATEGIES`).

    Args:
        name: `"default"` (one device), `"mirrored"`
            (`tf.distribute.MirroredStrategy` over this machine's devices) or
            `"multiworker"` (`tf.distribute.MultiWorkerMirroredStrategy`
            over the cluster in the `TF_CONFIG` environment variable, NCCL
            between GPUs, `collective_implementation`).
    """
    check_choice("strategy", name, STRATEGIES)
    check_strategy_environment(name)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        implementation = collective_implementation(bool(tf.config.list_physical_devices("GPU")))
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=implementation))
    return tf.distribute.get_strategy()


def collective_implementation(have_gpus):
    """NCCL for the gradient all-reduce between GPUs of several workers, else
    TensorFlow's ring algorithms (which also carry NCCL's other collectives)."""
    implementation = tf.distribute.experimental.CommunicationImplementation
    return implementation.NCCL if have_gpus else implementation.RING


def is_multi_worker(strategy):
    """Whether `strategy` spans several worker processes."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and resolver is not None and bool(resolver.cluster_spec().as_dict()))


def local_replicas(strategy):
    """How many of `strategy`'s replicas run in this process."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return 1  # the default strategy, which has no worker devices to list
    return len(strategy.extended.worker_devices)


def is_chief(strategy):
    """Whether this process writes the run's files (the only one that does)."""
    return bool(strategy.extended.should_checkpoint)


def worker_description(strategy):
    """`"worker 1 of 2"` for a multi-worker strategy, else `"the only worker"`."""
    if not is_multi_worker(strategy):
        return "the only worker"
    resolver = strategy.cluster_resolver
    count = sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values())
    return f"{resolver.task_type} {resolver.task_id} of {count}"


def agreed_value(strategy, value):
    """`value` if every worker holds the same integer, else raises `ValueError`.

    A collective: every worker must call it at the same point of the run.
    """
    if not is_multi_worker(strategy):
        return value
    # In a tf.function: collectives run eagerly are slow and warn so.
    gather = tf.function(lambda: strategy.gather(strategy.run(lambda: tf.constant([value], tf.int64)), axis=0))
    values = gather().numpy()
    low, high = int(values.min()), int(values.max())
    if low != high:
        raise ValueError(f"the workers disagree: values from {low} to {high}; this one, "
                         f"{worker_description(strategy)}, has {value}")
    return value


def agree_on_progress(strategy, done, path):
    """`done` (how far a resumed run got, read from `path`) if every worker read
    the same; otherwise every worker stops with an error saying why."""
    try:
        return agreed_value(strategy, done)
    except ValueError as error:
        raise ValueError(
            f"The workers see different saved progress in {path} ({error}). Every worker must "
            "read what the chief writes: give them one shared folder (a network file system or "
            "a bucket)"
        ) from None


def gathered(strategy, value):
    """Every replica's rows of the per-replica `value`, in replica order, inside `strategy.run`'s caller."""
    if is_multi_worker(strategy):
        return strategy.gather(value, axis=0)
    # One machine: its replicas' results are all here, and concatenating them
    # needs no collective (whose keys a second strategy in the process would reuse).
    return tf.concat(strategy.experimental_local_results(value), axis=0)


def equal_shards(strategy, *arrays):
    """The rows of NumPy `arrays` shared out over `strategy`'s replicas, one equal shard (a tuple of
    tensors) each, as distributed values for `strategy.run`. The last row is repeated to even the
    shards; the caller drops the results past the first `len(arrays[0])` rows after gathering."""
    count, replicas = len(arrays[0]), strategy.num_replicas_in_sync
    per_replica = math.ceil(count / replicas)
    rows = np.concatenate([np.arange(count), np.full(per_replica * replicas - count, count - 1)])

    def shard(context):
        chosen = rows[context.replica_id_in_sync_group * per_replica:][:per_replica]
        return tuple(tf.constant(array[chosen]) for array in arrays)

    return strategy.experimental_distribute_values_from_function(shard)
