"""`export_model`: one call writes the SavedModel, the ONNX graphs and the card."""

import json
import os
import re
import shutil

import keras

from keras_robust.atomic import write_atomically
from keras_robust.defaults import EXPLAIN_OVERSHOOT, EXPLAIN_RHO, EXPLAIN_STEPS
from keras_robust.validation import check_explanation_settings
from keras_robust.export import card, signatures
from keras_robust.export.onnx_graphs import endpoint_models, keras_to_onnx, write_models

FORMATS = ("savedmodel", "onnx")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    training=None,
    ara=None,
    overwrite=False,
):
    """Exports a classifier for TF Serving and ONNX Runtime.

    Writes, under `out_dir/<name>/`:
    - `<version>/`: a SavedModel in TF Serving's layout with signatures
      `serving_default` (`images` → `logits`, `probabilities`, `classes`) and
      `explain` (`images`, `targets`, `rho`, `steps` → `explanations`,
      `delta`, `target_confidence`), batch dimension dynamic;
    - `<name>-<version>-predict.onnx`, `<name>-<version>-explain.onnx`: the
      same two endpoints, same input names and order;
    - `model_card.json`: class names, input spec, explanation defaults,
      training summary and ARA when given.

    Example:

    >>> model = keras_robust.resnet(depth=20)
    >>> paths = export_model(model, "exports", name="cifar10")
    >>> sorted(paths)
    ['card', 'onnx_explain', 'onnx_predict', 'saved_model']

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
        training: Optional training summary dict for the card.
        ara: Optional ARA evaluation dict for the card.
        overwrite: Replace an existing export of the same version.

    Returns:
        A dict of the written paths.
    """
    classifier = getattr(model, "classifier", model)
    name = name or classifier.name
    image_shape, num_classes = _validate(classifier, name, version, rho, steps, overshoot, formats)
    class_names = _class_names(class_names, num_classes)
    model_dir = os.path.join(out_dir, name)
    saved_model_dir = os.path.join(model_dir, str(version))
    if _version_exists(model_dir, version) and not overwrite:
        raise FileExistsError(
            f"Version {version} of {name!r} is already exported in {model_dir}; pick "
            f"another version or pass overwrite=True (--overwrite). Received: version={version}"
        )
    defaults = dict(rho=rho, steps=steps, overshoot=overshoot)
    onnx_models = None
    if "onnx" in formats:  # first: an operator without a derivative rule stops the export here
        onnx_models = endpoint_models(keras_to_onnx(classifier, image_shape), overshoot, defaults)
    os.makedirs(model_dir, exist_ok=True)
    paths = {}
    if "savedmodel" in formats:
        paths["saved_model"] = _write_saved_model(classifier, saved_model_dir, image_shape, overshoot)
    if onnx_models:
        onnx_paths = write_models(onnx_models, model_dir, f"{name}-{version}")
        paths.update({f"onnx_{k}": v for k, v in onnx_paths.items()})
    files = {k: os.path.relpath(v, model_dir) for k, v in paths.items()}
    paths["card"] = card.write_card(
        model_dir, card.build_card(name, version, classifier, class_names, defaults, files, training, ara)
    )
    paths["models_config"] = write_models_config(out_dir)
    return paths


def write_models_config(out_dir, mount="/models"):
    """Writes `out_dir/models.config` for TensorFlow Serving's `--model_config_file`.

    It lists every exported model under `out_dir` that has a SavedModel, with
    `base_path` under `mount`, where the docker command in docs/export.md
    mounts `out_dir`.
    """
    entries = []
    for name in sorted(os.listdir(out_dir)):
        model_dir = os.path.join(out_dir, name)
        if not os.path.exists(os.path.join(model_dir, card.CARD_FILE)):
            continue
        versions = card.read_card(model_dir)["versions"]
        if any("saved_model" in v.get("files", {}) for v in versions.values()):
            entries.append(
                f'  config {{\n    name: "{name}"\n    base_path: "{mount}/{name}"\n'
                f'    model_platform: "tensorflow"\n'
                "    model_version_policy { all {} }\n  }\n"
            )
    path = os.path.join(out_dir, "models.config")
    write_atomically(path, "model_config_list {\n" + "".join(entries) + "}\n")
    return path


def _version_exists(model_dir, version):
    if os.path.exists(os.path.join(model_dir, str(version))):
        return True
    if not os.path.exists(os.path.join(model_dir, card.CARD_FILE)):
        return False
    return str(version) in card.read_card(model_dir)["versions"]


def _write_saved_model(classifier, directory, image_shape, overshoot):
    """Writes the SavedModel atomically: a half-written version would be served."""
    specs = signatures.input_specs(image_shape)
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint("serving_default", signatures.predict_function(classifier), specs["predict"])
    archive.add_endpoint("explain", signatures.explain_function(classifier, overshoot), specs["explain"])
    partial = directory.rstrip(os.sep) + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(partial, verbose=False)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)
    return directory


def _validate(classifier, name, version, rho, steps, overshoot, formats):
    """Checks the arguments; returns the image shape and number of classes."""
    if not isinstance(classifier, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={classifier!r}")
    if not NAME_PATTERN.match(str(name)):
        raise ValueError(
            "`name` must be letters, digits, '_', '-' or '.', starting with a letter or "
            f"digit (it is a URL path segment). Received: name={name!r}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1. Received: version={version!r}")
    check_explanation_settings(rho, steps, overshoot, max_steps=signatures.MAX_STEPS)
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


def _class_names(class_names, num_classes):
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes or len(set(class_names)) != num_classes:
        raise ValueError(
            f"`class_names` needs {num_classes} distinct names, one per logit. "
            f"Received: class_names={class_names}"
        )
    return class_names


def load_sidecar_json(path):
    """Reads an optional JSON file written by training or evaluation, or None."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
