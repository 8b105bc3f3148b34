"""Linear operators with weights: Conv, ConvTranspose, MatMul, Gemm.

Only the gradient toward the data input is written: a classifier's weights
are constants of the exported graph.
"""

import numpy as np

from keras_robust.export.autodiff.rules.table import attribute, input_or_empty, only_first_input, rule


def spatial_padding(emit, node, in_dims, out_dims, kernel, strides, dilations):
    """`(begin, end)` pads per spatial axis, explicit whatever `auto_pad` says."""
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(attribute(node, "pads", [0] * 2 * len(kernel)))
        return pads[:len(kernel)], pads[len(kernel):]
    if auto_pad == "VALID":
        return [0] * len(kernel), [0] * len(kernel)
    begin, end = [], []
    for n, m, k, s, d in zip(in_dims, out_dims, kernel, strides, dilations):
        total = max((m - 1) * s + (k - 1) * d + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin, end


def transposed_padding(in_dims, out_dims, kernel, strides, dilations, begin):
    """End pads and output padding that make a transposed window sum land on `in_dims`.

    A ConvTranspose of an `out_dims` map gives `(m − 1)s + (k − 1)d + 1 −
    begin − end + output_padding` values per axis; the windows of the
    forward op may stop short of the input's end (floor mode) or run past
    it (padding, ceil mode), which the end pad or output padding absorbs.
    """
    end, extra = [], []
    for n, m, k, s, d, b in zip(in_dims, out_dims, kernel, strides, dilations, begin):
        reach = (m - 1) * s + (k - 1) * d + 1 - b - n
        end.append(max(reach, 0))
        extra.append(max(-reach, 0))
    return end, extra


def _conv_geometry(emit, node, weight):
    rank = emit.rank(node.input[0])
    kernel = list(emit.static_dims(weight)[2:])
    strides = list(attribute(node, "strides", [1] * (rank - 2)))
    dilations = list(attribute(node, "dilations", [1] * (rank - 2)))
    return kernel, strides, dilations


def _refuse_conv(emit, node, wanted):
    reason = only_first_input(emit, node, wanted)
    if reason:
        return reason
    dims = emit.static_dims(node.input[0])[2:] + emit.static_dims(node.output[0])[2:]
    if any(not isinstance(d, int) for d in dims):
        return "a spatial size shape inference could not fix"
    return None


@rule("Conv", refuse=_refuse_conv)
def _conv(emit, node, grads, wanted):
    """The input gradient of a convolution is the transposed convolution.

    At stride 1 it is also a convolution with the kernel flipped and its
    channel axes swapped, which ONNX Runtime runs faster than ConvTranspose
    (depthwise ones most); the flipped kernel is computed from the weights
    in the graph, so the file holds them once.
    """
    x, weight, y = node.input[0], node.input[1], node.output[0]
    kernel, strides, dilations = _conv_geometry(emit, node, weight)
    in_dims, out_dims = emit.static_dims(x)[2:], emit.static_dims(y)[2:]
    begin, end = spatial_padding(emit, node, in_dims, out_dims, kernel, strides, dilations)
    reach = [(k - 1) * d for k, d in zip(kernel, dilations)]
    if all(s == 1 for s in strides) and all(r >= b and r >= e for r, b, e in zip(reach, begin, end)):
        flipped = _flipped_kernel(emit, weight, attribute(node, "group", 1))
        pads = [r - b for r, b in zip(reach, begin)] + [r - e for r, e in zip(reach, end)]
        return [emit("Conv", grads[0], flipped, kernel_shape=kernel, dilations=dilations,
                     group=attribute(node, "group", 1), pads=pads)]
    end, extra = transposed_padding(in_dims, out_dims, kernel, strides, dilations, begin)
    extra_attributes = {"output_padding": extra} if any(extra) else {}
    return [emit(
        "ConvTranspose", grads[0], weight, kernel_shape=kernel, strides=strides, dilations=dilations,
        group=attribute(node, "group", 1), pads=begin + end, **extra_attributes,
    )]


def _flipped_kernel(emit, weight, group):
    """`W[o, i, k…]` of each group as `W[i, o, −k…]`: the kernel of the transposed convolution."""
    out_channels, in_per_group, *kernel = emit.static_dims(weight)
    spatial = list(range(2, 2 + len(kernel)))
    grouped = emit("Reshape", weight, emit.ints([group, out_channels // group, in_per_group, *kernel]))
    swapped = emit("Transpose", grouped, perm=[0, 2, 1] + [a + 1 for a in spatial])
    merged = emit("Reshape", swapped, emit.ints([group * in_per_group, out_channels // group, *kernel]))
    last = np.iinfo(np.int64).min
    return emit("Slice", merged, emit.ints([-1] * len(kernel)), emit.ints([last] * len(kernel)),
                emit.ints(spatial), emit.ints([-1] * len(kernel)))


@rule("ConvTranspose", refuse=_refuse_conv)
def _conv_transpose(emit, node, grads, wanted):
    """The input gradient of a transposed convolution is the convolution."""
    x, weight, y = node.input[0], node.input[1], node.output[0]
    kernel, strides, dilations = _conv_geometry(emit, node, weight)
    in_dims, out_dims = emit.static_dims(x)[2:], emit.static_dims(y)[2:]
    if attribute(node, "auto_pad", "NOTSET") == "NOTSET" and attribute(node, "output_shape") is None:
        pads = list(attribute(node, "pads", [0] * 2 * len(kernel)))
    else:
        output_padding = attribute(node, "output_padding", [0] * len(kernel))
        totals = [s * (n - 1) + p + (k - 1) * d + 1 - m
                  for n, m, k, s, d, p in zip(in_dims, out_dims, kernel, strides, dilations, output_padding)]
        upper = attribute(node, "auto_pad", "NOTSET") == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in totals]
        pads = begin + [t - b for t, b in zip(totals, begin)]
    return [emit(
        "Conv", grads[0], weight, kernel_shape=kernel, strides=strides, dilations=dilations,
        group=attribute(node, "group", 1), pads=pads,
    )]


def _swap_last(emit, name, rank):
    return emit("Transpose", name, perm=list(range(rank - 2)) + [rank - 1, rank - 2])


def _refuse_matmul(emit, node, wanted):
    if min(emit.rank(node.input[0]), emit.rank(node.input[1])) < 2:
        return "a one-dimensional operand"
    return None


@rule("MatMul", refuse=_refuse_matmul)
def _matmul(emit, node, grads, wanted):
    a, b = node.input
    g, out = grads[0], emit.static_dims(node.output[0])
    result = [None, None]
    if wanted[0]:
        a_dims = out[:-2] + emit.static_dims(a)[-2:]
        result[0] = emit.sum_to(emit("MatMul", g, _swap_last(emit, b, emit.rank(b))), a_dims, a)
    if wanted[1]:
        b_dims = out[:-2] + emit.static_dims(b)[-2:]
        result[1] = emit.sum_to(emit("MatMul", _swap_last(emit, a, emit.rank(a)), g), b_dims, b)
    return result


@rule("Gemm")
def _gemm(emit, node, grads, wanted):
    """Y = α A′B′ + βC, with A′ = Aᵀ if transA and B′ = Bᵀ if transB."""
    a, b = node.input[:2]
    c = input_or_empty(node, 2)
    g = grads[0]
    alpha, beta = attribute(node, "alpha", 1.0), attribute(node, "beta", 1.0)
    trans_a, trans_b = attribute(node, "transA", 0), attribute(node, "transB", 0)
    result = [None, None, None]
    if wanted[0]:
        grad = emit("Gemm", g, b, alpha=alpha, transB=1 - trans_b)  # ∂/∂A′ = α g B′ᵀ
        result[0] = emit("Transpose", grad) if trans_a else grad
    if wanted[1]:
        grad = emit("Gemm", a, g, alpha=alpha, transA=1 - trans_a)  # ∂/∂B′ = α A′ᵀ g
        result[1] = emit("Transpose", grad) if trans_b else grad
    if c and len(wanted) > 2 and wanted[2]:
        result[2] = emit.sum_to(emit("Mul", g, emit.constant(beta)), emit.static_dims(node.output[0]), c)
    return result
