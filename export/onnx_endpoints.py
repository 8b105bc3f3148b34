"""The predict and explain ONNX graphs of a prepared classifier, in standard operators only.

The explain graph is the explanation mode of the one attack routine
(`keras_robust.method.attacks.attack_loop`: bounded, targeted, overshoot o,
docs/method.md §4–5) written as an ONNX `Loop`, because an ONNX runtime has
no TensorFlow to run it. Its input gradient comes from
`keras_robust.export.autodiff`, which differentiates the classifier's own
ONNX graph. The tests hold it equal to `AdversarialExplainer`.
"""

import os

import numpy as np
from onnx import helper

from keras_robust.common.atomic import write_atomically
from keras_robust.common.defaults import RMSE_EPSILON
from keras_robust.export.autodiff.backprop import backpropagate
from keras_robust.export.autodiff.classifier import IMAGES
from keras_robust.export.autodiff.emitter import Emitter
from keras_robust.export.graph_parts import (
    BOOL,
    FLOAT,
    INT32,
    INT64,
    batch_size,
    finished_model,
    forward_copy,
    images_input,
    one_hot,
    per_image,
    targets_input,
    value_info,
)


def endpoint_models(classifier, overshoot, defaults):
    """`{"predict": ModelProto, "explain": ModelProto}` of a prepared classifier.

    Inputs and outputs carry the SavedModel signatures' names, in the same
    order, with a dynamic batch dimension. The explain graph's `rho` and
    `steps` are optional: each is also an initializer holding one entry, its
    value in `defaults`, which ONNX Runtime uses when a caller leaves the
    input out. Built in memory, so an unsupported operator stops an export
    before it writes anything.
    """
    classifier.check_differentiable()
    return {"predict": predict_model(classifier), "explain": explain_model(classifier, overshoot, defaults)}


def write_models(models, directory, prefix, file_suffixes=None):
    """Writes `{prefix}-{suffix}.onnx` for each model, each atomically; returns the paths.

    The suffix is the endpoint's name, or `file_suffixes[endpoint]`.
    """
    paths = {}
    for endpoint, model in models.items():
        suffix = (file_suffixes or {}).get(endpoint, endpoint)
        paths[endpoint] = os.path.join(directory, f"{prefix}-{suffix}.onnx")
        write_atomically(paths[endpoint], model.SerializeToString())
    return paths


def predict_model(classifier):
    """`images → logits, probabilities, classes` (that order)."""
    nodes = list(classifier.nodes) + [
        helper.make_node("Identity", [classifier.logits], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["classes"], axis=1, keepdims=0),
    ]
    k = classifier.num_classes
    outputs = [value_info("logits", FLOAT, ["batch", k]), value_info("probabilities", FLOAT, ["batch", k]),
               value_info("classes", INT64, ["batch"])]
    return finished_model(classifier, nodes, [images_input(classifier)], outputs, classifier.initializers, "predict")


def explain_model(classifier, overshoot, defaults):
    """`images, targets[, rho, steps] → explanations, delta, target_confidence, first_met_step, target_is_top`
    (that order).

    `rho` and `steps` are optional: initializers of one entry each hold
    `defaults["rho"]` and `defaults["steps"]`, which a caller's feed
    replaces. One entry serves the whole batch; otherwise one per image.
    """
    emit = Emitter("explain")
    setup = _loop_inputs(emit, classifier, overshoot)
    body, body_constants = _step_graph(classifier, setup)
    delta, first_met = "explain/delta", "explain/first_met"
    emit.nodes.append(helper.make_node(
        "Loop", [setup["last_step"], emit.constant(True, np.bool_), setup["zeros"], setup["never_met"]],
        [delta, first_met], body=body, name="explain/attack_loop",
    ))
    nodes = emit.nodes + [helper.make_node("Add", [IMAGES, delta], ["explanations"]),
                          helper.make_node("Identity", [delta], ["delta"]),
                          helper.make_node("Identity", [first_met], ["first_met_step"])]
    final = forward_copy(classifier, "final/", "explanations")
    nodes += final.nodes
    outcome = Emitter("explain/outcome")
    probabilities = outcome("Softmax", final.logits, axis=1)
    picked = outcome("GatherElements", probabilities, outcome("Unsqueeze", setup["targets"], outcome.ints([1])),
                     axis=1)
    top = outcome("ArgMax", final.logits, axis=1, keepdims=0)
    nodes += outcome.nodes + [helper.make_node("Squeeze", [picked, outcome.ints([1])], ["target_confidence"]),
                              helper.make_node("Equal", [top, setup["targets"]], ["target_is_top"])]
    shape = ["batch", *classifier.image_shape]
    inputs = [images_input(classifier), targets_input(), value_info("rho", FLOAT, ["entries"]),
              value_info("steps", INT32, ["entries"])]
    outputs = [value_info("explanations", FLOAT, shape), value_info("delta", FLOAT, shape),
               value_info("target_confidence", FLOAT, ["batch"]), value_info("first_met_step", INT32, ["batch"]),
               value_info("target_is_top", BOOL, ["batch"])]
    initializers = (list(classifier.initializers) + emit.initializers + body_constants + outcome.initializers
                    + [helper.make_tensor("rho", FLOAT, [1], [float(defaults["rho"])]),
                       helper.make_tensor("steps", INT32, [1], [int(defaults["steps"])])])
    return finished_model(classifier, nodes, inputs, outputs, initializers, "explain")


