"""Reverse-mode differentiation of ONNX graphs, in standard ONNX operators.

`prepare_classifier` checks an ONNX image classifier from any framework and
wraps it to take NHWC images in [0, 1]; `gradient_model` writes the graph of
`(images, labels) → (logits, ∂ΣCE/∂images)`; `backpropagate` is the
general routine under both, with one derivative rule per ONNX operator type
(`RULES`, filled by the modules of `rules/`).
"""

from keras_robust.export.autodiff.backprop import backpropagate, unsupported
from keras_robust.export.autodiff.classifier import Classifier, prepare_classifier
from keras_robust.export.autodiff.gradient_model import describe_unsupported, gradient_model
from keras_robust.export.autodiff.rules import RULES

__all__ = ["Classifier", "RULES", "backpropagate", "describe_unsupported", "gradient_model",
           "prepare_classifier", "unsupported"]
