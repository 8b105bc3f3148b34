"""How far each batch norm's second derivative is from the textbook one, in a network.

The Lipschitz regulariser's weight gradient differentiates the input gradient
again. This computes the weight gradient of mean(|d(w . logits)/dx|^2) for a
robust (half-Huber) ResNet on one random batch three ways, with the same
weights: through `keras_robust.FusedBatchNormalization`, through Keras' own
`BatchNormalization`, and through a batch norm written as the formula, every
statistic differentiated, and prints each one's relative distance to the
last (whose statistics are float64, free of the rounding that float32
reductions over a whole batch add to the other two). Written to --json (default docs/figures/batch_norm_second_derivative.json)
whole at the end.

    python benchmarks/batch_norm_second_derivative.py
    python benchmarks/batch_norm_second_derivative.py --depths 20 --batch-sizes 8
"""

import argparse
import datetime
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from run_all import machine_record  # noqa: E402
from train_speed import with_batch_norm  # noqa: E402

import keras_robust  # noqa: E402
from keras_robust.common.atomic import write_atomically  # noqa: E402
from keras_robust.method.double_backprop import twice_differentiated  # noqa: E402

DEFAULT_JSON = os.path.join(REPO, "docs", "figures", "batch_norm_second_derivative.json")


class TextbookBatchNormalization(keras.layers.BatchNormalization):
    """Training-mode batch norm as written: `tf.nn.moments` stops the mean's gradient, this does not."""

    def call(self, inputs, training=None, mask=None):
        if not training:
            return super().call(inputs, training=training, mask=mask)
        # float64 inside, so that float32 rounding in reductions over a
        # whole batch does not count against the other two.
        x = tf.cast(inputs, "float64")
        mean = tf.reduce_mean(x, [0, 1, 2])
        variance = tf.reduce_mean(tf.square(x - mean), [0, 1, 2])
        gamma, beta = (tf.cast(v, "float64") for v in (self.gamma, self.beta))
        outputs = gamma * (x - mean) * tf.math.rsqrt(variance + self.epsilon) + beta
        return tf.cast(outputs, self.compute_dtype)


def regulariser_weight_gradient(model, images, weights):
    """The weight gradient of mean(|input gradient|^2), the input gradient kept in the graph."""
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner, twice_differentiated():
            inner.watch(images)
            total = tf.reduce_sum(weights * model(images, training=True))
        penalty = tf.reduce_mean(tf.square(inner.gradient(total, images)))
    gradients = outer.gradient(penalty, model.trainable_weights)
    return np.concatenate([np.zeros(v.shape).ravel() if g is None else np.ravel(g)
                           for g, v in zip(gradients, model.trainable_weights)])


def measure(depth, batch_size):
    keras.utils.set_random_seed(depth)
    ours = keras_robust.resnet(depth=depth, activation="half_huber_relu")
    rng = np.random.default_rng(depth)
    images = tf.constant(rng.random((batch_size, 32, 32, 3), dtype="float32"))
    weights = tf.constant(rng.normal(size=(batch_size, 10)).astype("float32"))
    models = {"keras_robust": ours, "keras": with_batch_norm(ours, keras.layers.BatchNormalization),
              "textbook": with_batch_norm(ours, TextbookBatchNormalization)}
    gradients = {name: regulariser_weight_gradient(model, images, weights) for name, model in models.items()}
    textbook = gradients["textbook"]
    return {"depth": depth, "batch_size": batch_size, **{
        f"{name}_relative_distance": float(np.linalg.norm(gradients[name] - textbook) / np.linalg.norm(textbook))
        for name in ("keras_robust", "keras")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 44])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 128],
                        help="8: little float32 rounding; 128: the training batch")
    parser.add_argument("--json", default=DEFAULT_JSON)
    args = parser.parse_args()
    record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **machine_record(), "rows": []}
    for depth, batch_size in [(d, b) for d in args.depths for b in args.batch_sizes]:
        row = measure(depth, batch_size)
        record["rows"].append(row)
        print(f"ResNet-{depth}, batch {batch_size}: distance to the textbook second derivative "
              f"keras_robust {row['keras_robust_relative_distance']:.2e}, Keras' layer "
              f"{row['keras_relative_distance']:.2e}", flush=True)
    write_atomically(args.json, json.dumps(record, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
