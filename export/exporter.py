"""`export_model`: one call writes the SavedModel, the ONNX graphs and the card."""

import os
import shutil

import keras
import tensorflow as tf

from keras_robust.common.defaults import EXPLAIN_OVERSHOOT, EXPLAIN_RHO, EXPLAIN_STEPS
from keras_robust.explanations import attributions
from keras_robust.export import signatures
from keras_robust.export.attribution_graphs import FILE_SUFFIXES, attribution_models
from keras_robust.export.export_folder import (
    check_class_names,
    check_export_settings,
    check_methods,
    check_new_version,
    finish_export,
    without_grad_cam,
)
from keras_robust.export.onnx_endpoints import endpoint_models, write_models
from keras_robust.export.onnx_graphs import keras_to_onnx

FORMATS = ("savedmodel", "onnx")


def export_model(
    model,
    out_dir,
    name=None,
    version=1,
    *,
    class_names=None,
    rho=EXPLAIN_RHO,
    steps=EXPLAIN_STEPS,
    overshoot=EXPLAIN_OVERSHOOT,
    formats=FORMATS,
    methods=None,
    grad_cam_layer=None,
    training=None,
    ara=None,
    overwrite=False,
):
    """Exports a classifier for TF Serving and ONNX Runtime.

    Writes, under `out_dir/<name>/`:
    - `<version>/`: a SavedModel in TF Serving's layout with signatures
      `serving_default` (`images` → `logits`, `probabilities`, `classes`) and
      `explain` (`images`, `targets`, `rho`, `steps` → `explanations`,
      `delta`, `target_confidence`, `first_met_step`, `target_is_top`: each
      explanation's outcome, `card.OUTPUT_MEANINGS`), batch dimension dynamic;
      and one signature per attribution method in `methods`: `saliency`,
      `smoothgrad`, `integrated_gradients`, `grad_cam` (`images`, `targets`,
      the method's settings → `attributions`; `card.ATTRIBUTION_INPUTS`);
    - `<name>-<version>-predict.onnx`, `<name>-<version>-explain.onnx` and
      `<name>-<version>-<method>.onnx` (`saliency`, `smoothgrad`,
      `integrated-gradients`, `grad-cam`): the same endpoints, same input
      names and order;
    - `model_card.json`: class names, input spec, explanation and
      attribution defaults, training summary and ARA when given.

    Example:

    >>> model = keras_robust.resnet(depth=20)
    >>> paths = export_model(model, "exports", name="cifar10")
    >>> sorted(paths)
    ['card', 'models_config', 'onnx_explain', 'onnx_grad_cam', 'onnx_integrated_gradients', 'onnx_predict',
     'onnx_saliency', 'onnx_smoothgrad', 'saved_model']

    Args:
        model: A Keras classifier from images in [0, 1] to logits, or a
            `keras_robust.RobustModel` (its classifier is exported).
        out_dir: The model base directory (TF Serving's `base_path` parent).
        name: Model name in URLs; defaults to the model's name.
        version: Positive integer version (TF Serving's subdirectory).
        class_names: One name per logit; defaults to `"0"`, `"1"`, ...
        rho: Default explanation budget ρ written to the card (docs/method.md §5).
        steps: Default explanation steps N written to the card.
        overshoot: Overshoot o baked into the explain endpoint (docs/method.md §5).
        formats: Any of `"savedmodel"`, `"onnx"`.
        methods: The attribution methods to export, from
            `card.ATTRIBUTION_METHODS`; None: all four, Grad-CAM only if the
            classifier has a layer with 4-D output (a warning says when not).
        grad_cam_layer: The layer whose feature maps Grad-CAM reads; None:
            the last layer with a 4-D output, as `attributions.grad_cam`.
        training: Optional training summary dict for the card.
        ara: Optional ARA evaluation dict for the card.
        overwrite: Replace an existing export of the same version.

    Returns:
        A dict of the written paths.
    """
    classifier = getattr(model, "classifier", model)
    name = name or classifier.name
    check_export_settings(name, version, rho, steps, overshoot)
    image_shape, num_classes = _validate(classifier, formats)
    class_names = check_class_names(class_names, num_classes)
    methods, probe, layer = _grad_cam_probe(classifier, check_methods(methods), methods, grad_cam_layer)
    model_dir = check_new_version(out_dir, name, version, overwrite)
    defaults = dict(rho=rho, steps=steps, overshoot=overshoot)
    onnx_models = None
    if "onnx" in formats:  # first: an operator without a derivative rule stops the export here
        onnx_classifier = keras_to_onnx(classifier, image_shape, probe=probe)
        onnx_models = {**endpoint_models(onnx_classifier, overshoot, defaults),
                       **attribution_models(onnx_classifier, methods)}
    os.makedirs(model_dir, exist_ok=True)
    paths = {}
    if "savedmodel" in formats:
        paths["saved_model"] = _write_saved_model(
            classifier, os.path.join(model_dir, str(version)), image_shape, overshoot, methods, probe
        )
    if onnx_models:
        onnx_paths = write_models(onnx_models, model_dir, f"{name}-{version}", FILE_SUFFIXES)
        paths.update({f"onnx_{k}": v for k, v in onnx_paths.items()})
    return finish_export(out_dir, name, version, paths, image_shape, class_names, defaults, training, ara,
                         attributions={"methods": list(methods), "grad_cam_layer": layer})


def _grad_cam_probe(classifier, methods, requested, layer):
    """`(methods, probe, layer name)`: Grad-CAM's probe when exported; Grad-CAM dropped where it cannot be."""
    if "grad_cam" not in methods:
        return methods, None, None
    try:
        chosen = attributions.grad_cam_layer(classifier, layer)
        probe = attributions.grad_cam_probe(classifier, chosen.name)
        # One image through it, before anything is written: a layer the logits do not depend on stops here.
        attributions.grad_cam_tensor(probe, tf.zeros((1, *classifier.input_shape[1:])), tf.zeros((1,), tf.int32))
        return methods, probe, chosen.name
    except ValueError as error:
        if layer is not None:
            raise
        return without_grad_cam(methods, requested, str(error)), None, None


def _write_saved_model(classifier, directory, image_shape, overshoot, methods, probe):
    """Writes the SavedModel atomically: a half-written version would be served."""
    specs = signatures.input_specs(image_shape)
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("serving_default", signatures.predict_function(classifier), specs["predict"])
    archive.add_endpoint("explain", signatures.explain_function(classifier, overshoot), specs["explain"])
    for method in methods:
        archive.add_endpoint(method, signatures.attribution_function(method, classifier, probe), specs[method])
    partial = directory.rstrip(os.sep) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(partial, verbose=False)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)
    return directory


def _validate(classifier, formats):
    """Checks the Keras classifier and formats; returns the image shape and number of classes."""
    if not isinstance(classifier, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={classifier!r}")
    unknown = set(formats) - set(FORMATS)
    if not formats or unknown:
        raise ValueError(f"`formats` must be a non-empty subset of {FORMATS}. Received: formats={formats!r}")
    input_shape, output_shape = classifier.input_shape, classifier.output_shape
    if not (isinstance(input_shape, tuple) and len(input_shape) == 4 and None not in input_shape[1:]):
        raise ValueError(
            "The model must take images of a fixed (height, width, channels). "
            f"Received: input shape {input_shape}"
        )
    if not (isinstance(output_shape, tuple) and len(output_shape) == 2 and (output_shape[1] or 0) >= 2):
        raise ValueError(f"The model must output (batch, K >= 2) logits. Received: output shape {output_shape}")
    return tuple(input_shape[1:]), output_shape[1]
