"""The attribution methods (`keras_robust.explanations.attributions`) as ONNX graphs of a prepared classifier.

Each graph takes `images` (NHWC, [0, 1]) and `targets` (int32 `[B]`) and
returns `attributions`: `[B, H, W, C]`, Grad-CAM's map `[B, H, W]`. Their
settings are optional inputs, each an initializer holding its default that a
caller's feed replaces, with one entry for the whole batch or one per image
(so a server can batch requests with different settings):

- saliency: none; one gradient;
- SmoothGrad: `samples`, `noise` and `seed`; an ONNX `Loop` over the noisy
  copies, whose draws are `keras_robust.explanations.noise`'s, written here
  in integer operators;
- Integrated Gradients: `steps` and `baseline` (`[1 or B, H, W, C]`); a
  `Loop` over the quadrature points;
- Grad-CAM: none; the feature maps are the classifier's `features` value,
  chosen at export.

Every gradient is the classifier's own graph differentiated by
`keras_robust.export.autodiff`, as in the explain graph. The tests hold each
equal to its Python method.
"""

import numpy as np
from onnx import helper

from keras_robust.common.defaults import ATTRIBUTION_SUFFIXES
from keras_robust.explanations import noise
from keras_robust.export.autodiff.backprop import backpropagate
from keras_robust.export.autodiff.classifier import IMAGES
from keras_robust.export.autodiff.emitter import Emitter
from keras_robust.export.card import ATTRIBUTION_DEFAULTS, ATTRIBUTION_OUTPUTS
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

# The ONNX file of each method: `<name>-<version>-<suffix>.onnx`.
FILE_SUFFIXES = ATTRIBUTION_SUFFIXES
SETTING_TYPES = {"samples": INT32, "noise": FLOAT, "seed": INT32, "steps": INT32}
ATTRIBUTIONS = ATTRIBUTION_OUTPUTS[0]
# Each 16-bit exclusive-or is two lookups in the table of every byte pair's (opset 17 has no bitwise xor).
_BYTE_XOR = np.bitwise_xor.outer(np.arange(256), np.arange(256)).astype(np.uint8).reshape(-1)


def attribution_models(classifier, methods):
    """`{method: ModelProto}` of the classifier for each method in `methods`."""
    builders = {"saliency": saliency_model, "smoothgrad": smoothgrad_model,
                "integrated_gradients": integrated_gradients_model, "grad_cam": grad_cam_model}
    return {method: builders[method](classifier) for method in methods}


def saliency_model(classifier):
    """`images, targets → attributions`: ∂ logit_t / ∂x."""
    emit = Emitter("saliency", shapes=classifier.shapes, constants=classifier.constants())
    gradient = backpropagate(emit, classifier.nodes, IMAGES, classifier.logits, _target_one_hot(emit, classifier))
    nodes = list(classifier.nodes) + emit.nodes + [helper.make_node("Identity", [gradient], [ATTRIBUTIONS])]
    return _attribution_model(classifier, nodes, emit.initializers, "saliency")


def smoothgrad_model(classifier):
    """`images, targets[, samples, noise, seed] → attributions`: the gradient averaged over noisy copies."""
    emit = Emitter("smoothgrad")
    samples = emit("Expand", "samples", batch_size(emit))
    value_range = emit("Sub", _reduce(emit, classifier, "ReduceMax", IMAGES, [1, 2, 3]),
                       _reduce(emit, classifier, "ReduceMin", IMAGES, [1, 2, 3]))
    spread = emit("Mul", per_image(emit, emit("Expand", "noise", batch_size(emit))), value_range)
    keys = emit("Reshape", emit("Cast", emit("Expand", "seed", batch_size(emit)), to=INT64), emit.ints([-1, 1, 1, 1]))
    outer = {"samples": samples, "spread": spread, "keys": keys, "one_hot": _target_one_hot(emit, classifier)}
    body, constants = _loop_body(classifier, "sg", outer, _noisy_copy, _sample_weight)
    trips = emit("Cast", emit("ReduceMax", samples, keepdims=0), to=INT64)
    total = emit("Loop", trips, emit.constant(True, np.bool_), emit("ConstantOfShape", emit("Shape", IMAGES)),
                 body=body)
    emit.nodes.append(helper.make_node("Div", [total, per_image(emit, emit("Cast", samples, to=FLOAT))],
                                       [ATTRIBUTIONS]))
    return _attribution_model(classifier, emit.nodes, emit.initializers + constants, "smoothgrad")


