"""Operators that move values without changing them: reshapes, transposes,
concatenation and splits, slices, pads, gathers, tiles, and Resize.

The selection operators (Slice, Pad, Gather, Tile) share one general rule:
run the operator on a map of flat positions, then add each output's
gradient into the position it came from. Slice and Pad also have a direct
rule (a Pad, a Slice) for the common case of constant bounds.
"""

import numpy as np

from keras_robust.export.autodiff.rules.pooling import scatter_add
from keras_robust.export.autodiff.rules.table import attribute, input_or_empty, only_first_input, rule


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", refuse=only_first_input)
def _reshape(emit, node, grads, wanted):
    return [emit("Reshape", grads[0], emit("Shape", node.input[0]))]


@rule("Transpose")
def _transpose(emit, node, grads, wanted):
    perm = attribute(node, "perm") or list(reversed(range(emit.rank(node.input[0]))))
    return [emit("Transpose", grads[0], perm=[int(i) for i in np.argsort(perm)])]


@rule("Expand", refuse=only_first_input)
def _expand(emit, node, grads, wanted):
    return [emit.sum_to(grads[0], emit.static_dims(node.output[0]), node.input[0])]


def _axis_sizes(emit, names, axis):
    """Each value's size along `axis`, as an int64 tensor."""
    sizes = [emit.static_dims(name)[axis] for name in names]
    if all(isinstance(size, int) for size in sizes):
        return emit.ints(sizes)
    return emit("Concat", *[emit("Slice", emit("Shape", name), emit.ints([axis]), emit.ints([axis + 1]))
                            for name in names], axis=0)


@rule("Concat")
def _concat(emit, node, grads, wanted):
    axis = attribute(node, "axis") % emit.rank(node.output[0])
    parts = emit("Split", grads[0], _axis_sizes(emit, node.input, axis), axis=axis, outputs=len(node.input))
    return [parts] if len(node.input) == 1 else list(parts)


@rule("Split")
def _split(emit, node, grads, wanted):
    axis = attribute(node, "axis", 0) % emit.rank(node.input[0])
    parts = [g if g is not None else emit.zeros_like(y) for g, y in zip(grads, node.output)]
    return [emit("Concat", *parts, axis=axis)]


def through_positions(emit, node, g, replace=None, extra_slot=False):
    """The general selection rule: `node` run on flat positions, then a scatter-add.

    `replace` maps an input index to a name to feed there instead (Pad's
    constant value becomes the dummy slot). With `extra_slot`, position
    `size` stands for "no input value" and is dropped.
    """
    x = node.input[0]
    size = emit("Size", x)
    positions = emit("Reshape", emit("Range", emit.constant(0, np.int64), size, emit.constant(1, np.int64)),
                     emit("Shape", x))
    inputs = [positions] + list(node.input[1:])
    for index, name in (replace or {}).items():
        inputs += [""] * (index + 1 - len(inputs))
        inputs[index] = name
    selected = emit.like(node, *inputs)
    slots = emit("Add", size, emit.constant(1, np.int64)) if extra_slot else None
    return scatter_add(emit, selected, g, x, slots=slots)


def _constant(emit, node, index):
    """The value of optional input `index` if it is a constant, else None."""
    name = input_or_empty(node, index)
    return None if not name else emit.constants.get(name)


def _slice_bounds(emit, node):
    """`(begin pads, end pads)` per axis when the slice has constant bounds and unit steps."""
    dims = emit.static_dims(node.input[0])
    starts, ends = _constant(emit, node, 1), _constant(emit, node, 2)
    axes, steps = _constant(emit, node, 3), _constant(emit, node, 4)
    if starts is None or ends is None or any(not isinstance(d, int) for d in dims):
        return None
    if (input_or_empty(node, 3) and axes is None) or (input_or_empty(node, 4) and steps is None):
        return None
    axes = range(len(starts)) if axes is None else [int(a) % len(dims) for a in axes]
    if steps is not None and np.any(steps != 1):
        return None
    begin, end = [0] * len(dims), [0] * len(dims)
    for axis, start, stop in zip(axes, starts, ends):
        size = dims[axis]
        start, stop = (int(np.clip(v + size if v < 0 else v, 0, size)) for v in (start, stop))
        begin[axis], end[axis] = start, size - max(stop, start)
    return begin, end


