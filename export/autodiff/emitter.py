"""`Emitter`: writes ONNX nodes with fresh names, and constants as initializers."""

import numpy as np
import onnx
from onnx import helper, numpy_helper


class Emitter:
    """Collects the nodes and constants a gradient rule writes.

    Every value gets a fresh name under `prefix`, so nodes written here never
    clash with the forward graph's names, nor with a subgraph's: ONNX forbids
    a subgraph to reuse a name of its outer scope. Constants become
    initializers of the outermost graph (`initializers`), so a Loop body
    refers to them instead of holding copies.

    Example:

    >>> emit = Emitter("grad")
    >>> doubled = emit("Mul", "x", emit.constant(2.0))
    >>> [node.op_type for node in emit.nodes]
    ['Mul']

    Args:
        prefix: The names' common prefix.
        shapes: Optional `{value name: (dims tuple, elem_type)}` of the
            forward graph (from `onnx.shape_inference`), read by rules that
            need a rank or a static size.
        constants: Optional `{initializer name: numpy array}` of the
            forward graph, for rules that need a constant's value (axes,
            pads, slice bounds, resize scales).
    """

    def __init__(self, prefix, shapes=None, constants=None):
        self.prefix = prefix
        self.shapes = shapes or {}
        self.constants = constants or {}
        self.nodes = []
        self.initializers = []
        self._count = 0
        self._constants = {}

    def fresh(self, hint="v"):
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def __call__(self, op_type, *inputs, outputs=1, **attributes):
        """Writes one node; returns its output name (a list if `outputs` > 1)."""
        names = [self.fresh(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(
            op_type, list(inputs), names, name=self.fresh(f"{op_type}_node"), **attributes
        ))
        return names[0] if outputs == 1 else names

    def like(self, node, *inputs, outputs=1):
        """Writes a node of `node`'s type and attributes on other inputs."""
        names = [self.fresh(node.op_type) for _ in range(outputs)]
        copy = helper.make_node(node.op_type, list(inputs), names, name=self.fresh(f"{node.op_type}_node"))
        copy.attribute.extend(node.attribute)
        self.nodes.append(copy)
        return names[0] if outputs == 1 else names

    def constant(self, value, dtype=np.float32):
        """An initializer holding `value`; equal constants are written once."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def ints(self, values):
        """A 1-D int64 constant: axes, shapes, pads and starts."""
        return self.constant(list(values), np.int64)

    def rank(self, name):
        """The static rank of a forward value, or a clear error."""
        return len(self.static_dims(name))

    def static_dims(self, name):
        """The forward value's dims: ints where static, None where symbolic."""
        if name not in self.shapes:
            raise ValueError(
                f"Shape inference did not give the rank of {name!r}, which its derivative "
                "rule needs. Fix the graph's input shape (all but the batch dimension)."
            )
        return self.shapes[name][0]

    def elem_type(self, name):
        return self.shapes[name][1] if name in self.shapes else onnx.TensorProto.FLOAT

    def zeros_like(self, name):
        """Zeros of a forward value's runtime shape and float type."""
        return self("ConstantOfShape", self("Shape", name), value=helper.make_tensor(
            "zero", self.elem_type(name), [1], [0]
        ))

    def sum_to(self, gradient, gradient_dims, name):
        """Sums a broadcast result's `gradient` down to the shape of input `name`.

        `gradient_dims` are the gradient's static dims (None where symbolic).
        Axes that broadcasting added in front, and axes where `name` has a
        static 1 and the gradient does not, are summed; the sum is reshaped
        to `name`'s runtime shape.
        """
        dims = self.static_dims(name)
        lead = len(gradient_dims) - len(dims)
        axes = list(range(lead)) + [
            lead + axis for axis, dim in enumerate(dims) if dim == 1 and gradient_dims[lead + axis] != 1
        ]
        if not axes:
            return gradient
        return self("Reshape", self.reduce_sum(gradient, axes), self("Shape", name))

    def reduce_sum(self, value, axes, keepdims=1):
        return self("ReduceSum", value, self.ints(axes), keepdims=keepdims)
