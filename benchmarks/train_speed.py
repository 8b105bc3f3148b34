"""Training throughput of the reference ResNets: standard vs robust vs adversarial.

Prints images/s per configuration, the robust/standard cost ratio, peak memory
of each configuration, the achieved GFLOP/s of the standard step and the input
pipeline's images/s. Every configuration runs in a fresh subprocess, so its
peak resident memory is its own.

    python benchmarks/train_speed.py                        # ResNet-20 and -44, XLA on and off
    python benchmarks/train_speed.py --depths 20 --jit on --steps 3
    python benchmarks/train_speed.py --data ../shared/data/cifar10-jpeg.tar.gz  # + pipeline
    python benchmarks/train_speed.py --jit off --onednn both   # TensorFlow's oneDNN kernels on against off
    python benchmarks/train_speed.py --jit off --batch-norm both   # our fused batch norm against Keras' own
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from keras_robust.common.atomic import write_atomically
from keras_robust.training.precision import PRECISIONS

CONFIGS = {
    "standard": dict(robust=False, adversarial_training=None),
    "robust": dict(robust=True, adversarial_training=None),
    "adversarial": dict(robust=False, adversarial_training="bounded"),
    "robust+adversarial": dict(robust=True, adversarial_training="l2min"),
}


# The environment of each `--onednn` choice; "default" leaves the variable to keras_robust (or the caller).
ONEDNN = {"default": {}, "on": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}


def with_batch_norm(model, layer_class):
    """The same network and weights with every batch norm of class `layer_class`."""
    import keras

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return layer_class.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def forward_flops(model):
    """Multiply-adds ×2 of every conv and dense layer, from the layer shapes."""
    import keras

    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return flops


def measure_one(depth, config_name, jit, steps, batch_size, precision="fp32", budget_s=20.0,
                batch_norm="fused"):
    """Median step time over at least `steps` steps (and `budget_s` seconds),
    after two warm-up steps; the median shrugs off this VM's timing noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_robust

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    config = CONFIGS[config_name]
    classifier = keras_robust.resnet(
        depth=depth, activation="half_huber_relu" if config["robust"] else "relu"
    )
    if batch_norm == "keras":
        classifier = with_batch_norm(classifier, keras.layers.BatchNormalization)
    model = keras_robust.RobustModel(classifier, weight_decay=1e-4, **config)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 32, 32, 3), dtype="float32")
    y = rng.integers(0, 10, batch_size)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first_step = time.perf_counter() - start
    model.train_on_batch(x, y)
    times = []
    begin = time.perf_counter()
    while len(times) < steps or time.perf_counter() - begin < budget_s:
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {
        "steps_timed": len(times),
        "depth": depth,
        "config": config_name,
        "xla": jit,
        "precision": precision,
        "batch_norm": batch_norm,
        "images_per_s": batch_size / seconds,
        "step_s": seconds,
        "fastest_step_s": min(times),
        "slowest_step_s": max(times),
        "first_step_s": first_step,
        "forward_gflop_per_image": forward_flops(classifier) / 1e9,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def measure_pipeline(data, batches, batch_size):
    """Images/s of the augmented training pipeline on its own."""
    from keras_robust.data import load_dataset

    loaded = load_dataset(data, "train", batch_size=batch_size)
    iterator = iter(loaded.dataset.repeat())
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 44])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--jit", choices=["on", "off", "both"], default="both")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data", help="class-folder data for the pipeline measurement")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(PRECISIONS))
    parser.add_argument("--budget-s", type=float, default=20.0, help="timing per configuration, at least")
    parser.add_argument("--onednn", choices=[*ONEDNN, "both"], default="default",
                        help="TensorFlow's oneDNN kernels: as keras_robust sets them, forced on or off, or both")
    parser.add_argument("--batch-norm", choices=["fused", "keras", "both"], default="fused",
                        help="the networks' batch norm: ours (fused), Keras' own, or both")
    parser.add_argument("--one", nargs=4, metavar=("DEPTH", "CONFIG", "JIT", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        depth, config, jit, precision = args.one
        print(json.dumps(measure_one(int(depth), config, jit == "on", args.steps, args.batch_size, precision,
                                     args.budget_s, args.batch_norm)))
        return
    jits = ["off", "on"] if args.jit == "both" else [args.jit]
    results = []
    switches = ["on", "off"] if args.onednn == "both" else [args.onednn]
    norms = ["fused", "keras"] if args.batch_norm == "both" else [args.batch_norm]
    runs = [(d, j, p, c, o, n) for d in args.depths for p in args.precisions for j in jits for c in args.configs
            for o in switches for n in norms]
    for depth, jit, precision, config, onednn, norm in runs:
        command = [sys.executable, __file__, "--one", str(depth), config, jit, precision,
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--budget-s", str(args.budget_s),
                   "--batch-norm", norm]
        output = subprocess.run(command, capture_output=True, text=True, check=True,
                                env={**os.environ, **ONEDNN[onednn]})
        result = {**json.loads(output.stdout.strip().splitlines()[-1]), "onednn": onednn}
        results.append(result)
        print(
            f"ResNet-{depth:<3} XLA {jit:<3} oneDNN {onednn:<7} BN {norm:<5} {precision} {config:<19} "
            f"{result['images_per_s']:8.1f} img/s  step {result['step_s']:7.2f} s  "
            f"first step {result['first_step_s']:6.1f} s  peak RSS "
            f"{result['peak_rss_gib']:.2f} GiB",
            flush=True,
        )
    print()
    for depth in args.depths:
        for jit in jits:
            rows = {r["config"]: r for r in results
                    if r["depth"] == depth and r["xla"] == (jit == "on") and r["onednn"] == switches[0]
                    and r["batch_norm"] == norms[0]}
            if "standard" not in rows:
                continue
            base = rows["standard"]
            ratios = ", ".join(
                f"{name} {base['images_per_s'] / r['images_per_s']:.2f}x"
                for name, r in rows.items() if name != "standard"
            )
            # A training step costs about 3 forward passes (forward + 2x backward).
            gflops = 3 * base["forward_gflop_per_image"] * base["images_per_s"]
            print(f"ResNet-{depth} XLA {jit}: cost vs standard: {ratios}; standard step "
                  f"{gflops:.1f} GFLOP/s achieved")
    if args.data:
        rate = measure_pipeline(args.data, 100, args.batch_size)
        print(f"input pipeline (augmented, batch {args.batch_size}): {rate:,.0f} img/s")
        results.append({"pipeline_images_per_s": rate})
    if args.json:
        write_atomically(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
