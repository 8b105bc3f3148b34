"""The endpoints every export serves: predict, explain (docs/method.md §5) and the attribution methods.

The SavedModel signatures are traced from these functions; the ONNX graphs
(`onnx_endpoints`, `attribution_graphs`) have the same inputs and outputs, in
the same order.
"""

import tensorflow as tf

from keras_robust.common.defaults import MAX_ATTRIBUTION_PASSES, MAX_EXPLAIN_STEPS, MAX_RHO
from keras_robust.explanations import attributions
from keras_robust.explanations.noise import SEED_RANGE
from keras_robust.method.attack_settings import AttackSettings
from keras_robust.method.attacks import attack_loop


def input_specs(image_shape):
    """`{name: tf.TensorSpec}` of each endpoint's inputs, batch dimension dynamic."""
    images = tf.TensorSpec([None, *image_shape], tf.float32, name="images")
    targets = tf.TensorSpec([None], tf.int32, name="targets")
    return {
        "predict": [images],
        "explain": [
            images,
            targets,
            tf.TensorSpec([None], tf.float32, name="rho"),
            tf.TensorSpec([None], tf.int32, name="steps"),
        ],
        "saliency": [images, targets],
        "smoothgrad": [images, targets, tf.TensorSpec([None], tf.int32, name="samples"),
                       tf.TensorSpec([None], tf.float32, name="noise"), tf.TensorSpec([None], tf.int32, name="seed")],
        "integrated_gradients": [images, targets, tf.TensorSpec([None], tf.int32, name="steps"),
                                 tf.TensorSpec([None, *image_shape], tf.float32, name="baseline")],
        "grad_cam": [images, targets],
    }


def predict_function(classifier):
    """`images → {logits, probabilities, classes}` in inference mode."""

    def predict(images):
        logits = tf.cast(classifier(images, training=False), tf.float32)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    return predict


def explain_function(classifier, overshoot):
    """`(images, targets, rho, steps) → {explanations, delta, target_confidence, first_met_step, target_is_top}`.

    `rho` and `steps` hold one entry per image, or one entry for all of them.

    Runs the one attack routine (`keras_robust.method.attacks.attack_loop`) in the
    explanation mode of docs/method.md §5: bounded, targeted, with overshoot, per-example
    budget `rho` and step count `steps`.

    The last two outputs are each explanation's outcome
    (`keras_robust.export.card.OUTPUT_MEANINGS`): an explanation is evidence
    only if δ reached its budget and the network now leans toward the target.

    Args:
        classifier: Images in [0, 1] to logits.
        overshoot: Overshoot o >= 1, fixed at export time.

    The graph asserts its inputs; TF Serving answers a failed assertion
    with 400.
    """

    def explain(images, targets, rho, steps):
        num_classes = classifier.output_shape[-1]
        with tf.control_dependencies(_assertions(images, targets, rho, steps, num_classes)):
            images = tf.identity(images)
        # One rho or steps entry serves the whole batch: that is how the ONNX
        # graph's default values (one entry each) reach every image.
        batch = tf.shape(images)[:1]
        rho, steps = tf.broadcast_to(rho, batch), tf.broadcast_to(steps, batch)
        settings = AttackSettings(rho=rho, steps=steps, overshoot=tf.constant(overshoot, tf.float32), targeted=True)
        result = attack_loop(classifier, images, targets, settings)
        logits = tf.cast(classifier(result.images, training=False), tf.float32)
        confidence = tf.gather(tf.nn.softmax(logits), targets, batch_dims=1)
        return {
            "explanations": result.images,
            "delta": result.delta,
            "target_confidence": confidence,
            "first_met_step": tf.cast(result.first_met_step, tf.int32),
            "target_is_top": tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets),
        }

    return explain


