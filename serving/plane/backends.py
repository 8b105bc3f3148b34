"""Inference backends: one loaded export version answers predict, explain and the attribution methods.

`OnnxBackend` runs the ONNX graphs with onnxruntime (the default: no
TensorFlow at all, so the server starts fast and small; thread-safe `run`),
`SavedModelBackend` the SavedModel signatures, importing TensorFlow when one
is created. Both are created once per version and shared by every request.
"""

import os

import numpy as np
import onnxruntime

from keras_robust.common.validation import check_choice
from keras_robust.export import read_card
from keras_robust.export.card import ATTRIBUTION_METHODS

KINDS = ("onnx", "savedmodel")
DEVICES = ("cpu", "cuda")
# Each signature's entry in the card's files (`onnx_<endpoint>`).
ENDPOINTS = {"serving_default": "predict", "explain": "explain", **{method: method for method in ATTRIBUTION_METHODS}}
# The onnxruntime memory arenas an explain or attribution run gives back when it ends, per device.
SHRUNK_ARENAS = {"cpu": "cpu:0", "cuda": "cpu:0;gpu:0"}
INPUT_DTYPES = {"images": np.float32, "targets": np.int32, "rho": np.float32, "steps": np.int32,
                "samples": np.int32, "noise": np.float32, "seed": np.int32, "baseline": np.float32}
ONNX_DTYPES = {"tensor(float)": "DT_FLOAT", "tensor(int32)": "DT_INT32", "tensor(int64)": "DT_INT64",
               "tensor(bool)": "DT_BOOL"}


def load_backend(model_dir, version=None, kind="onnx", device="cpu"):
    """Loads one version of the export in `model_dir` (`out_dir/<name>`).

    Args:
        model_dir: A folder holding `model_card.json` and the exported files.
        version: An integer version listed in the card; None for the latest.
        kind: `"onnx"` (onnxruntime) or `"savedmodel"` (TensorFlow).
        device: `"cpu"`, or `"cuda"` (onnxruntime's CUDA provider, which
            needs onnxruntime-gpu; TensorFlow's GPU for the SavedModel).

    Returns:
        An `OnnxBackend` or `SavedModelBackend`.
    """
    check_choice("kind", kind, KINDS)
    check_choice("device", device, DEVICES)
    card = version_card(read_card(model_dir), version)
    backend = OnnxBackend if kind == "onnx" else SavedModelBackend
    return backend(model_dir, card, device)


def version_card(card, version=None):
    """The card of `version` (an int or a digit string; None: the latest)."""
    if version is None:
        return card["versions"][str(max(int(v) for v in card["versions"]))]
    if str(version) not in card["versions"]:
        raise ValueError(
            f"Model {card['name']!r} has no version {version}; the card lists "
            f"{', '.join(sorted(card['versions'], key=int))}. Received: version={version!r}"
        )
    return card["versions"][str(version)]


def _exported_file(model_dir, card, key, kind):
    """The path of `card["files"][key]`, naming the missing format otherwise."""
    relative = card["files"].get(key)
    path = os.path.join(model_dir, relative) if relative else None
    if path is None or not os.path.exists(path):
        raise FileNotFoundError(
            f"Version {card['version']} of {card['name']!r} has no {kind} export "
            f"({key}: {path or 'not exported'}); export that format or serve with the other "
            f"backend. Received: files={card['files']}"
        )
    return path


class _Backend:
    """The endpoints over a subclass's `_run(signature, feeds, run_options)`.

    `run_options` is an `onnxruntime.RunOptions` whose `terminate` flag,
    set from another thread, stops an ONNX run; the SavedModel backend
    cannot be stopped and ignores it.
    """

    def predict(self, images, run_options=None):
        """`images` `(B, H, W, C)` in [0, 1] → `{logits, probabilities, classes}`."""
        return self._run("serving_default", {"images": np.asarray(images, np.float32)}, run_options)

    def explain(self, images, targets, rho, steps, run_options=None):
        """The explanation of docs/method.md §5 → `{explanations, delta, target_confidence, first_met_step,
        target_is_top}` (the last two: each explanation's outcome)."""
        return self.run("explain", dict(images=images, targets=targets, rho=rho, steps=steps), run_options)

    def run(self, signature, inputs, run_options=None):
        """Any signature of the card on `{input name: array}` → `{output name: array}`."""
        return self._run(signature, {name: np.asarray(value, INPUT_DTYPES[name]) for name, value in inputs.items()},
                         run_options)


