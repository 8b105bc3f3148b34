"""Start real `MultiWorkerMirroredStrategy` clusters of worker processes on localhost.

Each worker is a fresh Python process with its own `TF_CONFIG`, as on separate
machines; they share this machine's cores, so these runs test correctness, not
speed. `tests/common/test_strategies.py` and `benchmarks/multiworker.py` use them.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

# A worker fitting a small RobustModel on fixed arrays, then saving its
# weights, ψ and logs: argv = output .npz, global batch, steps, model kind.
FIT_WORKER = """
import sys
import numpy as np
import tensorflow as tf
import keras
from keras_robust import RobustModel, resnet
from keras_robust.common.strategies import make_strategy

out, global_batch, steps, kind, strategy_name = sys.argv[1:6]
global_batch, steps = int(global_batch), int(steps)
if strategy_name == "two-cpus":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
else:
    strategy = make_strategy(strategy_name)
rng = np.random.default_rng(0)
x = rng.random((global_batch * steps, 8, 8, 3)).astype("float32")
y = rng.integers(0, 3, global_batch * steps).astype("int32")
with strategy.scope():
    keras.utils.set_random_seed(3)
    if kind == "batchnorm":
        classifier = resnet(depth=8, num_classes=3, input_shape=(8, 8, 3), activation="half_huber_relu")
    else:
        classifier = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
                                       keras.layers.Activation("relu"), keras.layers.GlobalAveragePooling2D(),
                                       keras.layers.Dense(3)])
    # zeta 1: every regularised output is the margin, so no random draw
    # depends on how the batch is split.
    model = RobustModel(classifier, zeta=1.0, target_loss=2.0, weight_decay=1e-2)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
history = model.fit(x, y, batch_size=global_batch, epochs=2, shuffle=False, verbose=0)
weights = classifier.trainable_weights + classifier.non_trainable_weights
np.savez(out, psi=model.psi, ce=history.history["ce"], trainable=len(classifier.trainable_weights),
         *[w.numpy() for w in weights])
"""


def free_ports(count):
    """`count` TCP ports free on localhost right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cluster_env(ports, index):
    """The environment of worker `index` of a localhost cluster on `ports`."""
    tf_config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                 "task": {"type": "worker", "index": index}}
    return {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": ""}


def start_workers(arguments, workers, log_dir, tag="run", ports=None):
    """Starts `workers` processes running `python *arguments(index)` as one cluster
    (no cluster at all for a single worker); returns `[(process, log path)]`."""
    ports = ports or free_ports(workers)
    processes = []
    for index in range(workers):
        log = os.path.join(log_dir, f"{tag}-worker{index}.log")
        env = cluster_env(ports, index) if workers > 1 else {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(log, "w") as file:
            process = subprocess.Popen([sys.executable, *map(str, arguments(index))], stdout=file,
                                       stderr=subprocess.STDOUT, env=env)
        processes.append((process, log))
    return processes


def wait_all(processes, timeout):
    """Waits for every process; kills them all and raises if any fails or the time runs out."""
    deadline = time.monotonic() + timeout
    try:
        for process, log in processes:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise AssertionError(f"worker exited with {code}:\n{_tail(log)}")
    except subprocess.TimeoutExpired:
        raise AssertionError("workers timed out:\n" + "\n".join(_tail(log) for _, log in processes)) from None
    finally:
        kill_all(processes)


def kill_all(processes):
    """SIGKILLs every process still running."""
    for process, _ in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def fit_on_workers(tmp_path, workers, global_batch, steps, kind, strategy):
    """Runs FIT_WORKER on `workers` processes; returns worker 0's `(psi, ce, weights)`,
    trainable weights first, after asserting that every worker ended with the same
    trainable weights and ψ. Non-trainable ones (BatchNormalization's moving
    statistics) follow each worker's own batches, and worker 0's are the ones saved."""
    script = tmp_path / "fit_worker.py"
    script.write_text(FIT_WORKER)
    outs = [tmp_path / f"{strategy}-{workers}-{index}.npz" for index in range(workers)]
    processes = start_workers(lambda index: [script, outs[index], global_batch, steps, kind, strategy],
                              workers, tmp_path, tag=f"{strategy}-{kind}")
    wait_all(processes, timeout=240)
    results = [np.load(out) for out in outs]
    first = results[0]
    weights = [first[f"arr_{i}"] for i in range(len(first.files) - 3)]
    for other in results[1:]:
        assert float(other["psi"]) == float(first["psi"])
        for i in range(int(first["trainable"])):
            np.testing.assert_array_equal(other[f"arr_{i}"], weights[i])
    return float(first["psi"]), first["ce"], weights


def _tail(path, lines=25):
    with open(path, errors="replace") as file:
        return "".join(file.readlines()[-lines:])


# A worker of `keras_robust.training.loop.train` under --strategy multiworker on
# fixed arrays: argv = run folder, epochs.
TRAIN_WORKER = """
import sys
import numpy as np
from keras_robust.training.loop import TrainingConfig, train

out, epochs = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
images = rng.random((384, 8, 8, 3)).astype("float32")
labels = rng.integers(0, 3, 384).astype("int32")
config = TrainingConfig(depth=8, robust=True, epochs=epochs, batch_size=16, learning_rate=0.02,
                        strategy="multiworker", jit_compile="off")
summary = train(config, (images, labels), out, limit_test=64, verbose=2)
print("finished", summary["psi_accumulator"])
"""


def train_on_workers(tmp_path, out, epochs, tag, kill_after_checkpoint=None):
    """Runs TRAIN_WORKER on 2 workers into `out`. With `kill_after_checkpoint=s`, SIGKILLs
    worker 1 `s` seconds after the first checkpoint appears and returns the processes
    (worker 0 is left to notice); otherwise waits for both to finish."""
    script = tmp_path / "train_worker.py"
    script.write_text(TRAIN_WORKER)
    processes = start_workers(lambda index: [script, out, epochs], 2, tmp_path, tag=tag)
    if kill_after_checkpoint is None:
        wait_all(processes, timeout=300)
        return processes
    pointer = os.path.join(out, "backup", "checkpoint.json")
    deadline = time.monotonic() + 240
    while not os.path.exists(pointer):
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in processes):
            kill_all(processes)
            raise AssertionError("no checkpoint appeared:\n" + _tail(processes[0][1]))
        time.sleep(0.1)
    time.sleep(kill_after_checkpoint)
    processes[1][0].kill()
    return processes
