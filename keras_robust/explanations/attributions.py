"""Baseline attribution methods, for comparison with adversarial explanations (docs/method.md §1).

Each method takes a Keras model mapping [0, 1] images to logits, images
`(n, H, W, C)` and one target class per image, and returns attributions
`(n, H, W, C)` (Grad-CAM: a map `(n, H, W)`). `heatmap` turns attributions
into one non-negative map per image for display and comparison.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_robust.common.defaults import (
    INTEGRATED_GRADIENTS_STEPS,
    MAX_ATTRIBUTION_PASSES,
    SMOOTHGRAD_NOISE,
    SMOOTHGRAD_SAMPLES,
    SMOOTHGRAD_SEED,
)
from keras_robust.common.validation import check_range, check_steps
from keras_robust.data.image_files import check_images
from keras_robust.explanations.noise import SEED_RANGE, standard_normal


def saliency(model, images, targets):
    """Vanilla gradient saliency: ∂ logit_t / ∂x (Simonyan et al. 2014)."""
    images, targets = _inputs(images, targets)
    return saliency_tensor(model, images, targets).numpy()


def smoothgrad(model, images, targets, samples=SMOOTHGRAD_SAMPLES, noise=SMOOTHGRAD_NOISE, seed=SMOOTHGRAD_SEED):
    """SmoothGrad: the gradient averaged over noisy copies (Smilkov et al. 2017).

    `(1/S) Σₛ ∇ logit_t(x + σ·(max x − min x)·zₛ)`, `zₛ` standard normal
    draws that `seed` fixes (`keras_robust.explanations.noise`: the exported
    SmoothGrad graphs draw the same ones).

    Args:
        samples: Number of noisy copies S per image.
        noise: Noise standard deviation σ as a fraction of the image's value
            range (the paper's 10-20%).
        seed: Seed of the noise, an integer in [0, 2³¹ − 1].
    """
    check_steps(samples, 1, MAX_ATTRIBUTION_PASSES, name="samples")
    check_range("noise", noise, low=0.0)
    _check_seed(seed)
    images, targets = _inputs(images, targets)
    per_image = _per_image(images)
    return smoothgrad_tensor(model, images, targets, per_image(samples, tf.int32), per_image(noise, tf.float32),
                             per_image(seed, tf.int32)).numpy()


def integrated_gradients(model, images, targets, baseline=None, steps=INTEGRATED_GRADIENTS_STEPS):
    """Integrated Gradients (Sundararajan et al. 2017), trapezoidal rule.

    `(x − x') ⊙ ∫₀¹ ∇ logit_t(x' + α (x − x')) dα`; the attributions sum to
    `logit_t(x) − logit_t(x')` (completeness) up to the quadrature error.

    Args:
        baseline: The reference image x' (default black, zeros), broadcastable
            to `images`.
        steps: Number of quadrature intervals.
    """
    check_steps(steps, 1, MAX_ATTRIBUTION_PASSES)
    images, targets = _inputs(images, targets)
    baseline = tf.zeros_like(images) + (0.0 if baseline is None else tf.cast(baseline, images.dtype))
    steps = _per_image(images)(steps, tf.int32)
    return integrated_gradients_tensor(model, images, targets, steps, baseline).numpy()


def grad_cam(model, images, targets, layer=None, upsample=True):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k α_k A_k), α_k = mean ∂logit_t/∂A_k.

    Args:
        layer: Name of the layer whose feature maps `A` are used. Default:
            the layer feeding the last global pooling (for
            `keras_robust.resnet`, `head_act`, the final activation before
            pooling), or, without global pooling, the last layer with a 4-D
            output.
        upsample: Resize the map bilinearly to the image size.

    Returns:
        Maps of shape `(n, H, W)`, or `(n, h, w)` without upsampling.
    """
    images, targets = _inputs(images, targets)
    return grad_cam_tensor(grad_cam_probe(model, layer), images, targets, upsample).numpy()


def saliency_tensor(model, images, targets):
    """`saliency` on tensors, in eager or graph mode."""
    return _logit_gradient(model, images, targets)


def smoothgrad_tensor(model, images, targets, samples, noise, seeds):
    """`smoothgrad` on tensors, in eager or graph mode; `samples`, `noise` and `seeds` hold one entry per image.

    An image takes its own number of copies, so images of several requests
    share one batch.
    """
    spread = _broadcast(noise) * (tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
                                  - tf.reduce_min(images, axis=[1, 2, 3], keepdims=True))

    def add_sample(sample, total):
        noisy = images + spread * standard_normal(seeds, sample, images.shape[1:])
        taken = _broadcast(tf.cast(sample < samples, images.dtype))
        return sample + 1, total + taken * _logit_gradient(model, noisy, targets)

    _, total = tf.while_loop(lambda sample, _: sample < tf.reduce_max(samples), add_sample,
                             (tf.constant(0), tf.zeros_like(images)))
    return total / _broadcast(tf.cast(samples, images.dtype))


def integrated_gradients_tensor(model, images, targets, steps, baseline):
    """`integrated_gradients` on tensors, in eager or graph mode; `steps` holds one entry per image.

    Point j of image b is `x' + min(j / steps_b, 1)·(x − x')`, weighted
    `1/steps_b` (halved at both ends, zero past the image's last point).
    """
    intervals = tf.cast(steps, images.dtype)

    def add_point(point, total):
        at = tf.cast(point, images.dtype)
        fraction = tf.minimum(at / intervals, 1.0)
        end = tf.logical_or(tf.equal(point, 0), tf.equal(point, steps))
        weight = tf.where(point > steps, 0.0, tf.where(end, 0.5, 1.0)) / intervals
        gradient = _logit_gradient(model, baseline + _broadcast(fraction) * (images - baseline), targets)
        return point + 1, total + _broadcast(weight) * gradient

    _, total = tf.while_loop(lambda point, _: point <= tf.reduce_max(steps), add_point,
                             (tf.constant(0), tf.zeros_like(images)))
    return (images - baseline) * total


def grad_cam_layer(model, layer=None):
    """The layer whose feature maps Grad-CAM reads: `layer` by name, else the one feeding the last global pooling,
    else the last layer with a 4-D output."""
    functional = _functional(model)
    return functional.get_layer(layer) if layer else _last_spatial_layer(functional)


def grad_cam_probe(model, layer=None):
    """A Keras model from images to `(feature maps A of `layer`, logits)`, the layer chosen by `grad_cam_layer`."""
    functional = _functional(model)
    chosen = grad_cam_layer(model, layer)
    return keras.Model(functional.inputs, [chosen.output, functional.outputs[0]], name=f"grad_cam_of_{chosen.name}")


def grad_cam_tensor(probe, images, targets, upsample=True):
    """`grad_cam` on tensors through a `grad_cam_probe`, in eager or graph mode."""
    with tf.GradientTape() as tape:
        features, logits = probe(images, training=False)
        features = tf.cast(features, tf.float32)
        score = tf.gather(tf.cast(logits, tf.float32), targets, batch_dims=1)
    gradient = tape.gradient(score, features)
    if gradient is None:
        raise ValueError(
            "Grad-CAM found no gradient of the logits with respect to the chosen layer's feature maps; pass "
            f"`layer=` naming one the logits are computed from. Received: {probe.name!r}"
        )
    weights = tf.reduce_mean(gradient, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
    if upsample:
        cam = tf.image.resize(cam[..., None], tf.shape(images)[1:3], method="bilinear")[..., 0]
    return cam


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
        logits = tf.cast(model(images, training=False), tf.float32)
        score = tf.reduce_sum(tf.gather(logits, targets, batch_dims=1))
    return tape.gradient(score, images)


def _broadcast(values):
    """A `(batch,)` value shaped to broadcast over `(batch, H, W, C)` images."""
    return tf.reshape(values, (-1, 1, 1, 1))


def _per_image(images):
    """A function from one setting value to a tensor holding it once per image."""
    return lambda value, dtype: tf.fill(tf.shape(images)[:1], tf.constant(value, dtype))


def _check_seed(seed):
    """A noise seed: an integer in `noise.SEED_RANGE`."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not low <= seed <= high:
        raise ValueError(f"`seed` must be an integer in [{low}, {high}]. Received: seed={seed!r}")


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


_GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def _last_spatial_layer(model):
    # A head that keeps the pooled maps 4-D (MobileNetV3's 1×1 convolutions after pooling) has later 4-D layers, but
    # their maps are 1×1: Grad-CAM over them is one number. The ONNX export picks the pooling's input alike.
    for candidate in reversed(model.layers):
        if isinstance(candidate, _GLOBAL_POOLING):
            feeding = [layer for layer in model.layers if layer.output is candidate.input]
            if feeding and len(feeding[0].output.shape) == 4:
                return feeding[0]
    for candidate in reversed(model.layers):
        if len(candidate.output.shape) == 4:
            return candidate
    raise ValueError(
        "Grad-CAM found no layer with 4-D (batch, h, w, channels) output; pass "
        "`layer=`. Received: a model without spatial feature maps"
    )