class OnnxBackend(_Backend):
    """The ONNX graphs in onnxruntime, one session per endpoint.

    onnxruntime's `InferenceSession.run` is thread-safe, so concurrent
    requests share these sessions. The ONNX graphs do not check their inputs:
    callers validate first (`serving.plane.inputs`).
    """

    kind = "onnx"

    def __init__(self, model_dir, card, device="cpu"):
        self.card = card
        self.device = device
        providers = _onnx_providers(device)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # graph-optimisation notices are not actionable
        self._sessions = {
            signature: onnxruntime.InferenceSession(
                _exported_file(model_dir, card, f"onnx_{ENDPOINTS[signature]}", "ONNX"),
                sess_options=options,
                providers=providers,
            )
            for signature in card["signatures"]
        }

    def signature_defs(self):
        """`{signature: {"inputs"|"outputs": {name: (dtype, shape)}}}`, shapes with -1."""
        return {
            signature: {
                # onnxruntime lists optional inputs (rho, steps) apart from the required ones.
                "inputs": _onnx_specs(session.get_inputs() + session.get_overridable_initializers()),
                "outputs": _onnx_specs(session.get_outputs()),
            }
            for signature, session in self._sessions.items()
        }

    def _run(self, signature, feeds, run_options=None):
        session = self._sessions[signature]
        if signature != "serving_default":
            # An explanation's working set (64 images x 35 steps of activations and gradients) would
            # otherwise stay in onnxruntime's arena for good: about 430 MB for a ResNet-8 after a flood.
            run_options = run_options or onnxruntime.RunOptions()
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", SHRUNK_ARENAS[self.device])
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds, run_options)))


def _onnx_providers(device):
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ValueError(
            "device='cuda' needs onnxruntime's CUDAExecutionProvider (pip install "
            f"onnxruntime-gpu); this onnxruntime has {', '.join(available)}. Received: device='cuda'"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _onnx_specs(values):
    return {
        value.name: (ONNX_DTYPES[value.type], [d if isinstance(d, int) else -1 for d in value.shape])
        for value in values
    }


class SavedModelBackend(_Backend):
    """The SavedModel's signatures, called as TF Serving calls them.

    The signatures assert their inputs; callers still validate first so both
    backends answer bad requests alike.
    """

    kind = "savedmodel"

    def __init__(self, model_dir, card, device="cpu"):
        import tensorflow as tf

        self.card = card
        self.device = device
        if device == "cuda" and not tf.config.list_physical_devices("GPU"):
            raise ValueError("device='cuda' needs a GPU visible to TensorFlow; none is. Received: device='cuda'")
        self._device_name = "/GPU:0" if device == "cuda" else "/CPU:0"
        path = _exported_file(model_dir, card, "saved_model", "SavedModel")
        self._model = tf.saved_model.load(path)  # kept: the signatures reference its variables
        self._signatures = {name: self._model.signatures[name] for name in card["signatures"]}

    def signature_defs(self):
        """`{signature: {"inputs"|"outputs": {name: (dtype, shape)}}}`, shapes with -1."""
        return {
            name: {
                "inputs": _tf_specs(function.structured_input_signature[1]),
                "outputs": _tf_specs(function.structured_outputs),
            }
            for name, function in self._signatures.items()
        }

    def _run(self, signature, feeds, run_options=None):
        import tensorflow as tf

        with tf.device(self._device_name):
            outputs = self._signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})
        return {name: value.numpy() for name, value in outputs.items()}


def _tf_specs(specs):
    from tensorflow.core.framework import types_pb2

    return {
        name: (
            types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
            [-1 if d is None else d for d in spec.shape.as_list()],
        )
        for name, spec in specs.items()
    }
