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
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        return [f"{type(model).__name__} is not a functional keras.Model"]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return ["models with several inputs or outputs"]
    problems = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        reason = _unsupported_reason(layer)
        if reason is None and len(layer._inbound_nodes) != 1:
            reason = "a layer called more than once"
        if reason:
            problems.append(f"layer {layer.name!r} ({type(layer).__name__}): {reason}")
    return problems


def _unsupported_reason(layer):
    if isinstance(layer, (HalfHuberReLU, keras.layers.Add, keras.layers.ZeroPadding2D)):
        return None
    if isinstance(layer, keras.layers.Normalization):
        return "invert=True" if layer.invert else None
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.max_value is None and layer.negative_slope == 0 and layer.threshold == 0
        return None if plain else "only the plain ReLU (no max_value, slope or threshold)"
    if isinstance(layer, keras.layers.Activation):
        return None if layer.activation in (keras.activations.relu, LINEAR) else "only relu or linear"
    if isinstance(layer, keras.layers.BatchNormalization):
        return None if layer.axis in (-1, 3) else "only channels-last batch norm"
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        plain = layer.data_format == "channels_last" and not layer.keepdims
        return None if plain else "only channels-last pooling without keepdims"
    if isinstance(layer, keras.layers.Dense):
        return None if layer.activation is LINEAR else "only a linear Dense (logits)"
    if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
        plain = (
            layer.activation is LINEAR and layer.groups == 1
            and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last"
        )
        return None if plain else "only linear, ungrouped, undilated channels-last convolutions"
    return "no derivative rule for this layer type"


def _plan(model):
    """`(layer, input tensor ids, output tensor id)` in topological order."""
    plan = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.operation
            if isinstance(layer, keras.layers.InputLayer):
                continue
            (output,) = node.output_tensors
            plan.append((layer, [id(t) for t in node.input_tensors], id(output)))
    return plan


def _backward(layer, inputs, upstream):
    """The gradient with respect to each input, given the output's gradient."""
    (x,) = inputs if len(inputs) == 1 else (None,)
    if isinstance(layer, keras.layers.Add):
        return [upstream] * len(inputs)
    if isinstance(layer, keras.layers.Dense):
        return [tf.matmul(upstream, layer.kernel, transpose_b=True)]
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        height, width = x.shape[1], x.shape[2]
        return [tf.ones_like(x) * upstream[:, None, None, :] / float(height * width)]
    if isinstance(layer, HalfHuberReLU):
        return [upstream * tf.clip_by_value(x, 0.0, layer.delta) / layer.delta]
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
        if isinstance(layer, keras.layers.Activation) and layer.activation is LINEAR:
            return [upstream]
        return [upstream * tf.cast(x > 0, upstream.dtype)]
    if isinstance(layer, keras.layers.BatchNormalization):
        scale = tf.math.rsqrt(layer.moving_variance + layer.epsilon)
        if layer.scale:
            scale *= layer.gamma
        return [upstream * scale]
    if isinstance(layer, keras.layers.Normalization):
        return [upstream / tf.maximum(tf.sqrt(layer.variance), keras.config.epsilon())]
    if isinstance(layer, keras.layers.ZeroPadding2D):
        (top, bottom), (left, right) = layer.padding
        height, width = upstream.shape[1], upstream.shape[2]
        return [upstream[:, top:height - bottom, left:width - right, :]]
    return [_conv_backward(layer, x, upstream)]


def _conv_backward(layer, x, upstream):
    """The transposed convolution: `conv2d`'s derivative with respect to its input."""
    return tf.nn.conv2d_transpose(
        upstream,
        layer.kernel,
        output_shape=tf.shape(x),
        strides=[1, *layer.strides, 1],
        padding=layer.padding.upper(),
    )
