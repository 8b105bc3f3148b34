"""`export_onnx_classifier`: predict and explain endpoints for an ONNX classifier from any framework."""

import os

from keras_robust.common.defaults import EXPLAIN_OVERSHOOT, EXPLAIN_RHO, EXPLAIN_STEPS
from keras_robust.export.attribution_graphs import FILE_SUFFIXES, attribution_models
from keras_robust.export.autodiff.classifier import PREFIX, prepare_classifier
from keras_robust.export.export_folder import (
    check_class_names,
    check_export_settings,
    check_methods,
    check_new_version,
    finish_export,
    without_grad_cam,
)
from keras_robust.export.onnx_endpoints import endpoint_models, write_models


def export_onnx_classifier(
    model,
    out_dir,
    name=None,
    version=1,
    *,
    layout,
    mean=None,
    std=None,
    image_size=None,
    class_names=None,
    rho=EXPLAIN_RHO,
    steps=EXPLAIN_STEPS,
    overshoot=EXPLAIN_OVERSHOOT,
    methods=None,
    grad_cam_layer=None,
    overwrite=False,
):
    """Exports an ONNX image classifier (PyTorch, Keras, any framework) for serving and explaining.

    Writes, under `out_dir/<name>/`, `<name>-<version>-predict.onnx`,
    `<name>-<version>-explain.onnx`, one `<name>-<version>-<method>.onnx` per
    attribution method and `model_card.json`: the same files,
    inputs and outputs as `export_model`'s ONNX format, so `keras-robust
    serve` serves them over every protocol it speaks. Both graphs take
    `images` as `(batch, height, width, channels)` floats in [0, 1]; the
    layout change and normalisation the model expects are written in front
    of it, so ρ is an RMSE of [0, 1] pixels as everywhere in the package.
    No TensorFlow is imported.

    Example:

    >>> torch.onnx.export(net.eval(), torch.zeros(1, 3, 224, 224), "net.onnx",
    ...                   input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    >>> export_onnx_classifier("net.onnx", "exports", "net", layout="NCHW",
    ...                        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

    Args:
        model: The path of an `.onnx` file or an `onnx.ModelProto`: one
            float32 image input, one `(batch, K)` logits output, inference
            mode, standard ONNX operators, opset 13 or later.
        out_dir: The base folder (one folder per model inside).
        name: Model name in URLs; defaults to the file's name.
        version: Positive integer version.
        layout: The model's input layout, `"NCHW"` (PyTorch) or `"NHWC"`.
        mean, std: The per-channel normalisation the model expects of its
            input, in [0, 1] units (torchvision's ImageNet models: mean
            (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)); None if the
            model takes [0, 1] images.
        image_size: `(height, width)`, needed when the model's spatial size
            is dynamic.
        class_names: One name per logit; defaults to `"0"`, `"1"`, ...
        rho, steps, overshoot: The explanation defaults (docs/method.md §5).
        methods: The attribution methods to export (`card.ATTRIBUTION_METHODS`);
            None: all four, Grad-CAM only where the graph has feature maps
            (a warning says when not).
        grad_cam_layer: The name of the value, in the model's graph, whose
            feature maps Grad-CAM reads (4-D, in `layout`); None: the input
            of the last global pooling.
        overwrite: Replace an existing export of the same version.

    Returns:
        A dict of the written paths.

    Raises:
        ValueError: naming every operator without a derivative rule, or
            what makes the graph no image classifier; nothing is written.
    """
    if name is None:
        name = os.path.splitext(os.path.basename(str(model)))[0] if isinstance(model, (str, os.PathLike)) else None
    if name is None:
        raise ValueError("`name` is needed for a model given as an onnx.ModelProto. Received: name=None")
    check_export_settings(name, version, rho, steps, overshoot)
    requested = methods
    methods = check_methods(methods)
    classifier = prepare_classifier(model, layout=layout, mean=mean, std=std, image_size=image_size,
                                    features=grad_cam_layer)
    if classifier.features is None:
        methods = without_grad_cam(methods, requested, "its graph has no global pooling of 4-D feature maps; "
                                                       "name the feature maps' value with grad_cam_layer.")
    class_names = check_class_names(class_names, classifier.num_classes)
    model_dir = check_new_version(out_dir, name, version, overwrite)
    defaults = dict(rho=rho, steps=steps, overshoot=overshoot)
    models = {**endpoint_models(classifier, overshoot, defaults), **attribution_models(classifier, methods)}
    os.makedirs(model_dir, exist_ok=True)
    written = write_models(models, model_dir, f"{name}-{version}", FILE_SUFFIXES)
    paths = {f"onnx_{k}": v for k, v in written.items()}
    source = {
        "format": "onnx",
        "file": os.path.basename(str(model)) if isinstance(model, (str, os.PathLike)) else None,
        "layout": layout,
        "mean": None if mean is None else [float(v) for v in _flat(mean)],
        "std": None if std is None else [float(v) for v in _flat(std)],
    }
    layer = classifier.features[len(PREFIX):] if "grad_cam" in methods else None
    return finish_export(out_dir, name, version, paths, classifier.image_shape, class_names, defaults, source=source,
                         attributions={"methods": list(methods), "grad_cam_layer": layer})


def _flat(values):
    return [values] if isinstance(values, (int, float)) else list(values)
