"""Pooling and reductions: MaxPool, AveragePool, the global pools, ReduceMean/Sum/Max."""

import functools

import numpy as np

from keras_robust.export.autodiff.rules.linear import spatial_padding, transposed_padding
from keras_robust.export.autodiff.rules.table import attribute, input_or_empty, rule


def scatter_add(emit, positions, values, like, slots=None):
    """Adds `values` into zeros of `like`'s shape at flat `positions` (int64).

    `slots` (int64 scalar name) is the length of the flat accumulator when it
    must be longer than `like` (a dummy slot for padded positions); the
    extra slots are dropped.
    """
    size = emit("Size", like)
    length = slots or size
    zeros = emit("ConstantOfShape", emit("Reshape", length, emit.ints([1])))
    flat = emit(
        "ScatterElements", zeros, emit("Reshape", positions, emit.ints([-1])),
        emit("Reshape", values, emit.ints([-1])), axis=0, reduction="add",
    )
    if slots is not None:
        flat = emit("Slice", flat, emit.ints([0]), emit("Reshape", size, emit.ints([1])))
    return emit("Reshape", flat, emit("Shape", like))


def _refuse_pool(emit, node, wanted):
    dims = emit.static_dims(node.input[0])[2:] + emit.static_dims(node.output[0])[2:]
    if any(not isinstance(d, int) for d in dims):
        return "a spatial size shape inference could not fix"
    if node.op_type == "AveragePool" and any(d != 1 for d in attribute(node, "dilations", [1])):
        return "dilated average pooling"
    return None


@rule("MaxPool", refuse=_refuse_pool)
def _max_pool(emit, node, grads, wanted):
    """Each window's gradient goes to the position MaxPool's indices name."""
    _, indices = emit.like(node, node.input[0], outputs=2)
    return [scatter_add(emit, indices, grads[0], node.input[0])]


def _pool_geometry(emit, node):
    x, y = node.input[0], node.output[0]
    in_dims, out_dims = emit.static_dims(x)[2:], emit.static_dims(y)[2:]
    kernel = list(attribute(node, "kernel_shape"))
    strides = list(attribute(node, "strides", [1] * len(kernel)))
    ones = [1] * len(kernel)
    begin, end = spatial_padding(emit, node, in_dims, out_dims, kernel, strides, ones)
    return in_dims, out_dims, kernel, strides, begin, end


def window_counts(in_size, out_size, kernel, stride, begin, end, include_pad):
    """How many values each output of one axis averages (ONNX AveragePool)."""
    low, high = (-begin, in_size + end) if include_pad else (0, in_size)
    starts = np.arange(out_size) * stride - begin
    return np.minimum(starts + kernel, high) - np.maximum(starts, low)


@rule("AveragePool", refuse=_refuse_pool)
def _average_pool(emit, node, grads, wanted):
    """Each output's gradient, divided by its window's count, spread over the window."""
    in_dims, out_dims, kernel, strides, begin, end = _pool_geometry(emit, node)
    include_pad = attribute(node, "count_include_pad", 0)
    per_axis = [
        window_counts(n, m, k, s, b, e, include_pad)
        for n, m, k, s, b, e in zip(in_dims, out_dims, kernel, strides, begin, end)
    ]
    counts = functools.reduce(np.multiply.outer, per_axis).reshape([1, 1, *out_dims])
    scaled = emit("Div", grads[0], emit.constant(counts))
    # One channel at a time: a ConvTranspose with a window of ones needs no channel count.
    per_map = emit("Reshape", scaled, emit.ints([-1, 1, *out_dims]))
    ones = [1] * len(kernel)
    pad_end, extra = transposed_padding(in_dims, out_dims, kernel, strides, ones, begin)
    extra_attributes = {"output_padding": extra} if any(extra) else {}
    spread = emit(
        "ConvTranspose", per_map, emit.constant(np.ones([1, 1, *kernel])), kernel_shape=kernel,
        strides=strides, pads=begin + pad_end, **extra_attributes,
    )
    return [emit("Reshape", spread, emit("Shape", node.input[0]))]


def _spatial_count(emit, x):
    return float(np.prod(emit.static_dims(x)[2:]))


@rule("GlobalAveragePool", refuse=_refuse_pool)
def _global_average_pool(emit, node, grads, wanted):
    x = node.input[0]
    spread = emit("Expand", grads[0], emit("Shape", x))
    return [emit("Div", spread, emit.constant(_spatial_count(emit, x)))]


@rule("GlobalMaxPool", refuse=_refuse_pool)
def _global_max_pool(emit, node, grads, wanted):
    x = node.input[0]
    axes = list(range(2, emit.rank(x)))
    return [_share_among_maxima(emit, x, node.output[0], grads[0], axes)]


def _share_among_maxima(emit, x, y_kept, g_kept, axes):
    """The gradient of a max over `axes` (`y_kept`, `g_kept` with kept dims), split evenly among ties."""
    hits = emit("Cast", emit("Equal", x, y_kept), to=1)
    share = emit("Div", g_kept, emit.reduce_sum(hits, axes))
    return emit("Mul", hits, share)


def reduce_axes(emit, node):
    """The static, non-negative axes a Reduce* node reduces over."""
    rank = emit.rank(node.input[0])
    axes = attribute(node, "axes")
    if axes is None and input_or_empty(node, 1):
        axes = emit.constants.get(node.input[1])
        if axes is None:
            return None
    if axes is None or len(axes) == 0:
        if attribute(node, "noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))


def _refuse_reduce(emit, node, wanted):
    return "axes computed at run time" if reduce_axes(emit, node) is None else None


def _kept(emit, node, value):
    """`value` (of the reduced output's shape) with the reduced axes restored as 1s."""
    if attribute(node, "keepdims", 1):
        return value
    return emit("Unsqueeze", value, emit.ints(reduce_axes(emit, node)))


@rule("ReduceMean", "ReduceSum", refuse=_refuse_reduce)
def _reduce_mean_sum(emit, node, grads, wanted):
    x = node.input[0]
    spread = emit("Expand", _kept(emit, node, grads[0]), emit("Shape", x))
    if node.op_type == "ReduceSum":
        return [spread]
    count = emit("Cast", emit("Div", emit("Size", x), emit("Size", node.output[0])), to=1)
    return [emit("Div", spread, count)]


@rule("ReduceMax", "ReduceMin", refuse=_refuse_reduce)
def _reduce_max(emit, node, grads, wanted):
    x = node.input[0]
    axes = reduce_axes(emit, node)
    y, g = _kept(emit, node, node.output[0]), _kept(emit, node, grads[0])
    return [_share_among_maxima(emit, x, y, g, axes)]
