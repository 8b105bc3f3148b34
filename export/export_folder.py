"""The export folder shared by every exporter: names, versions, the card, TF Serving's config.

Imports no TensorFlow, so exporting an ONNX classifier needs none.
"""

import os
import re
import warnings

from keras_robust.common.atomic import write_atomically
from keras_robust.common.defaults import V2_SUFFIXES, v2_endpoints_named
from keras_robust.common.validation import check_explanation_settings
from keras_robust.export import card

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def finish_export(out_dir, name, version, paths, image_shape, class_names, defaults, training=None, ara=None,
                  source=None, attributions=None):
    """Writes the model card and TF Serving's models.config after the exported files."""
    model_dir = os.path.join(out_dir, name)
    files = {k: os.path.relpath(v, model_dir) for k, v in paths.items()}
    paths["card"] = card.write_card(
        model_dir,
        card.build_card(name, version, image_shape, class_names, defaults, files, training, ara, source, attributions),
    )
    paths["models_config"] = write_models_config(out_dir)
    return paths


def check_methods(methods):
    """The attribution methods to export: `methods` checked, or all of them for None."""
    if methods is None:
        return card.ATTRIBUTION_METHODS
    if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
        raise ValueError(f"`methods` must be a list of method names from {card.ATTRIBUTION_METHODS}. "
                         f"Received: methods={methods!r}")
    unknown = [m for m in methods if m not in card.ATTRIBUTION_METHODS]
    if unknown:
        raise ValueError(f"Unknown attribution methods {unknown}; known: {', '.join(card.ATTRIBUTION_METHODS)}. "
                         f"Received: methods={methods!r}")
    return tuple(dict.fromkeys(methods))


def without_grad_cam(methods, requested, reason):
    """`methods` without Grad-CAM for a classifier without feature maps: an error if Grad-CAM was asked for by
    name, a warning if it came with the default methods."""
    if "grad_cam" not in methods:
        return methods
    if requested is not None:
        raise ValueError(f"Grad-CAM cannot be exported for this classifier: {reason} Leave grad_cam out of "
                         f"`methods` (--methods). Received: methods={list(requested)!r}")
    warnings.warn(f"Exporting without Grad-CAM: {reason}", stacklevel=3)
    return tuple(m for m in methods if m != "grad_cam")


def check_export_settings(name, version, rho, steps, overshoot):
    """The checks every export shares: the name, the version and the explanation defaults."""
    if not NAME_PATTERN.match(str(name)):
        raise ValueError(
            "`name` must be letters, digits, '_', '-' or '.', starting with a letter or "
            f"digit (it is a URL path segment). Received: name={name!r}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be an integer >= 1. Received: version={version!r}")
    check_explanation_settings(rho, steps, overshoot)


def check_new_version(out_dir, name, version, overwrite):
    """The model's folder, after refusing to replace an exported version unless told, and a name that V2
    clients could not tell from another export's explainer or attribution endpoint (`m-explainer` or
    `m-grad-cam` beside `m`)."""
    model_dir = os.path.join(out_dir, name)
    clashes = []
    for base, signature in v2_endpoints_named(name):
        clashes.append((base, f"{name!r} is the name V2 clients use for {base!r}'s {signature} endpoint"))
    for signature, suffix in V2_SUFFIXES.items():
        clashes.append((name + suffix, f"{name!r}'s {signature} endpoint is what V2 clients call "
                                       f"{name + suffix!r}, an export there"))
    for other, what in clashes:
        if other and os.path.exists(os.path.join(out_dir, other, card.CARD_FILE)):
            raise ValueError(f"{out_dir} holds the export {other!r}, and {what}: one server could not tell the "
                             f"two apart. Choose another name. Received: name={name!r}")
    if _version_exists(model_dir, version) and not overwrite:
        raise FileExistsError(
            f"Version {version} of {name!r} is already exported in {model_dir}; pick "
            f"another version or pass overwrite=True (--overwrite). Received: version={version}"
        )
    return model_dir


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


def check_class_names(class_names, num_classes):
    """One distinct name per logit; `"0"`, `"1"`, ... when None."""
    if class_names is None:
        return [str(k) for k in range(num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes or len(set(class_names)) != num_classes:
        raise ValueError(
            f"`class_names` needs {num_classes} distinct names, one per logit. "
            f"Received: class_names={class_names}"
        )
    return class_names