@rule("Slice", refuse=only_first_input)
def _slice(emit, node, grads, wanted):
    bounds = _slice_bounds(emit, node)
    if bounds is None:
        return [through_positions(emit, node, grads[0])]
    return [emit("Pad", grads[0], emit.ints(bounds[0] + bounds[1]))]


def _pad_bounds(emit, node):
    """`(starts, axes)` of the slice that undoes a constant pad by non-negative amounts."""
    pads = _constant(emit, node, 1)
    axes = _constant(emit, node, 3)
    if attribute(node, "mode", "constant") != "constant" or pads is None:
        return None
    if (input_or_empty(node, 3) and axes is None) or np.any(pads < 0):
        return None
    rank = emit.rank(node.input[0])
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    return [int(p) for p in pads[:len(axes)]], axes


@rule("Pad", refuse=only_first_input)
def _pad(emit, node, grads, wanted):
    bounds = _pad_bounds(emit, node)
    x = node.input[0]
    if bounds is None:
        if attribute(node, "mode", "constant") != "constant":
            return [through_positions(emit, node, grads[0])]
        # Padded positions read the dummy slot `size`, which is dropped.
        return [through_positions(emit, node, grads[0], replace={2: emit("Size", x)}, extra_slot=True)]
    starts, axes = bounds
    ends = emit("Add", emit.ints(starts), emit("Gather", emit("Shape", x), emit.ints(axes)))
    return [emit("Slice", grads[0], emit.ints(starts), ends, emit.ints(axes))]


@rule("Gather", "GatherElements", "GatherND", "Tile", refuse=only_first_input)
def _gather(emit, node, grads, wanted):
    return [through_positions(emit, node, grads[0])]


def _refuse_resize(emit, node, wanted):
    reason = only_first_input(emit, node, wanted)
    if reason:
        return reason
    dims = emit.static_dims(node.input[0]) + emit.static_dims(node.output[0])
    if any(not isinstance(d, int) for d in dims):
        return "a size shape inference could not fix"
    if attribute(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return "coordinate_transformation_mode='tf_crop_and_resize'"
    if attribute(node, "keep_aspect_ratio_policy", "stretch") != "stretch" or attribute(node, "axes"):
        return "keep_aspect_ratio_policy or axes"
    if _constant(emit, node, 2) is None and _constant(emit, node, 3) is None:
        return "scales or sizes computed at run time"
    if emit.static_dims(node.input[0])[0] != emit.static_dims(node.output[0])[0]:
        return "resizing the batch axis"
    return None


@rule("Resize", refuse=_refuse_resize)
def _resize(emit, node, grads, wanted):
    """Resize acts on each axis separately, so its gradient is one matrix per resized axis."""
    in_dims, out_dims = emit.static_dims(node.input[0]), emit.static_dims(node.output[0])
    scales = _constant(emit, node, 2)
    g = grads[0]
    for axis in range(1, len(in_dims)):
        n, m = in_dims[axis], out_dims[axis]
        scale = m / n if scales is None or scales.size == 0 else float(scales[axis])
        if n == m and scale == 1.0:
            continue
        matrix = resize_matrix(node, len(in_dims), axis, n, scale)
        perm = [a for a in range(len(in_dims)) if a != axis] + [axis]
        moved = emit("MatMul", emit("Transpose", g, perm=perm), emit.constant(matrix))
        g = emit("Transpose", moved, perm=[int(i) for i in np.argsort(perm)])
    return [g]


def resize_matrix(node, rank, axis, size, scale):
    """`(out, in)` matrix of `node`'s Resize along `axis`, found by resizing unit vectors."""
    import onnx
    import onnxruntime
    from onnx import helper

    shape = [1] * rank
    shape[0], shape[axis] = size, size
    basis = np.zeros(shape, np.float32)
    for i in range(size):
        index = [0] * rank
        index[0], index[axis] = i, i
        basis[tuple(index)] = 1.0
    scales = np.ones(rank, np.float32)
    scales[axis] = scale
    probe = helper.make_node("Resize", ["x", "", "scales"], ["y"])
    probe.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [probe], "resize_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(scales, "scales")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (resized,) = session.run(None, {"x": basis})
    return np.moveaxis(resized, axis, 1).reshape(size, -1).T.copy()
