"""Robust training of a ResNet with plain `model.fit`, then an adversarial explanation.

    python examples/fit_robust_cifar10.py --data ../shared/data/cifar10-jpeg.tar.gz --epochs 1 --limit 2048
"""

import argparse

# First, before Keras loads TensorFlow: on CPUs where TensorFlow leaves its faster oneDNN kernels off, this turns
# them on (keras_robust.common.onednn).
import keras_robust

# isort: split
import keras
import numpy as np

from keras_robust.data import load_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=2048, help="training images")
    args = parser.parse_args()

    train = load_dataset(args.data, "train", limit=args.limit)
    test = load_dataset(args.data, "test", limit=500, batch_size=500)
    model = keras_robust.RobustModel(
        keras_robust.resnet(depth=20, activation="half_huber_relu"), weight_decay=1e-4
    )
    # XLA roughly halves the step time on CPU; Keras leaves it off there by default.
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=True)
    model.fit(train.dataset, epochs=args.epochs)
    print("psi", model.psi, "test", model.evaluate(test.dataset, return_dict=True, verbose=0))

    images, labels = next(iter(test.dataset))
    explainer = keras_robust.AdversarialExplainer(model.classifier, class_names=train.class_names)
    result = explainer.explain_standard(images[:1].numpy(), labels[:1].numpy())
    for j in range(result.targets.shape[1]):
        print(f"toward {result.target_name(0, j):<11} confidence "
              f"{result.confidence_before[0, j]:.3f} -> {result.confidence_after[0, j]:.3f}")
    print("max |delta|", float(np.abs(result.delta).max()))


if __name__ == "__main__":
    main()
