"""Baseline attribution methods, for comparison with adversarial explanations (docs/method.md §1).

Each method takes a Keras model mapping [0, 1] images to logits, images
`(n, H, W, C)` and one target class per image, and returns attributions
`(n, H, W, C)` (Grad-CAM: a map `(n, H, W)`). `heatmap` turns attributions
into one non-negative map per image for display and comparison.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_robust.data.image_files import check_images


def saliency(model, images, targets):
    """Vanilla gradient saliency: ∂ logit_t / ∂x (Simonyan et al. 2014)."""
    images, targets = _inputs(images, targets)
    return _logit_gradient(model, images, targets).numpy()


def smoothgrad(model, images, targets, samples=32, noise=0.15, seed=0):
    """SmoothGrad: the gradient averaged over noisy copies (Smilkov et al. 2017).

    Args:
        samples: Number of noisy copies per image.
        noise: Noise standard deviation as a fraction of the image's value
            range (the paper's 10-20%).
        seed: Seed of the noise.
    """
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"`samples` must be an integer >= 1. Received: samples={samples!r}")
    images, targets = _inputs(images, targets)
    spread = noise * (tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
                      - tf.reduce_min(images, axis=[1, 2, 3], keepdims=True))
    generator = tf.random.Generator.from_seed(seed)
    total = tf.zeros_like(images)
    for _ in range(samples):
        noisy = images + spread * generator.normal(tf.shape(images))
        total += _logit_gradient(model, noisy, targets)
    return (total / samples).numpy()


def integrated_gradients(model, images, targets, baseline=None, steps=64):
    """Integrated Gradients (Sundararajan et al. 2017), trapezoidal rule.

    `(x − x') ⊙ ∫₀¹ ∇ logit_t(x' + α (x − x')) dα`; the attributions sum to
    `logit_t(x) − logit_t(x')` (completeness) up to the quadrature error.

    Args:
        baseline: The reference image x' (default black, zeros), broadcastable
            to `images`.
        steps: Number of quadrature intervals.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1. Received: steps={steps!r}")
    images, targets = _inputs(images, targets)
    baseline = tf.zeros_like(images) + (0.0 if baseline is None else tf.cast(baseline, images.dtype))
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] /= 2.0
    total = tf.zeros_like(images)
    for alpha, weight in zip(alphas, weights):
        point = baseline + float(alpha) * (images - baseline)
        total += float(weight) * _logit_gradient(model, point, targets)
    return ((images - baseline) * total).numpy()


def grad_cam(model, images, targets, layer=None, upsample=True):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k α_k A_k), α_k = mean ∂logit_t/∂A_k.

    Args:
        layer: Name of the layer whose feature maps `A` are used. Default:
            the last layer with a 4-D output (for `keras_robust.resnet`,
            `head_act`, the final activation before pooling).
        upsample: Resize the map bilinearly to the image size.

    Returns:
        Maps of shape `(n, H, W)`, or `(n, h, w)` without upsampling.
    """
    images, targets = _inputs(images, targets)
    functional = _functional(model)
    chosen = functional.get_layer(layer) if layer else _last_spatial_layer(functional)
    probe = keras.Model(functional.inputs, [chosen.output, functional.outputs[0]])
    with tf.GradientTape() as tape:
        features, logits = probe(images, training=False)
        score = tf.gather(logits, targets, batch_dims=1)
    gradient = tape.gradient(score, features)
    weights = tf.reduce_mean(gradient, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    if upsample:
        cam = tf.image.resize(cam[..., None], tf.shape(images)[1:3], method="bilinear")[..., 0]
    return cam.numpy()


def heatmap(attributions):
    """One non-negative map per image: max over channels of |attribution|."""
    attributions = np.asarray(attributions)
    return np.abs(attributions).max(axis=-1) if attributions.ndim == 4 else np.abs(attributions)


METHODS = {
    "saliency": saliency,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "grad_cam": grad_cam,
}


def _logit_gradient(model, images, targets):
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images, training=False)
        score = tf.reduce_sum(tf.gather(logits, targets, batch_dims=1))
    return tape.gradient(score, images)


def _inputs(images, targets):
    # Attribution maps are also drawn for attacked images x + δ, which the
    # attack does not clip to [0, 1].
    images = check_images(images, unit_range=False)
    targets = np.asarray(targets).reshape(-1)
    if targets.dtype.kind not in "iu" or targets.size != len(images):
        raise ValueError(
            "Targets must be one integer class index per image. "
            f"Received: targets={targets!r}"
        )
    return tf.constant(images, tf.float32), tf.constant(targets, tf.int32)


def _functional(model):
    """The layer graph to probe: a `RobustModel`'s classifier, or the model itself."""
    inner = getattr(model, "classifier", model)
    # Functional and Sequential models have symbolic inputs; subclassed ones do not.
    try:
        has_graph = bool(inner.inputs) and hasattr(inner, "get_layer")
    except (AttributeError, ValueError):
        has_graph = False
    if not has_graph:
        raise ValueError(
            "Grad-CAM needs a functional or Sequential Keras model to read "
            f"intermediate feature maps from. Received: model={type(inner).__name__}"
        )
    return inner


def _last_spatial_layer(model):
    for candidate in reversed(model.layers):
        if len(candidate.output.shape) == 4:
            return candidate
    raise ValueError(
        "Grad-CAM found no layer with 4-D (batch, h, w, channels) output; pass "
        "`layer=`. Received: a model without spatial feature maps"
    )