def integrated_gradients_model(classifier):
    """`images, targets[, steps, baseline] → attributions`: `(x − x') ⊙` the gradient's trapezoidal integral."""
    emit = Emitter("integrated_gradients")
    steps = emit("Expand", "steps", batch_size(emit))
    baseline = emit("Expand", "baseline", emit("Shape", IMAGES))
    difference = emit("Sub", IMAGES, baseline)
    outer = {"steps": steps, "intervals": emit("Cast", steps, to=FLOAT), "baseline": baseline,
             "difference": difference, "one_hot": _target_one_hot(emit, classifier)}
    body, constants = _loop_body(classifier, "ig", outer, _path_point, _quadrature_weight)
    trips = emit("Add", emit("Cast", emit("ReduceMax", steps, keepdims=0), to=INT64), emit.constant(1, np.int64))
    total = emit("Loop", trips, emit.constant(True, np.bool_), emit("ConstantOfShape", emit("Shape", IMAGES)),
                 body=body)
    emit.nodes.append(helper.make_node("Mul", [difference, total], [ATTRIBUTIONS]))
    baseline_default = helper.make_tensor("baseline", FLOAT, [1, *classifier.image_shape], np.full(
        int(np.prod(classifier.image_shape)), ATTRIBUTION_DEFAULTS["integrated_gradients"]["baseline"], np.float32))
    return _attribution_model(classifier, emit.nodes, emit.initializers + constants + [baseline_default],
                              "integrated_gradients",
                              [value_info("baseline", FLOAT, ["entries", *classifier.image_shape])])


