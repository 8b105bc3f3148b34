"""ONNX Runtime vs TensorFlow latency and agreement of the exported endpoints (issue 5).

    python benchmarks/export_latency.py --models runs/standard/model.keras runs/robust/model.keras \
        --data ../shared/data/cifar10-jpeg.tar.gz --out docs/figures/export_latency.json

Exports each model (SavedModel + ONNX) to a temporary folder, then times, with
the same test images (seed-1776 permutation of the test split):
- predict at batch 1 and 32: the SavedModel's `serving_default` signature vs
  the ONNX predict graph in ONNX Runtime (CPU provider);
- explain one image toward all 10 classes (a batch of 10), 35 steps, ρ 0.1:
  the SavedModel's `explain` signature (tape gradient) vs the ONNX explain
  graph (its gradient differentiated from the ONNX graph, keras_robust.export.autodiff).
Each figure is the median of `--repeats` calls after two warm-up calls. It also
prints how far the ONNX outputs are from TensorFlow's on those inputs.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--explain-repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON of the figures")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import onnxruntime as ort
    import tensorflow as tf

    from keras_robust.data import load_dataset
    from keras_robust.evaluation.accuracy_robustness import evaluation_indices
    from keras_robust.export import export_model, read_card

    data = load_dataset(args.data, "test", batch_size=1000)
    images, _ = data.arrays()
    images = images[evaluation_indices(len(images), 32)].astype("float32")
    figures = {}
    for path in args.models:
        name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        model = keras.saving.load_model(path, compile=False)
        with tempfile.TemporaryDirectory() as out:
            export_model(model, out, name=name)
            model_dir = os.path.join(out, name)
            card = read_card(model_dir)
            loaded = tf.saved_model.load(os.path.join(model_dir, "1"))
            sessions = {
                kind: ort.InferenceSession(os.path.join(model_dir, card["files"][f"onnx_{kind}"]),
                                           providers=["CPUExecutionProvider"])
                for kind in ("predict", "explain")
            }
            figures[name] = _measure(loaded, sessions, images, args)
        print(name, json.dumps(figures[name], indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": "2-core CPU VM, no GPU", "data": "JPEG CIFAR-10 test split",
                       "onnxruntime": ort.__version__, "tensorflow": tf.__version__,
                       "models": figures}, f, indent=2)


def _measure(loaded, sessions, images, args):
    result = {}
    for batch in (1, 32):
        x = images[:batch]
        tf_call = lambda: loaded.signatures["serving_default"](images=x)  # noqa: E731
        ort_call = lambda: sessions["predict"].run(None, {"images": x})  # noqa: E731
        result[f"predict_batch{batch}_ms"] = {
            "tensorflow": _median_ms(tf_call, args.repeats),
            "onnxruntime": _median_ms(ort_call, args.repeats),
        }
        names = [o.name for o in sessions["predict"].get_outputs()]
        onnx_logits = dict(zip(names, ort_call()))["logits"]
        result[f"predict_batch{batch}_max_abs_diff_logits"] = float(
            np.max(np.abs(onnx_logits - tf_call()["logits"].numpy())))
    inputs = {
        "images": np.repeat(images[:1], 10, axis=0),
        "targets": np.arange(10, dtype=np.int32),
        "rho": np.full(10, 0.1, np.float32),
        "steps": np.full(10, 35, np.int32),
    }
    tf_call = lambda: loaded.signatures["explain"](**inputs)  # noqa: E731
    ort_call = lambda: sessions["explain"].run(None, inputs)  # noqa: E731
    result["explain_1x10_targets_35_steps_ms"] = {
        "tensorflow": _median_ms(tf_call, args.explain_repeats),
        "onnxruntime": _median_ms(ort_call, args.explain_repeats),
    }
    names = [o.name for o in sessions["explain"].get_outputs()]
    onnx_delta = dict(zip(names, ort_call()))["delta"]
    result["explain_max_abs_diff_delta"] = float(np.max(np.abs(onnx_delta - tf_call()["delta"].numpy())))
    return result


def _median_ms(call, repeats):
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


if __name__ == "__main__":
    main()
