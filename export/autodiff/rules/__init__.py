"""Derivative rules per ONNX operator; importing this package fills `RULES`."""

from keras_robust.export.autodiff.rules import elementwise, linear, normalization, pooling, shape  # noqa: F401
from keras_robust.export.autodiff.rules.table import RULES, Rule, rule

__all__ = ["RULES", "Rule", "rule"]
