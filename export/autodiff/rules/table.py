"""The one table of derivative rules, keyed by ONNX operator type.

A rule is the operator's vector-Jacobian product written in ONNX operators:
given the gradient of each output, it returns the gradient of each input.
Rules live in the modules of this package by kind of operator and register
here with `@rule("OpType")`.
"""

from onnx import helper

RULES = {}


class Rule:
    """One operator's derivative.

    Attributes:
        backward: `(emit, node, grads, wanted) -> [gradient name or None per
            input]`. `grads` holds one gradient name per output (None where
            none flows back); `wanted[i]` says whether input `i` needs one.
        refuse: `(emit, node, wanted) -> reason or None`: why this node's
            configuration has no derivative here (None: it has).
    """

    def __init__(self, backward, refuse=None):
        self.backward = backward
        self.refuse = refuse or (lambda emit, node, wanted: None)


def rule(*op_types, refuse=None):
    """Registers the decorated backward function for `op_types`."""

    def register(backward):
        for op_type in op_types:
            RULES[op_type] = Rule(backward, refuse)
        return backward

    return register


def attribute(node, name, default=None):
    """The value of `node`'s attribute `name`, decoded, or `default`."""
    for item in node.attribute:
        if item.name == name:
            value = helper.get_attribute_value(item)
            return value.decode() if isinstance(value, bytes) else value
    return default


def input_or_empty(node, index):
    """The name of `node`'s optional input `index`, or "" when it is absent."""
    return node.input[index] if len(node.input) > index else ""


def only_first_input(emit, node, wanted):
    """Refuses a gradient toward any input but the first (weights, shapes, axes)."""
    if any(wanted[1:]):
        names = [name for name, want in zip(node.input[1:], wanted[1:]) if want]
        return f"the gradient toward {', '.join(names)} (only the first input is supported)"
    return None
