"""Normalisation in inference mode: BatchNormalization, LayerNormalization."""

import numpy as np

from keras_robust.export.autodiff.rules.table import attribute, only_first_input, rule


def _refuse_batch_norm(emit, node, wanted):
    if attribute(node, "training_mode", 0):
        return "training mode (batch statistics); export the model in inference mode"
    return only_first_input(emit, node, wanted)


@rule("BatchNormalization", refuse=_refuse_batch_norm)
def _batch_norm(emit, node, grads, wanted):
    """y = (x − mean)·scale/√(var + ε) + bias: the gradient is scaled per channel."""
    x, scale, _, _, variance = node.input[:5]
    factor = emit("Div", scale, emit("Sqrt", emit("Add", variance, emit.constant(attribute(node, "epsilon", 1e-5)))))
    shape = [1, -1] + [1] * (emit.rank(x) - 2)
    return [emit("Mul", grads[0], emit("Reshape", factor, emit.ints(shape)))]


def _refuse_layer_norm(emit, node, wanted):
    reason = only_first_input(emit, node, wanted)
    if reason:
        return reason
    if any(not isinstance(d, int) for d in emit.static_dims(node.input[0])[_first_axis(emit, node):]):
        return "normalised axes whose size shape inference could not fix"
    return None


def _first_axis(emit, node):
    return attribute(node, "axis", -1) % emit.rank(node.input[0])


@rule("LayerNormalization", refuse=_refuse_layer_norm)
def _layer_norm(emit, node, grads, wanted):
    """x̂ = (x − μ)/σ over the trailing axes; ∂/∂x = (ĝ − mean ĝ − x̂·mean(ĝ x̂))/σ with ĝ = g·scale."""
    x, scale = node.input[:2]
    first = _first_axis(emit, node)
    axes = list(range(first, emit.rank(x)))
    count = emit.constant(float(np.prod(emit.static_dims(x)[first:])))

    def mean(value):
        return emit("Div", emit.reduce_sum(value, axes), count)

    centred = emit("Sub", x, mean(x))
    variance = mean(emit("Mul", centred, centred))
    inverse = emit("Reciprocal", emit("Sqrt", emit("Add", variance, emit.constant(attribute(node, "epsilon", 1e-5)))))
    normalised = emit("Mul", centred, inverse)
    scaled = emit("Mul", grads[0], scale)
    inner = emit("Sub", emit("Sub", scaled, mean(scaled)), emit("Mul", normalised, mean(emit("Mul", scaled, normalised))))
    return [emit("Mul", inner, inverse)]
