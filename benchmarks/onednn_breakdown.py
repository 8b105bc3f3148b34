"""Where a training step's time goes: oneDNN's convolution primitives vs everything else.

    python benchmarks/onednn_breakdown.py                 # ResNet-20, standard and robust, fp32 and bf16
    python benchmarks/onednn_breakdown.py --depth 44 --modes robust --precisions bf16

Runs a few steps of each configuration in a fresh process with
`ONEDNN_VERBOSE=1` (no XLA, so TensorFlow's oneDNN kernels run), and sums the
per-call times oneDNN reports for each convolution pass (forward, backward to
the data, backward to the weights) with the kernel it chose. What is left of
the step is TensorFlow's own work: batch norm, activations, residual adds,
the optimizer. Verbose logging slows each call a little, so the step time
printed beside it is from the same logged run.
"""

import argparse
import collections
import os
import subprocess
import sys
import time

from keras_robust.training.precision import PRECISIONS

STEPS = 3


def one(depth, mode, precision):
    """Trains `STEPS` logged steps after three quiet ones; prints the mean step time."""
    import keras
    import numpy as np

    import keras_robust
    from keras_robust.training.precision import precision_scope

    robust = mode == "robust"
    with precision_scope(precision):
        classifier = keras_robust.resnet(depth, activation="half_huber_relu" if robust else "relu")
        model = keras_robust.RobustModel(classifier, robust=robust, weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)
    images = np.random.default_rng(0).random((128, 32, 32, 3), dtype="float32")
    labels = np.random.default_rng(0).integers(0, 10, 128)
    for _ in range(3):
        model.train_on_batch(images, labels)
    print("MEASURE", flush=True)
    start = time.perf_counter()
    for _ in range(STEPS):
        model.train_on_batch(images, labels)
    print(f"STEP {(time.perf_counter() - start) / STEPS}", flush=True)


def summarise(log):
    """`(step_ms, {(pass, kernel): ms per step})` from one verbose log."""
    per_pass = collections.Counter()
    step_ms = None
    measuring = False
    for line in log.splitlines():
        if line.startswith("MEASURE"):
            measuring = True
        elif line.startswith("STEP"):
            step_ms = 1000 * float(line.split()[1])
        elif measuring and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.split(",")
            if fields[5] == "convolution":
                per_pass[(fields[7], fields[6])] += float(fields[-1]) / STEPS
    return step_ms, per_pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--modes", nargs="+", default=["standard", "robust"], choices=["standard", "robust"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(int(args.one[0]), args.one[1], args.one[2])
        return
    for mode in args.modes:
        for precision in args.precisions:
            output = subprocess.run(
                [sys.executable, __file__, "--one", str(args.depth), mode, precision],
                capture_output=True, text=True, check=True,
                env={**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            step_ms, per_pass = summarise(output.stdout)
            convolutions = sum(per_pass.values())
            print(f"ResNet-{args.depth} {mode} {precision}: step {step_ms:.0f} ms (logged), "
                  f"convolutions {convolutions:.0f} ms ({100 * convolutions / step_ms:.0f}%), "
                  f"the rest {step_ms - convolutions:.0f} ms")
            for (kind, kernel), ms in sorted(per_pass.items(), key=lambda item: -item[1]):
                print(f"    {kind:<18} {ms:7.1f} ms  {kernel}")


if __name__ == "__main__":
    main()
