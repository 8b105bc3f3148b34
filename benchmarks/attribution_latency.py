"""Latency of each attribution method against the predict graph: ONNX Runtime vs TensorFlow.

    python benchmarks/attribution_latency.py [--models resnet44 resnet50 mobilenetv2 efficientnetb0]
                                             [--repeats 3] [--out figures.json]

For each classifier of benchmarks/explain_onnx.py (random weights, 10
classes; ResNet-44 at 32×32, the keras.applications networks at 224×224) it
exports the SavedModel and the ONNX graphs with every attribution method at
the card's defaults (SmoothGrad 32 samples, Integrated Gradients 64 steps),
then times one image toward one class (batch 1):
- ONNX Runtime (CPU provider) running `<name>-1-predict.onnx` and each
  `<name>-1-<method>.onnx` with only `images` and `targets` given;
- TensorFlow running the SavedModel's `serving_default` and each method's
  signature with the card's settings.
Each side runs in a fresh process: one warm-up call, then the median of
`--repeats` calls. The last line of output is the JSON of every figure.
"""

import os
import statistics
import time

import explain_onnx
import numpy as np
from explain_onnx import MODELS, build, span

from keras_robust.common import onednn as _onednn  # noqa: F401  (before TensorFlow: its oneDNN kernels on, as users get them)

TARGET = 3
ENDPOINTS = ("predict", "saliency", "smoothgrad", "integrated_gradients", "grad_cam")


def part_export(name, folder):
    """Writes the SavedModel and every ONNX graph of `name`; returns the export time."""
    from keras_robust.export import export_model

    model, _ = build(name)
    start = time.perf_counter()
    export_model(model, folder, name=name)
    return {"export_s": time.perf_counter() - start}


def part_onnx(name, folder, repeats):
    import onnxruntime

    from keras_robust.export import read_card

    card = read_card(os.path.join(folder, name))
    images = _image(card)
    times = {}
    for endpoint in ENDPOINTS:
        path = os.path.join(folder, name, card["files"][f"onnx_{endpoint}"])
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {"images": images} if endpoint == "predict" else {"images": images, "targets": _targets()}
        times[endpoint] = _median_s(lambda: session.run(None, feed), repeats)  # noqa: B023 (called at once)
    return times


def part_tensorflow(name, folder, repeats):
    import tensorflow as tf

    from keras_robust.export import read_card
    from keras_robust.export.card import signature_defaults

    card = read_card(os.path.join(folder, name))
    loaded = tf.saved_model.load(os.path.join(folder, name, str(card["version"])))
    images = _image(card)
    times = {}
    for endpoint in ENDPOINTS:
        signature = "serving_default" if endpoint == "predict" else endpoint
        feed = {"images": images} if endpoint == "predict" else {"images": images, "targets": _targets()}
        for setting, value in signature_defaults(card, signature).items():
            feed[setting] = _setting(setting, value, images)
        call = loaded.signatures[signature]
        times[endpoint] = _median_s(lambda: call(**feed), repeats)  # noqa: B023 (called at once)
    return times


def _image(card):
    shape = card["input"]["shape"][1:]
    return np.random.default_rng(0).random((1, *shape), dtype="float32")


def _targets():
    return np.array([TARGET], np.int32)


def _setting(name, value, images):
    if name == "baseline":
        return np.full_like(images, value)
    return np.array([value], np.float32 if isinstance(value, float) else np.int32)


def _median_s(call, repeats):
    return statistics.median(explain_onnx.timed(call, repeats)[1])


PARTS = {"export": part_export, "onnx": part_onnx, "tensorflow": part_tensorflow}


def measure(name, repeats):
    """Every figure of one model, each part in a fresh process."""
    figures = explain_onnx.part_outputs(__file__, name, repeats)
    return {"image_size": MODELS[name][1], "export_s": figures["export"]["export_s"],
            "onnx_s": figures["onnx"], "tensorflow_s": figures["tensorflow"]}


def markdown(figures, machine):
    lines = [
        f"{machine}; one image (batch 1) toward one class; SmoothGrad {_default('smoothgrad', 'samples')} samples, "
        f"Integrated Gradients {_default('integrated_gradients', 'steps')} steps (the card's defaults); random "
        "weights, 10 classes; median of the timed calls after one warm-up; each side in its own process.",
        "",
        "| model | input | endpoint | ONNX Runtime | × predict | TensorFlow | × predict | ONNX / TF time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in figures.items():
        onnx_s, tf_s = f["onnx_s"], f["tensorflow_s"]
        for endpoint in ENDPOINTS:
            lines.append(
                f"| {name} | {f['image_size']}×{f['image_size']} | {endpoint} | {_duration(onnx_s[endpoint])} "
                f"| {onnx_s[endpoint] / onnx_s['predict']:.1f} | {_duration(tf_s[endpoint])} "
                f"| {tf_s[endpoint] / tf_s['predict']:.1f} | {onnx_s[endpoint] / tf_s[endpoint]:.2f} |"
            )
    return "\n".join(lines + ["", summary(figures)])


def summary(figures):
    """The table's ranges in two sentences."""
    def over_predict(engine, endpoint):
        return [f[f"{engine}_s"][endpoint] / f[f"{engine}_s"]["predict"] for f in figures.values()]

    costs = ", ".join(f"{endpoint} {span(over_predict('onnx', endpoint), '.1f')}×" for endpoint in ENDPOINTS[1:])
    ratios = {endpoint: [f["onnx_s"][endpoint] / f["tensorflow_s"][endpoint] for f in figures.values()]
              for endpoint in ENDPOINTS}
    each = ", ".join(f"{endpoint} {span(values, '.2f')}" for endpoint, values in ratios.items())
    return (f"In ONNX Runtime, per image, against a prediction: {costs}. ONNX Runtime's time over TensorFlow's: "
            f"{each}.")


def _default(method, setting):
    from keras_robust.export.card import ATTRIBUTION_DEFAULTS

    return ATTRIBUTION_DEFAULTS[method][setting]


def _duration(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    explain_onnx.main(__doc__, PARTS, measure, markdown)
