"""The explanation's input gradient written with forward ops only.

tf2onnx cannot convert TensorFlow's gradient ops (`ReluGrad`, `ShapeN`,
`BroadcastGradientArgs`, the pooling-gradient `Reshape` at a dynamic batch),
so the ONNX explain graph cannot contain a tape. `input_gradient` walks a
functional Keras classifier once forward, keeping every layer's input, then
once backward with each layer's derivative spelled out as ordinary ops
(`conv2d_transpose`, masks, slices, matmuls), which convert with a dynamic
batch. It supports the layers of `keras_robust.resnet` and refuses others by
name.
"""

import keras
import tensorflow as tf

from keras_robust.activations import HalfHuberReLU

LINEAR = keras.activations.linear


def input_gradient(model):
    """Returns `gradient(images, labels) -> (logits, ∂ΣCE/∂images)` (docs/method.md §4).

    The cross-entropy is summed over the batch, so each row of the gradient
    is that example's own gradient, as in `keras_robust.attack`.

    Args:
        model: A functional `keras.Model` from images to logits, built from
            the layers `describe_unsupported` accepts, in inference mode.

    Returns:
        A function of `(images, labels)` usable as `attack_loop(gradient=...)`.
    """
    check_supported(model)
    plan = _plan(model)
    (input_id,) = [id(t) for t in model.inputs]
    (output_id,) = [id(t) for t in model.outputs]

    def gradient(images, labels):
        values = {input_id: images}
        for layer, in_ids, out_id in plan:
            inputs = [values[i] for i in in_ids]
            values[out_id] = layer(inputs if len(inputs) > 1 else inputs[0], training=False)
        logits = values[output_id]
        grads = {output_id: tf.nn.softmax(logits) - tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)}
        for layer, in_ids, out_id in reversed(plan):
            upstream = grads.pop(out_id)
            inputs = [values[i] for i in in_ids]
            for i, g in zip(in_ids, _backward(layer, inputs, upstream)):
                grads[i] = grads[i] + g if i in grads else g
        return logits, grads[input_id]

    return gradient


def check_supported(model):
    """Raises, naming each layer `input_gradient` cannot differentiate."""
    problems = describe_unsupported(model)
    if problems:
        raise ValueError(
            "The ONNX explain graph writes the gradient layer by layer and does not "
            f"support: {'; '.join(problems)}. Export the SavedModel only "
            "(formats=('savedmodel',), CLI --formats savedmodel). "
            f"Received: model={getattr(model, 'name', model)!r}"
        )


def describe_unsupported(model):
    """Names each layer `input_gradient` cannot differentiate, with the reason."""
    if not (isinstance(model, keras.Model) and hasattr(model, "operations")):
        return [f"{type(model).__name__} is not a functional keras.Model"]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return ["models with several inputs or outputs"]
    problems = []
    for layer in model.operations:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        rule = RULES.get(type(layer))
        reason = rule.unsupported(layer) if rule else "no derivative rule for this layer type"
        if reason is None and _times_called(layer) != 1:
            reason = "a layer called more than once"
        if reason:
            problems.append(f"layer {layer.name!r} ({type(layer).__name__}): {reason}")
    return problems


def _times_called(layer):
    # Keras has no public count of a layer's calls (`layer.output` silently
    # answers the first), so this one place reads its inbound nodes.
    return len(layer._inbound_nodes)


def _plan(model):
    """`(layer, input tensor ids, output tensor id)` in topological order
    (`operations` is sorted so; each layer is called once, `describe_unsupported`)."""
    plan = []
    for layer in model.operations:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        plan.append((layer, [id(t) for t in inputs], id(layer.output)))
    return plan


def _backward(layer, inputs, upstream):
    """The gradient with respect to each input, given the output's gradient."""
    return RULES[type(layer)].backward(layer, inputs, upstream)


class Rule:
    """A layer type's derivative: when it applies, and the backward step.

    Attributes:
        unsupported: `layer -> reason or None`: why this configuration has
            no rule here (None: it has).
        backward: `(layer, inputs, upstream) -> [gradient per input]`.
    """

    def __init__(self, unsupported, backward):
        self.unsupported = unsupported
        self.backward = backward


def _always(_):
    return None


def _plain_relu(layer):
    plain = layer.max_value is None and layer.negative_slope == 0 and layer.threshold == 0
    return None if plain else "only the plain ReLU (no max_value, slope or threshold)"


def _plain_pooling(layer):
    plain = layer.data_format == "channels_last" and not layer.keepdims
    return None if plain else "only channels-last pooling without keepdims"


def _plain_conv(layer):
    plain = (
        layer.activation is LINEAR and layer.groups == 1
        and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last"
    )
    return None if plain else "only linear, ungrouped, undilated channels-last convolutions"


def _relu_backward(_, inputs, upstream):
    return [upstream * tf.cast(inputs[0] > 0, upstream.dtype)]


def _activation_backward(layer, inputs, upstream):
    return [upstream] if layer.activation is LINEAR else _relu_backward(layer, inputs, upstream)


def _pooling_backward(_, inputs, upstream):
    (x,) = inputs
    height, width = x.shape[1], x.shape[2]
    return [tf.ones_like(x) * upstream[:, None, None, :] / float(height * width)]


def _batch_norm_backward(layer, _, upstream):
    scale = tf.math.rsqrt(layer.moving_variance + layer.epsilon)
    if layer.scale:
        scale *= layer.gamma
    return [upstream * scale]


def _padding_backward(layer, _, upstream):
    (top, bottom), (left, right) = layer.padding
    height, width = upstream.shape[1], upstream.shape[2]
    return [upstream[:, top:height - bottom, left:width - right, :]]


def _conv_backward(layer, inputs, upstream):
    """The transposed convolution: `conv2d`'s derivative with respect to its input."""
    return [tf.nn.conv2d_transpose(
        upstream,
        layer.kernel,
        output_shape=tf.shape(inputs[0]),
        strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(),
    )]


# Exact layer types: a subclass may change `call`, so it gets no rule by inheritance.
RULES = {
    keras.layers.Add: Rule(_always, lambda _, inputs, upstream: [upstream] * len(inputs)),
    keras.layers.Dense: Rule(
        lambda layer: None if layer.activation is LINEAR else "only a linear Dense (logits)",
        lambda layer, _, upstream: [tf.matmul(upstream, layer.kernel, transpose_b=True)],
    ),
    keras.layers.GlobalAveragePooling2D: Rule(_plain_pooling, _pooling_backward),
    HalfHuberReLU: Rule(
        _always,
        lambda layer, inputs, upstream: [upstream * tf.clip_by_value(inputs[0], 0.0, layer.delta) / layer.delta],
    ),
    keras.layers.ReLU: Rule(_plain_relu, _relu_backward),
    keras.layers.Activation: Rule(
        lambda layer: None if layer.activation in (keras.activations.relu, LINEAR) else "only relu or linear",
        _activation_backward,
    ),
    keras.layers.BatchNormalization: Rule(
        lambda layer: None if layer.axis in (-1, 3) else "only channels-last batch norm", _batch_norm_backward,
    ),
    keras.layers.Normalization: Rule(
        lambda layer: "invert=True" if layer.invert else None,
        lambda layer, _, upstream: [upstream / tf.maximum(tf.sqrt(layer.variance), keras.config.epsilon())],
    ),
    keras.layers.ZeroPadding2D: Rule(_always, _padding_backward),
    keras.layers.Conv2D: Rule(_plain_conv, _conv_backward),
}