def _loop_inputs(emit, classifier, overshoot):
    """What every step reads from the outer graph: per-image budgets, schedule, one-hot targets."""
    batch = batch_size(emit)
    steps = emit("Cast", emit("Expand", "steps", batch), to=FLOAT)
    total = emit("Div", emit("Mul", steps, emit("Add", steps, emit.constant(1.0))), emit.constant(2.0))
    rho = emit("Expand", "rho", batch)
    targets = emit("Cast", "targets", to=INT64)
    return {
        "rho": rho,
        "steps": steps,
        # Step i moves ρ·o·(N − i)/(N(N + 1)/2): the steps sum to ρ·o (docs/method.md §4).
        "step_scale": emit("Div", emit("Mul", rho, emit.constant(float(overshoot))), total),
        "last_step": emit("Cast", emit("ReduceMax", "steps", keepdims=0), to=INT64),
        "targets": targets,
        "one_hot": one_hot(emit, classifier, targets),
        "zeros": emit("ConstantOfShape", emit("Shape", IMAGES)),
        "never_met": emit("Expand", emit.constant([-1], np.int32), batch),
    }


def _step_graph(classifier, setup):
    """One step of the explanation attack: the Loop's body, and the constants it reads.

    The constants go to the outer graph, which the body reads by name, so
    each is stored once.
    """
    delta, first_met, x = "step/delta", "step/first_met", "step/images"
    forward = forward_copy(classifier, "step/", x)
    shapes = {forward.rename(name): value for name, value in classifier.shapes.items()}
    shapes[x] = shapes[delta] = classifier.shapes[IMAGES]
    emit = Emitter("step/grad", shapes=shapes, constants=classifier.constants())
    emit.nodes.append(helper.make_node("Add", [IMAGES, delta], [x]))
    # ∂ΣCE/∂logits = softmax(logits) − one_hot(targets); the explanation descends it.
    seed = emit("Sub", emit("Softmax", forward.logits, axis=1), setup["one_hot"])
    gradient = backpropagate(emit, forward.nodes, x, forward.logits, seed)
    ascent = emit("Neg", gradient)
    met = emit("GreaterOrEqual", _rmse(emit, delta, classifier), setup["rho"])
    # As `AttackResult.first_met_step`: the first step that began with RMSE(δ) >= ρ.
    first = emit("And", emit("Less", first_met, emit.constant(0, np.int32)), met)
    emit.nodes.append(helper.make_node("Where", [first, emit("Cast", "step/i", to=INT32), first_met],
                                       ["step/first_met_next"]))
    direction = emit("Where", per_image(emit, met), emit("Neg", delta), ascent)
    norm = emit("Add", _rmse(emit, direction, classifier), emit.constant(RMSE_EPSILON))
    direction = emit("Div", direction, per_image(emit, norm))
    remaining = emit("Max", emit("Sub", setup["steps"], emit("Cast", "step/i", to=FLOAT)), emit.constant(0.0))
    size = emit("Mul", setup["step_scale"], remaining)
    emit.nodes.append(helper.make_node("Add", [delta, emit("Mul", per_image(emit, size), direction)], ["step/next"]))
    emit.nodes.append(helper.make_node("Identity", ["step/go"], ["step/go_next"]))
    image_shape = ["batch", *classifier.image_shape]
    graph = helper.make_graph(
        [emit.nodes[0]] + forward.nodes + emit.nodes[1:], "explain_step",
        [value_info("step/i", INT64, []), value_info("step/go", BOOL, []), value_info(delta, FLOAT, image_shape),
         value_info(first_met, INT32, ["batch"])],
        [value_info("step/go_next", BOOL, []), value_info("step/next", FLOAT, image_shape),
         value_info("step/first_met_next", INT32, ["batch"])],
    )
    return graph, emit.initializers


def _rmse(emit, value, classifier):
    """Per-image RMSE over every axis but the batch (docs/method.md §4)."""
    count = float(np.prod(classifier.image_shape))
    squares = emit.reduce_sum(emit("Mul", value, value), [1, 2, 3], keepdims=0)
    return emit("Sqrt", emit("Div", squares, emit.constant(count)))
