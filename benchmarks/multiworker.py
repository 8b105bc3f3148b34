"""Two worker processes against one: robust ResNet-20 training throughput at one global batch.

Both workers run on this machine's cores, so two workers cannot be faster
than one here: the figure shows what the collectives cost, and that a
2-process cluster trains at all (docs/distributed.md). On separate machines
each worker brings its own cores.

    python benchmarks/multiworker.py                  # global batch 128, 12 timed steps
    python benchmarks/multiworker.py --steps 6 --mode standard
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from multiworker_harness import start_workers, wait_all  # noqa: E402

from keras_robust.common.machine import cpu_summary  # noqa: E402

# argv: output json, global batch, timed steps, mode, strategy
WORKER = """
import json, sys, time
import numpy as np
import keras
from keras_robust import RobustModel, resnet
from keras_robust.common.strategies import make_strategy

out, global_batch, steps, mode, strategy_name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
strategy = make_strategy(strategy_name)
robust = mode == "robust"
rng = np.random.default_rng(0)
x = rng.random((global_batch * steps, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, global_batch * steps).astype("int32")
with strategy.scope():
    model = RobustModel(resnet(20, activation="half_huber_relu" if robust else "relu"), robust=robust)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=False)

class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start

clock = Clock()
model.fit(x[: global_batch * 2], y[: global_batch * 2], batch_size=global_batch, epochs=1, verbose=0)
model.fit(x, y, batch_size=global_batch, epochs=1, verbose=0, callbacks=[clock], shuffle=False)
json.dump({"images_per_s": global_batch * steps / clock.seconds, "psi": model.psi}, open(out, "w"))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--mode", choices=["standard", "robust"], default="robust")
    args = parser.parse_args()
    print(f"CPU: {cpu_summary()}; ResNet-20 {args.mode}, global batch {args.global_batch}, random data")
    with tempfile.TemporaryDirectory() as root:
        script = os.path.join(root, "worker.py")
        with open(script, "w") as file:
            file.write(WORKER)
        for workers, strategy in ((1, "default"), (2, "multiworker")):
            outs = [os.path.join(root, f"{workers}-{i}.json") for i in range(workers)]
            processes = start_workers(lambda i: [script, outs[i], args.global_batch, args.steps, args.mode, strategy],
                                      workers, root, tag=f"w{workers}")
            wait_all(processes, timeout=1800)
            with open(outs[0]) as file:
                result = json.load(file)
            print(f"{workers} worker(s): {result['images_per_s']:.1f} images/s (global), psi {result['psi']:.2f}")


if __name__ == "__main__":
    main()
