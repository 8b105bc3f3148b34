"""How reproducible is an explanation when only the batch around it changes?

    python benchmarks/explanation_reproducibility.py \
        --models runs/standard/model.keras runs/robust/model.keras \
        --data ../shared/data/cifar10-jpeg.tar.gz

Explains 8 test images (seed-1776 permutation), image i toward class i, with
TensorFlow alone: once one image per call, once all 8 in one batch (35 steps,
ρ 0.1, overshoot 5), and prints the largest per-pixel difference of δ per
image. Any difference comes from float32 rounding of batched kernels; this is
the floor under any cross-runtime tolerance (see docs/export.md).
"""

import argparse
import os

import numpy as np

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--n-images", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_robust
    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import evaluation_indices

    data = load_dataset(args.data, "test", batch_size=1000)
    images, _ = data.arrays()
    x = images[evaluation_indices(len(images), args.n_images)].astype("float32")
    targets = np.arange(args.n_images, dtype=np.int32) % 10
    settings = dict(rho=0.1, steps=35, overshoot=5.0, targeted=True, sanity_check=False)
    for path in args.models:
        model = keras.saving.load_model(path, compile=False)
        model = getattr(model, "classifier", model)
        alone = np.concatenate([
            keras_robust.attack_details(model, x[i:i + 1], targets[i:i + 1], **settings).delta
            for i in range(args.n_images)
        ])
        batched = np.asarray(keras_robust.attack_details(model, x, targets, **settings).delta)
        diff = np.abs(alone - batched).reshape(args.n_images, -1).max(axis=1)
        print(f"{path}: max |δ(batch 1) − δ(batch {args.n_images})| per image: "
              + " ".join(f"{d:.2g}" for d in diff))


if __name__ == "__main__":
    main()
