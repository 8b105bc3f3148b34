"""The ImageNet recipe on this machine: step time, peak memory, and proof that it trains.

ImageNet itself is not here, so everything runs on generated 224×224 data:

1. images/s and peak resident memory of one training step of ResNet-50
   (standard and robust, fp32 and bf16), each in a fresh subprocess;
2. a repeated batch: the robust loss must stay finite and fall, and ψ move;
3. `keras-robust train --recipe imagenet` on a generated JPEG tree for one
   epoch, then again for two: the second run must resume after epoch 1.

    python benchmarks/imagenet_recipe.py                 # everything (~10 min on 2 cores)
    python benchmarks/imagenet_recipe.py --batch-size 8 --steps 3 --parts speed
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_robust.common.machine import cpu_summary


def measure_step(robust, precision, batch_size, steps):
    """Median seconds per step after one warm-up step, and this process's peak RSS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_robust import RobustModel, resnet50
    from keras_robust.training.precision import precision_scope

    keras.utils.set_random_seed(0)
    with precision_scope(precision):
        model = RobustModel(resnet50(activation="half_huber_relu" if robust else "relu"), robust=robust,
                            weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), jit_compile=False)
        rng = np.random.default_rng(0)
        x = rng.random((batch_size, 224, 224, 3)).astype("float32")
        y = rng.integers(0, 1000, batch_size).astype("int32")
        model.train_on_batch(x, y)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
    return {"step_s": float(np.median(times)), "images_per_s": batch_size / float(np.median(times)),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def repeated_batch(steps=6, batch_size=4):
    """Robust fp32 steps on one batch: the loss falls and stays finite, ψ moves."""
    import keras

    from keras_robust import RobustModel, resnet50

    keras.utils.set_random_seed(0)
    model = RobustModel(resnet50(num_classes=10), weight_decay=1e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), jit_compile=False)
    rng = np.random.default_rng(1)
    x = rng.random((batch_size, 224, 224, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size).astype("int32")
    rows = [model.train_on_batch(x, y, return_dict=True) for _ in range(steps)]
    losses = [float(r["loss"]) for r in rows]
    return {"losses": losses, "psi": [float(r["psi"]) for r in rows],
            "finite_and_falling": bool(np.all(np.isfinite(losses)) and losses[-1] < losses[0])}


def resume_through_cli(root):
    """One epoch, then two with the same --out: the second run must start at epoch 2."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for name in ("ant", "bee"):
            os.makedirs(os.path.join(root, "data", split, name))
            for i in range(count):
                pixels = rng.integers(0, 255, (256, 300, 3), dtype="uint8")
                Image.fromarray(pixels).save(os.path.join(root, "data", split, name, f"{i}.JPEG"))
    logs = []
    for epochs in (1, 2):
        run = subprocess.run(
            [sys.executable, "-m", "keras_robust.cli", "train", "--recipe", "imagenet", "--robust", "--data",
             os.path.join(root, "data"), "--out", os.path.join(root, "run"), "--epochs", str(epochs),
             "--batch-size", "4", "--jit-compile", "off"],
            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if run.returncode:
            raise RuntimeError(run.stderr[-2000:])
        logs.append(run.stdout)
    resumed = "Epoch 2/2" in logs[1] and "Epoch 1/2" not in logs[1]
    with open(os.path.join(root, "run", "summary.json")) as file:
        return {"resumed_at_epoch_2": resumed, "psi": json.load(file)["psi"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--parts", nargs="+", default=["speed", "repeated", "resume"],
                        choices=["speed", "repeated", "resume"])
    parser.add_argument("--one", nargs=2, metavar=("MODE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_step(args.one[0] == "robust", args.one[1], args.batch_size, args.steps)))
        return
    print(f"CPU: {cpu_summary()}; batch {args.batch_size}; generated 224x224 data")
    if "speed" in args.parts:
        for mode in ("standard", "robust"):
            for precision in ("fp32", "bf16"):
                out = subprocess.run([sys.executable, __file__, "--one", mode, precision, "--batch-size",
                                      str(args.batch_size), "--steps", str(args.steps)],
                                     capture_output=True, text=True, check=True).stdout
                figures = json.loads(out.strip().splitlines()[-1])
                print(f"ResNet-50 {mode:8s} {precision}: {figures['images_per_s']:6.2f} img/s "
                      f"({figures['step_s']:.2f} s/step), peak RSS {figures['peak_rss_gb']:.2f} GB")
    if "repeated" in args.parts:
        result = repeated_batch()
        print(f"repeated batch: loss {' -> '.join(f'{v:.3f}' for v in result['losses'])}; "
              f"psi {result['psi'][0]:.2f} -> {result['psi'][-1]:.2f}; finite and falling: "
              f"{result['finite_and_falling']}")
    if "resume" in args.parts:
        with tempfile.TemporaryDirectory() as root:
            print(f"keras-robust train --recipe imagenet, 1 epoch then 2: {resume_through_cli(root)}")


if __name__ == "__main__":
    main()
