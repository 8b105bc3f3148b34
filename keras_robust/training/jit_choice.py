"""Whether XLA speeds up a training step on this machine, decided by measuring it.

Which is faster depends on the mode and the CPU: on an AVX2 machine XLA's
fusion of element-wise work won most modes, on an AVX-512 one oneDNN's
convolutions without XLA win them all. A short timed probe of
the real step, with and without XLA, decides; the answer is cached per CPU,
library versions and step configuration, so the probe runs once.
"""

import json
import time

import keras
import numpy as np
import tensorflow as tf

from keras_robust.common.atomic import write_atomically
from keras_robust.common.cache import cache_dir
from keras_robust.common.machine import cpu_description
from keras_robust.common.onednn import onednn_enabled

CACHE_FILE = "jit_choice.json"
PROBE_STEPS = 3


def choose_jit_compile(build_model, batch_size, input_shape, num_classes, *, cache=None, log=print):
    """True if XLA makes this training step faster here, from a cached or fresh probe.

    Args:
        build_model: Returns a fresh, uncompiled `RobustModel` of the
            configuration to train (the probe trains throwaway copies).
        batch_size: Examples per step.
        input_shape: `(height, width, channels)`.
        num_classes: K.
        cache: Cache folder (default `keras_robust.common.cache.cache_dir()`).
        log: Where to say what was probed.

    Returns:
        A bool for `compile(jit_compile=...)`.
    """
    sample = build_model()
    key = json.dumps({
        "cpu": cpu_description(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn": onednn_enabled(),
        "step": _step_signature(sample, batch_size, input_shape),
    }, sort_keys=True)
    path = cache_dir(cache) / CACHE_FILE
    known = _read(path)
    if key in known:
        return known[key]["xla"]
    log("Timing a training step with and without XLA (once for this machine and configuration)...")
    seconds = {jit: _time_step(build_model, jit, batch_size, input_shape, num_classes) for jit in (False, True)}
    choice = seconds[True] < seconds[False]
    log(f"XLA {'on' if choice else 'off'}: step {seconds[True]:.3f} s with XLA, {seconds[False]:.3f} s without")
    known[key] = {"xla": choice, "step_s_xla": seconds[True], "step_s_no_xla": seconds[False]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(str(path), json.dumps(known, indent=1))
    return choice


def _step_signature(model, batch_size, input_shape):
    config = model.get_config()
    config.pop("classifier")
    config.pop("name", None)
    return {
        "robust_model": config,
        "parameters": int(sum(np.prod(v.shape) for v in model.classifier.weights)),
        "layers": len(model.classifier.layers),
        "precision": model.classifier.dtype_policy.name,
        "batch_size": batch_size,
        "input_shape": list(input_shape),
    }


def _time_step(build_model, jit, batch_size, input_shape, num_classes):
    """Median of `PROBE_STEPS` steps after one compiling and one warm-up step."""
    model = build_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
    rng = np.random.default_rng(0)
    images = rng.random((batch_size, *input_shape), dtype="float32")
    labels = rng.integers(0, num_classes, batch_size)
    times = []
    for _ in range(PROBE_STEPS + 2):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def _read(path):
    try:
        with open(path, encoding="utf-8") as file:
            known = json.load(file)
        return known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        return {}