def attribution_function(method, classifier, probe=None):
    """`(images, targets, *settings) → {attributions}` of one attribution method.

    Settings (`input_specs`) hold one entry per image or one for all, as
    `explain`'s. Grad-CAM reads its feature maps through `probe`
    (`attributions.grad_cam_probe`), chosen at export.
    """
    num_classes = classifier.output_shape[-1]

    def checked(images, targets, settings):
        batch = tf.shape(images)[0]
        checks = _target_assertions(images, targets, num_classes)
        checks += [_assert_one_or_per_image(value, batch, name) for name, value in settings.items()]
        checks += _setting_assertions(settings)
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        return images, {name: tf.broadcast_to(value, tf.concat([[batch], tf.shape(value)[1:]], 0))
                        for name, value in settings.items()}

    def saliency(images, targets):
        images, _ = checked(images, targets, {})
        return {"attributions": attributions.saliency_tensor(classifier, images, targets)}

    def smoothgrad(images, targets, samples, noise, seed):
        images, settings = checked(images, targets, dict(samples=samples, noise=noise, seed=seed))
        return {"attributions": attributions.smoothgrad_tensor(classifier, images, targets, settings["samples"],
                                                               settings["noise"], settings["seed"])}

    def integrated_gradients(images, targets, steps, baseline):
        images, settings = checked(images, targets, dict(steps=steps, baseline=baseline))
        return {"attributions": attributions.integrated_gradients_tensor(classifier, images, targets,
                                                                         settings["steps"], settings["baseline"])}

    def grad_cam(images, targets):
        images, _ = checked(images, targets, {})
        return {"attributions": attributions.grad_cam_tensor(probe, images, targets)}

    return {"saliency": saliency, "smoothgrad": smoothgrad, "integrated_gradients": integrated_gradients,
            "grad_cam": grad_cam}[method]


def _setting_assertions(settings):
    limits = {
        "samples": (1, MAX_ATTRIBUTION_PASSES), "steps": (1, MAX_ATTRIBUTION_PASSES), "seed": SEED_RANGE,
    }
    checks = []
    for name, (low, high) in limits.items():
        if name in settings:
            checks += [tf.debugging.assert_greater_equal(settings[name], low, message=f"{name} must be >= {low}"),
                       tf.debugging.assert_less_equal(settings[name], high, message=f"{name} must be <= {high}")]
    for name in ("noise", "baseline"):
        if name in settings:
            checks.append(tf.debugging.assert_all_finite(settings[name], message=f"{name} must be finite"))
    if "noise" in settings:
        checks.append(tf.debugging.assert_non_negative(settings["noise"], message="noise must be >= 0"))
    return checks


def _target_assertions(images, targets, num_classes):
    return [
        tf.debugging.assert_equal(tf.shape(targets)[0], tf.shape(images)[0],
                                  message="targets needs one entry per image"),
        tf.debugging.assert_non_negative(targets, message="targets must be class indices >= 0"),
        tf.debugging.assert_less(targets, num_classes, message="targets must be < the number of classes"),
    ]


def _assertions(images, targets, rho, steps, num_classes):
    batch = tf.shape(images)[0]
    return _target_assertions(images, targets, num_classes) + [
        _assert_one_or_per_image(rho, batch, "rho"),
        _assert_one_or_per_image(steps, batch, "steps"),
        tf.debugging.assert_positive(rho, message="rho must be > 0"),
        tf.debugging.assert_less_equal(rho, MAX_RHO, message=f"rho must be <= {MAX_RHO:g}"),
        tf.debugging.assert_positive(steps, message="steps must be >= 1"),
        tf.debugging.assert_less_equal(steps, MAX_EXPLAIN_STEPS,
                                       message=f"steps must be <= {MAX_EXPLAIN_STEPS}"),
    ]


def _assert_one_or_per_image(values, batch, name):
    entries = tf.shape(values)[0]
    return tf.debugging.Assert(
        tf.logical_or(tf.equal(entries, 1), tf.equal(entries, batch)),
        [f"{name} needs one entry per image, or one entry for all"],
    )
