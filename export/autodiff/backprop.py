"""Reverse-mode differentiation of an ONNX graph, written as more ONNX nodes."""

import onnx

from keras_robust.export.autodiff.rules import RULES

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def path_nodes(nodes, source, target, shapes):
    """The nodes through which `target` depends on `source`, and the values between.

    A value is on the path if it is a float (integer values such as shapes
    and indices carry no gradient), depends on `source` and `target`
    depends on it.

    Returns:
        `(nodes on the path in forward order, set of values on the path)`.
    """
    active, reading = {source}, []
    for node in nodes:
        if any(name in active for name in node.input):
            reading.append(node)
            active.update(
                name for name in node.output
                if name and shapes.get(name, (None, onnx.TensorProto.FLOAT))[1] in FLOAT_TYPES
            )
    needed = {target}
    path = []
    # Only nodes that read the source: a source inside the graph (Grad-CAM's feature maps) has a producer too.
    for node in reversed(reading):
        if any(name in needed and name in active for name in node.output):
            path.append(node)
            needed.update(name for name in node.input if name in active)
    return list(reversed(path)), active & needed


def unsupported(emit, nodes, source, target, display=str):
    """`["OpType node 'name': reason", ...]` for each path node without a derivative here, each node's name
    shown as `display(name)` gives it."""
    path, values = path_nodes(nodes, source, target, emit.shapes)
    problems = []
    for node in path:
        rule = RULES.get(node.op_type)
        if node.domain not in ("", "ai.onnx"):
            reason = f"operator domain {node.domain!r} (only the standard ONNX operators are supported)"
        elif rule is None:
            reason = "no derivative rule for this operator"
        else:
            reason = rule.refuse(emit, node, [name in values for name in node.input])
        if reason:
            problems.append(f"{node.op_type} node {display(node.name or node.output[0])!r}: {reason}")
    return problems


def backpropagate(emit, nodes, source, target, seed):
    """Writes, into `emit`, the gradient of `Σ seed·target` with respect to `source`.

    Args:
        emit: An `Emitter` whose `shapes` cover the forward values.
        nodes: The forward nodes, in topological order.
        source: The value to differentiate with respect to (the images).
        target: The value whose gradient is `seed` (the logits).
        seed: The name of `∂L/∂target`.

    Returns:
        The name of `∂L/∂source`.

    Raises:
        ValueError: naming every node on the path that has no rule here.
    """
    problems = unsupported(emit, nodes, source, target)
    if problems:
        raise ValueError(unsupported_message(problems))
    path, values = path_nodes(nodes, source, target, emit.shapes)
    if source not in values:
        raise ValueError(f"The output {target!r} does not depend on the input {source!r}: no gradient.")
    grads = {target: [seed]}
    for node in reversed(path):
        outputs = [_total(emit, grads.pop(name, None)) for name in node.output]
        wanted = [name in values for name in node.input]
        inputs = RULES[node.op_type].backward(emit, node, outputs, wanted)
        for name, want, grad in zip(node.input, wanted, inputs):
            if want and grad is not None:
                grads.setdefault(name, []).append(grad)
    return _total(emit, grads[source])


def _total(emit, contributions):
    if not contributions:
        return None
    return contributions[0] if len(contributions) == 1 else emit("Sum", *contributions)


def unsupported_message(problems):
    kinds = sorted({problem.split(" ", 1)[0] for problem in problems})
    return (
        f"The explain graph needs the derivative of every operator between the image and the "
        f"logits; these have none here ({', '.join(kinds)}): {'; '.join(problems)}. "
        "docs/export.md lists the supported operators and shows how to add a rule."
    )
