"""Algorithm 1 on a batch shared out over a strategy's replicas (docs/distributed.md).

ARA and explanations attack each image independently in inference mode, so a
batch can be cut into one shard per replica — devices of one machine or
workers of a cluster — and the results gathered back in the original order.
Every worker must pass the same batch; each gets the whole result.
"""

import numpy as np
import tensorflow as tf

from keras_robust.common.strategies import equal_shards, gathered
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.attacks import AttackResult, attack_details, check_sanity


def attack_on_replicas(model, images, labels, settings=None, *, strategy=None, sanity_check=None, report_steps=False,
                       **options):
    """`attack_details` with the batch shared out over `strategy`'s replicas.

    Example:

    >>> strategy = tf.distribute.MirroredStrategy()
    >>> settings = AttackSettings(rho=20.0, steps=450, mode="l2min", momentum=0.9)
    >>> result = attack_on_replicas(model, images, labels, settings, strategy=strategy)
    >>> result.rmse.shape  # one per image, in the order of `images`
    (n,)

    Args:
        model: Maps [0, 1] images to logits; called in inference mode.
        images: NumPy float images `(n, H, W, C)`, the same on every worker.
        labels: Integer labels or targets `(n,)`.
        settings: An `AttackSettings` in inference mode, without the
            half-and-half mask; or give its fields as keywords (`**options`).
        strategy: A `tf.distribute.Strategy`; defaults to the active one. With
            one replica this is `attack_details` itself.
        sanity_check: As in `attack_details`, applied to the whole batch.
        report_steps: As in `attack_details`; every replica reports its steps.

    Returns:
        An `AttackResult` of NumPy arrays in the order of `images`.
    """
    settings = AttackSettings.resolve(settings, **options)
    if settings.training or settings.half_and_half:
        raise ValueError("A replicated attack runs in inference mode on every image (ARA, explanations). "
                         f"Received: training={settings.training}, half_and_half={settings.half_and_half}")
    strategy = strategy or tf.distribute.get_strategy()
    if sanity_check is None:
        sanity_check = settings.sanity_check_by_default
    if strategy.num_replicas_in_sync == 1:
        result = attack_details(model, images, labels, settings, sanity_check=sanity_check,
                                report_steps=report_steps)
        return AttackResult(*(np.asarray(field) for field in result))
    images, labels = np.asarray(images), np.asarray(labels)
    count = len(images)
    shards = equal_shards(strategy, images, labels)

    @tf.function
    def run(batch):
        result = strategy.run(
            lambda shard_batch: attack_details(model, *shard_batch, settings, sanity_check=False,
                                               report_steps=report_steps),
            args=(batch,),
        )
        return AttackResult(*(gathered(strategy, field) for field in result))

    result = AttackResult(*(np.asarray(field)[:count] for field in run(shards)))
    if sanity_check:
        check_sanity(result.first_met_step, result.attacked, settings.steps, settings.mode)
    return result
