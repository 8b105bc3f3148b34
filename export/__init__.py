"""Export a classifier for TF Serving (SavedModel) and ONNX Runtime.

`export_model(model, out_dir, name, version)` writes a SavedModel in TF
Serving's versioned layout with `serving_default` and `explain` signatures,
ONNX graphs of the same two endpoints, and a model card.
`export_onnx_classifier(path, out_dir, ...)` writes the two ONNX endpoints
and the card for an ONNX image classifier from any framework (PyTorch's
`torch.onnx.export` included). `describe_unsupported` names the operators
of an ONNX classifier that have no derivative rule.

`read_card` needs no TensorFlow, so the ONNX server can read cards without
it; the other names load their modules on first use.
"""

from keras_robust.export.card import read_card
from keras_robust.lazy_loading import lazy_attributes

_LAZY = {
    "FORMATS": "keras_robust.export.exporter",
    "export_model": "keras_robust.export.exporter",
    "export_onnx_classifier": "keras_robust.export.onnx_classifier",
    "describe_unsupported": "keras_robust.export.autodiff",
}

__all__ = ["FORMATS", "describe_unsupported", "export_model", "export_onnx_classifier", "read_card"]


__getattr__, __dir__ = lazy_attributes(globals(), {**_LAZY, "read_card": "keras_robust.export.card"})