def grad_cam_model(classifier):
    """`images, targets → attributions`: ReLU(Σ_k α_k A_k), α_k = mean ∂logit_t/∂A_k, resized to the image.

    The feature maps A are the classifier's `features` value, laid out as
    `classifier.features_layout` says; their gradient is taken at
    `feature_source`, the value on the way to the logits they copy.
    """
    features, channels_last = classifier.features, classifier.features_layout == "NHWC"
    spatial, channel = ([1, 2], 3) if channels_last else ([2, 3], 1)
    emit = Emitter("grad_cam", shapes=classifier.shapes, constants=classifier.constants())
    gradient = backpropagate(emit, classifier.nodes, classifier.feature_source, classifier.logits,
                             _target_one_hot(emit, classifier))
    for copy in classifier.feature_copies():  # the copies are linear re-layouts: the gradient is copied alike
        gradient = emit.like(copy, gradient, *copy.input[1:])
    weights = _reduce(emit, classifier, "ReduceMean", gradient, spatial)
    cam = emit("Relu", emit.reduce_sum(emit("Mul", weights, features), [channel], keepdims=1))
    if channels_last:
        cam = emit("Transpose", cam, perm=[0, 3, 1, 2])
    height, width = classifier.image_shape[:2]
    sizes = emit("Concat", emit("Slice", emit("Shape", cam), emit.ints([0]), emit.ints([2])),
                 emit.ints([height, width]), axis=0)
    # TensorFlow's bilinear resize (`tf.image.resize`) samples at half-pixel centres, as this mode does.
    resized = emit("Resize", cam, "", "", sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    emit.nodes.append(helper.make_node("Squeeze", [resized, emit.ints([1])], [ATTRIBUTIONS]))
    nodes = list(classifier.nodes) + list(classifier.feature_nodes) + emit.nodes
    return _attribution_model(classifier, nodes, emit.initializers, "grad_cam",
                              output_shape=["batch", height, width])


def _loop_body(classifier, prefix, outer, point, weight):
    """A `Loop` body adding `weight · ∇ logit_t(point)` to the running total, and the constants it reads.

    `point(emit, classifier, outer, index)` writes the image to differentiate at,
    `weight(emit, outer, index)` its `(batch,)` weight; both read the outer
    graph's values in `outer` by name.
    """
    index, going, total = f"{prefix}/index", f"{prefix}/going", f"{prefix}/total"
    before = Emitter(f"{prefix}/point")
    x = point(before, classifier, outer, index)
    forward = forward_copy(classifier, f"{prefix}/", x)
    shapes = {forward.rename(name): value for name, value in classifier.shapes.items()}
    shapes[x] = classifier.shapes[IMAGES]
    after = Emitter(f"{prefix}/gradient", shapes=shapes, constants=classifier.constants())
    gradient = backpropagate(after, forward.nodes, x, forward.logits, outer["one_hot"])
    weighted = after("Mul", per_image(after, weight(after, outer, index)), gradient)
    after.nodes += [helper.make_node("Add", [total, weighted], [f"{prefix}/next"]),
                    helper.make_node("Identity", [going], [f"{prefix}/going_next"])]
    image_shape = ["batch", *classifier.image_shape]
    graph = helper.make_graph(
        before.nodes + forward.nodes + after.nodes, f"{prefix}_step",
        [value_info(index, INT64, []), value_info(going, BOOL, []), value_info(total, FLOAT, image_shape)],
        [value_info(f"{prefix}/going_next", BOOL, []), value_info(f"{prefix}/next", FLOAT, image_shape)],
    )
    return graph, before.initializers + after.initializers


def _noisy_copy(emit, classifier, outer, index):
    """Copy `index` of the images: `x + spread · z`, z the seed's draws for this sample."""
    return emit("Add", IMAGES, emit("Mul", outer["spread"], _standard_normal(emit, classifier, outer["keys"], index)))


def _sample_weight(emit, outer, index):
    """1 for an image that takes this copy, 0 past its own number of samples."""
    return emit("Cast", emit("Less", emit("Cast", index, to=INT32), outer["samples"]), to=FLOAT)


def _path_point(emit, classifier, outer, index):
    """Point `index` of the straight path: `x' + min(index / steps, 1) · (x − x')`."""
    fraction = emit("Min", emit("Div", emit("Cast", index, to=FLOAT), outer["intervals"]), emit.constant(1.0))
    return emit("Add", outer["baseline"], emit("Mul", per_image(emit, fraction), outer["difference"]))


def _quadrature_weight(emit, outer, index):
    """The trapezoidal rule's `1/steps`, halved at both ends, zero past an image's last point."""
    point = emit("Cast", index, to=INT32)
    end = emit("Or", emit("Equal", point, emit.constant(0, np.int32)), emit("Equal", point, outer["steps"]))
    inner = emit("Where", end, emit.constant(0.5), emit.constant(1.0))
    weight = emit("Where", emit("Greater", point, outer["steps"]), emit.constant(0.0), inner)
    return emit("Div", weight, outer["intervals"])


def _standard_normal(emit, classifier, keys, sample):
    """`noise.standard_normal` in ONNX: `(batch, H, W, C)` draws for sample `sample` of images keyed `keys`."""
    pixels = int(np.prod(classifier.image_shape))
    index = emit("Reshape", emit("Range", emit.constant(0, np.int64), emit.constant(pixels, np.int64),
                                 emit.constant(1, np.int64)), emit.ints([1, *classifier.image_shape]))
    counter = _modulo(emit, emit("Add", emit("Mul", sample, emit.constant(pixels, np.int64)), index))
    doubled = emit("Mul", keys, emit.constant(2, np.int64))
    first = _uniform(emit, _hash(emit, counter, _modulo(emit, doubled)))
    second = _uniform(emit, _hash(emit, counter, _modulo(emit, emit("Add", doubled, emit.constant(1, np.int64)))))
    radius = emit("Sqrt", emit("Mul", emit("Log", first), emit.constant(-2.0)))
    return emit("Mul", radius, emit("Cos", emit("Mul", second, emit.constant(noise.TWO_PI))))


def _hash(emit, counter, key):
    x = _modulo(emit, emit("Add", counter, emit("Mul", key, emit.constant(noise.GOLDEN, np.int64))))
    for shift, multiplier in noise.ROUNDS:
        x = _xor_shifted(emit, x, shift)
        x = _modulo(emit, emit("Mul", x, emit.constant(multiplier, np.int64)))
    return _xor_shifted(emit, x, noise.LAST_SHIFT)


def _xor_shifted(emit, x, shift):
    """`x ⊕ (x >> shift)` of 31-bit `x`, `shift` >= 15: the shifted value has at most 16 bits, so only x's low
    16 bits change, by a 16-bit exclusive-or."""
    shifted = _shift_right(emit, x, shift)
    low = emit("Mod", x, emit.constant(2**16, np.int64))
    return emit("Add", emit("Sub", x, low), _xor16(emit, low, shifted))


def _xor16(emit, a, b):
    table = emit.constant(_BYTE_XOR, np.uint8)
    byte = emit.constant(256, np.int64)

    def lookup(left, right):
        return emit("Cast", emit("Gather", table, emit("Add", emit("Mul", left, byte), right)), to=INT64)

    high = lookup(emit("Div", a, byte), emit("Div", b, byte))
    return emit("Add", emit("Mul", high, byte), lookup(emit("Mod", a, byte), emit("Mod", b, byte)))


def _uniform(emit, words):
    top = emit("Cast", _shift_right(emit, words, 31 - noise.UNIFORM_BITS), to=FLOAT)
    return emit("Mul", emit("Add", top, emit.constant(0.5)), emit.constant(2.0 ** -noise.UNIFORM_BITS))


def _shift_right(emit, x, shift):
    # Integer Div truncates, which is a floor for the non-negative values here.
    return emit("Div", x, emit.constant(2**shift, np.int64))


def _modulo(emit, x):
    return emit("Mod", x, emit.constant(noise.MODULUS, np.int64))


def _reduce(emit, classifier, op_type, value, axes):
    """A Reduce* over `axes`, dims kept, written for the classifier's opset (axes an input from opset 18)."""
    if classifier.opset >= 18:
        return emit(op_type, value, emit.ints(axes), keepdims=1)
    return emit(op_type, value, axes=list(axes), keepdims=1)


def _target_one_hot(emit, classifier):
    """∂ Σ logit_t / ∂ logits: the `targets` input one-hot."""
    return one_hot(emit, classifier, emit("Cast", "targets", to=INT64))


def _attribution_model(classifier, nodes, initializers, method, extra_inputs=(), output_shape=None):
    settings = {name: value for name, value in ATTRIBUTION_DEFAULTS.get(method, {}).items() if name in SETTING_TYPES}
    inputs = [images_input(classifier), targets_input()]
    inputs += [value_info(name, SETTING_TYPES[name], ["entries"]) for name in settings] + list(extra_inputs)
    defaults = [helper.make_tensor(name, SETTING_TYPES[name], [1], [value]) for name, value in settings.items()]
    output = value_info(ATTRIBUTIONS, FLOAT, output_shape or ["batch", *classifier.image_shape])
    return finished_model(classifier, nodes, inputs, [output], list(classifier.initializers) + initializers + defaults,
                          method)
