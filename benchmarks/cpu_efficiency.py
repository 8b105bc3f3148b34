"""Why a ResNet training step reaches only part of the CPU's fp32 peak.

Measures, each in a fresh subprocess so that environment switches take effect:
the GFLOP/s of a large matmul (the reachable peak), of the ResNet's
convolutions alone, of its forward pass, and of a standard training step under
thread-count, oneDNN and XLA variants; and the cost of the robust step with
each activation, to separate the double-backprop cost from the activation's.

    python benchmarks/cpu_efficiency.py --depth 20
"""

import argparse
import json
import os
import subprocess
import sys
import time

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)

VARIANTS = {
    "default": {},
    "intra=2,inter=1": {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"},
    "intra=1,inter=1": {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
}


def _timed(fn, repeats):
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def matmul_gflops(size=2048, repeats=10):
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    matmul = tf.function(lambda: tf.matmul(a, b))
    return 2 * size**3 / _timed(lambda: matmul().numpy(), repeats) / 1e9


def model_measurements(depth, batch_size, jit, activation):
    import keras
    import numpy as np
    import tensorflow as tf
    from train_speed import forward_flops

    import keras_robust

    classifier = keras_robust.resnet(depth=depth, activation=activation)
    flops = forward_flops(classifier)
    x = tf.constant(np.random.default_rng(0).random((batch_size, 32, 32, 3), dtype="float32"))
    y = np.random.default_rng(0).integers(0, 10, batch_size)
    convs = [l for l in classifier.layers if isinstance(l, keras.layers.Conv2D)]
    inputs = [tf.random.normal([batch_size, *l.input.shape[1:]]) for l in convs]
    conv_only = tf.function(lambda: [l(i) for l, i in zip(convs, inputs)], jit_compile=jit)
    forward = tf.function(lambda: classifier(x, training=True), jit_compile=jit)
    results = {
        "conv_only_gflops": flops / 1e9 * batch_size / _timed(conv_only, 5),
        "forward_gflops": flops / 1e9 * batch_size / _timed(forward, 5),
    }
    for robust in (False, True):
        model = keras_robust.RobustModel(classifier, robust=robust)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=jit)
        seconds = _timed(lambda: model.train_on_batch(x, y), 3)
        key = "robust_step" if robust else "standard_step"
        results[f"{key}_images_per_s"] = batch_size / seconds
        results[f"{key}_gflops"] = 3 * flops / 1e9 * batch_size / seconds
    results["robust_over_standard"] = (
        results["standard_step_images_per_s"] / results["robust_step_images_per_s"]
    )
    return results


def run_child(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = {"matmul_gflops": matmul_gflops()}
    out.update(model_measurements(args.depth, args.batch_size, args.jit, args.activation))
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--activation", default="relu", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write all results here")
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    runs = [(name, env, False, "relu") for name, env in VARIANTS.items()]
    runs += [("XLA", {}, True, "relu"), ("XLA, half-Huber", {}, True, "half_huber_relu"),
             ("half-Huber", {}, False, "half_huber_relu")]
    all_results = {}
    for name, env, jit, activation in runs:
        command = [sys.executable, __file__, "--child", "--depth", str(args.depth),
                   "--batch-size", str(args.batch_size), "--activation", activation]
        command += ["--jit"] if jit else []
        child_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
            [here, os.path.dirname(here), os.environ.get("PYTHONPATH", "")])}
        output = subprocess.run(command, capture_output=True, text=True, env=child_env, check=True)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        all_results[name] = result
        print(
            f"{name:<18} matmul {result['matmul_gflops']:6.1f} GFLOP/s | convs only "
            f"{result['conv_only_gflops']:5.1f} | forward {result['forward_gflops']:5.1f} | "
            f"standard step {result['standard_step_images_per_s']:6.1f} img/s "
            f"({result['standard_step_gflops']:5.1f} GFLOP/s) | robust step "
            f"{result['robust_step_images_per_s']:6.1f} img/s, "
            f"{result['robust_over_standard']:.2f}x",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_results, f, indent=2)


if __name__ == "__main__":
    main()
