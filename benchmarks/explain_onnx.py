"""Explanation latency, file size and peak memory: the ONNX explain graph vs the TensorFlow explainer.

    python benchmarks/explain_onnx.py [--models resnet44 resnet50 mobilenetv2 efficientnetb0]
                                      [--repeats 3] [--out figures.json]

For each classifier (random weights, 10 classes; ResNet-44 at 32×32, the
keras.applications networks at 224×224) it explains 1 image toward 10
targets, 35 steps, ρ 0.1, overshoot 5 (one batch of 10):
- ONNX Runtime (CPU provider) running `<name>-1-explain.onnx` as written by
  `export_model(..., formats=("onnx",))`;
- TensorFlow running `AdversarialExplainer.explain`, the library's own path.
Each side runs in a fresh process: one warm-up call, then the median of
`--repeats` calls, and the process's peak resident memory. It also prints the
two graphs' sizes, how far the two explanations are apart, and the time and
peak resident memory of the export itself (every ONNX graph, the attribution
methods' included, in a process that builds the model and exports it). The last line
of output is the JSON of every figure.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)

MODELS = {
    "resnet44": ("keras_robust.resnet", 32),
    "resnet50": ("ResNet50", 224),
    "mobilenetv2": ("MobileNetV2", 224),
    "efficientnetb0": ("EfficientNetB0", 224),
    "vgg16": ("VGG16", 224),  # 540 MB of weights: the export's memory (--part export); not measured by default
}
DEFAULT_MODELS = ("resnet44", "resnet50", "mobilenetv2", "efficientnetb0")
TARGETS, STEPS, RHO, OVERSHOOT = 10, 35, 0.1, 5.0


def build(name):
    import keras

    import keras_robust

    constructor, size = MODELS[name]
    keras.utils.set_random_seed(0)
    if constructor == "keras_robust.resnet":
        return keras_robust.resnet(44), size
    factory = getattr(keras.applications, constructor)
    return factory(weights=None, classes=10, classifier_activation=None, input_shape=(size, size, 3)), size


def inputs(size):
    image = np.random.default_rng(0).random((1, size, size, 3), dtype="float32")
    return np.repeat(image, TARGETS, axis=0), np.arange(TARGETS, dtype=np.int32)


def part_export(name, folder):
    """Writes the Keras model and its ONNX graphs (every attribution method's included); returns sizes, export
    time and the process's peak memory."""
    from keras_robust.export import export_model

    model, _ = build(name)
    model.save(os.path.join(folder, "model.keras"))
    start = time.perf_counter()
    paths = export_model(model, folder, name=name, formats=("onnx",), steps=STEPS, rho=RHO, overshoot=OVERSHOOT)
    return {"export_s": time.perf_counter() - start, "export_peak_mb": _peak_rss_mb(),
            "predict_mb": os.path.getsize(paths["onnx_predict"]) / 2**20,
            "explain_mb": os.path.getsize(paths["onnx_explain"]) / 2**20}


def part_onnx(name, folder, repeats):
    import onnxruntime

    session = onnxruntime.InferenceSession(os.path.join(folder, name, f"{name}-1-explain.onnx"),
                                           providers=["CPUExecutionProvider"])
    images, targets = inputs(MODELS[name][1])
    call = lambda: session.run(["delta"], {"images": images, "targets": targets})[0]  # noqa: E731
    delta, times = timed(call, repeats)
    np.save(os.path.join(folder, "onnx_delta.npy"), delta)
    return {"latency_s": statistics.median(times), "peak_rss_mb": _peak_rss_mb()}


def part_tensorflow(name, folder, repeats):
    import keras

    import keras_robust

    model = keras.saving.load_model(os.path.join(folder, "model.keras"), compile=False)
    explainer = keras_robust.AdversarialExplainer(model, rho=RHO, steps=STEPS, overshoot=OVERSHOOT,
                                                  sanity_check=False)
    images, targets = inputs(MODELS[name][1])
    call = lambda: np.asarray(explainer.explain(images, targets[:, None]).delta[:, 0])  # noqa: E731
    delta, times = timed(call, repeats)
    onnx_delta = np.load(os.path.join(folder, "onnx_delta.npy"))
    return {"latency_s": statistics.median(times), "peak_rss_mb": _peak_rss_mb(),
            "max_abs_diff_delta": float(np.max(np.abs(delta - onnx_delta)))}


def timed(call, repeats):
    result = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return result, times


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PARTS = {"export": part_export, "onnx": part_onnx, "tensorflow": part_tensorflow}


def part_outputs(script, name, repeats):
    """`{part: its JSON}` of `script`'s export, onnx and tensorflow parts for model `name`, each in a fresh
    process, in one temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        figures = {}
        for part in ("export", "onnx", "tensorflow"):
            output = subprocess.run(
                [sys.executable, script, "--part", part, name, folder, str(repeats)], check=True,
                capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            )
            figures[part] = json.loads(output.stdout.strip().splitlines()[-1])
    return figures


def measure(name, repeats):
    """Every figure of one model, each part in a fresh process."""
    figures = part_outputs(__file__, name, repeats)
    return {
        "onnx_s": figures["onnx"]["latency_s"], "tensorflow_s": figures["tensorflow"]["latency_s"],
        "onnx_peak_mb": figures["onnx"]["peak_rss_mb"], "tensorflow_peak_mb": figures["tensorflow"]["peak_rss_mb"],
        "predict_mb": figures["export"]["predict_mb"], "explain_mb": figures["export"]["explain_mb"],
        "export_s": figures["export"]["export_s"], "export_peak_mb": figures["export"]["export_peak_mb"],
        "max_abs_diff_delta": figures["tensorflow"]["max_abs_diff_delta"],
        "image_size": MODELS[name][1],
    }


def markdown(figures, machine):
    lines = [
        f"{machine}; 1 image × {TARGETS} targets × {STEPS} steps, ρ {RHO}, overshoot {OVERSHOOT:g}; "
        "random weights, 10 classes; median of the timed calls after one warm-up; each side in its own process.",
        "",
        "| model | input | ONNX Runtime | TensorFlow | ONNX / TF time | predict graph | explain graph "
        "| peak memory ONNX / TF | ONNX export: time, peak memory | max \\|δ ONNX − δ TF\\| |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in figures.items():
        lines.append(
            f"| {name} | {f['image_size']}×{f['image_size']} | {f['onnx_s']:.2f} s | {f['tensorflow_s']:.2f} s "
            f"| {f['onnx_s'] / f['tensorflow_s']:.2f} | {f['predict_mb']:.1f} MB | {f['explain_mb']:.1f} MB "
            f"| {f['onnx_peak_mb']:.0f} / {f['tensorflow_peak_mb']:.0f} MB | {f['export_s']:.0f} s, "
            f"{f['export_peak_mb']:.0f} MB "
            f"| {f['max_abs_diff_delta']:.1e} |"
        )
    return "\n".join(lines + ["", summary(figures)])


def summary(figures):
    """The table's ranges in one sentence."""
    time = [f["onnx_s"] / f["tensorflow_s"] for f in figures.values()]
    memory = [f["onnx_peak_mb"] / f["tensorflow_peak_mb"] for f in figures.values()]
    extra = [f["explain_mb"] - f["predict_mb"] for f in figures.values()]
    heaviest = max(figures, key=lambda name: figures[name]["export_peak_mb"])
    return (f"ONNX Runtime took {span(time, '.2f')} of TensorFlow's time per explanation and {span(memory, '.2f')} "
            f"of its peak memory; each explain graph is its predict graph plus {span(extra, '.1f')} MB; exporting "
            f"every ONNX graph peaked at {figures[heaviest]['export_peak_mb']:.0f} MB at most ({heaviest}).")


def span(values, form):
    """`low–high` of `values` in `form`, or one number when they agree."""
    low, high = format(min(values), form), format(max(values), form)
    return low if low == high else f"{low}–{high}"


def main(description=__doc__, parts=PARTS, measure=measure, markdown=markdown):
    """The command line of this benchmark, and of another built the same way (`attribution_latency`)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON of the figures here")
    parser.add_argument("--part", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        part, name, folder, repeats = args.part
        arguments = (name, folder) if part == "export" else (name, folder, int(repeats))
        print(json.dumps(parts[part](*arguments)))
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_robust.common.machine import cpu_summary

    figures = {}
    for name in args.models:
        figures[name] = measure(name, args.repeats)
        print(name, json.dumps(figures[name]), flush=True)
    result = {"machine": cpu_summary(), "figures": figures, "markdown": markdown(figures, cpu_summary())}
    print(result["markdown"])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as file:
            json.dump(result, file, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
