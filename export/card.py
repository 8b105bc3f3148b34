"""The model card: what a client needs to call an export, beside the exports."""

import datetime
import json
import os

from keras_robust.common.atomic import write_atomically
from keras_robust.common.defaults import (
    INTEGRATED_GRADIENTS_STEPS,
    MAX_ATTRIBUTION_PASSES,
    MAX_EXPLAIN_STEPS,
    SMOOTHGRAD_NOISE,
    SMOOTHGRAD_SAMPLES,
    SMOOTHGRAD_SEED,
)

CARD_FILE = "model_card.json"


PREDICT_INPUTS = ("images",)
PREDICT_OUTPUTS = ("logits", "probabilities", "classes")
EXPLAIN_INPUTS = ("images", "targets", "rho", "steps")
EXPLAIN_OUTPUTS = ("explanations", "delta", "target_confidence", "first_met_step", "target_is_top")
# The attribution methods an export serves beside predict and explain, as signatures of these names, their
# inputs in this order; each setting after `targets` is optional in the ONNX graphs, where it defaults to
# ATTRIBUTION_DEFAULTS, and holds one entry for all images or one per image.
ATTRIBUTION_INPUTS = {
    "saliency": ("images", "targets"),
    "smoothgrad": ("images", "targets", "samples", "noise", "seed"),
    "integrated_gradients": ("images", "targets", "steps", "baseline"),
    "grad_cam": ("images", "targets"),
}
ATTRIBUTION_METHODS = tuple(ATTRIBUTION_INPUTS)
ATTRIBUTION_OUTPUTS = ("attributions",)
ATTRIBUTION_DEFAULTS = {
    "smoothgrad": {"samples": SMOOTHGRAD_SAMPLES, "noise": SMOOTHGRAD_NOISE, "seed": SMOOTHGRAD_SEED},
    "integrated_gradients": {"steps": INTEGRATED_GRADIENTS_STEPS, "baseline": 0.0},  # a number fills the image
}
# What each output holds, per example: the card, the OpenAPI document and the docs say it in these words.
OUTPUT_MEANINGS = {
    "logits": "float32 [B, K]: the classifier's logits",
    "probabilities": "float32 [B, K]: softmax of the logits",
    "classes": "int64 [B]: the top class",
    "explanations": "float32 [B, H, W, C]: the explanation x + delta",
    "delta": "float32 [B, H, W, C]: the perturbation delta toward the target",
    "target_confidence": "float32 [B]: softmax probability of the target on x + delta",
    "first_met_step": "int32 [B]: the 0-based step at which RMSE(delta) first reached rho, -1 if it never did "
                      "(the explanation is then weaker than asked; a sound one reaches it by step floor(steps / 2))",
    "target_is_top": "bool [B]: the target is the top class on x + delta (the network now gives the explained "
                     "answer)",
    "attributions": "float32 [B, H, W, C] (grad_cam: [B, H, W]): how much each pixel moves the target's logit, "
                    "by the method the signature names",
}


def build_card(name, version, image_shape, class_names, defaults, files, training=None, ara=None, source=None,
               attributions=None):
    """The card of one exported version (a JSON-serialisable dict).

    `source` describes an ONNX classifier's own input convention (its file,
    layout, mean and std), which the exported graphs wrap; None for Keras.
    `attributions` is `{"methods": [...], "grad_cam_layer": name or None}`
    for the attribution methods exported.
    """
    image_shape = list(image_shape)
    attributions = attributions or {"methods": [], "grad_cam_layer": None}
    methods = list(attributions["methods"])
    return {
        "name": name,
        "version": int(version),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "input": {
            "name": "images",
            "shape": [None, *image_shape],
            "dtype": "float32",
            "layout": "NHWC, RGB",
            "range": [0.0, 1.0],
        },
        "signatures": {
            "serving_default": {"inputs": list(PREDICT_INPUTS), "outputs": list(PREDICT_OUTPUTS)},
            "explain": {"inputs": list(EXPLAIN_INPUTS), "outputs": list(EXPLAIN_OUTPUTS)},
            **{method: {"inputs": list(ATTRIBUTION_INPUTS[method]), "outputs": list(ATTRIBUTION_OUTPUTS)}
               for method in methods},
        },
        "outputs": {name: OUTPUT_MEANINGS[name]
                    for name in PREDICT_OUTPUTS + EXPLAIN_OUTPUTS + (ATTRIBUTION_OUTPUTS if methods else ())},
        "explain_defaults": {
            "rho": float(defaults["rho"]),
            "steps": int(defaults["steps"]),
            "overshoot": float(defaults["overshoot"]),
            "max_steps": MAX_EXPLAIN_STEPS,
            "method": "adversarial explanation (docs/method.md §5): bounded targeted attack, "
                      "RMSE(delta) = rho, overshoot fixed at export",
        },
        "attribution_defaults": {
            **{method: settings for method, settings in ATTRIBUTION_DEFAULTS.items() if method in methods},
            **({"grad_cam": {"layer": attributions["grad_cam_layer"]}} if "grad_cam" in methods else {}),
            "max_passes": MAX_ATTRIBUTION_PASSES,
        },
        "files": files,
        "source": source,
        "training": training,
        "ara": ara,
    }


def signature_defaults(card, signature):
    """`{input: value}`: the inputs of `signature` a request may leave out, with the values the card gives them."""
    given = card["explain_defaults"] if signature == "explain" else card.get("attribution_defaults", {}).get(
        signature, {})
    return {name: given[name] for name in card["signatures"][signature]["inputs"] if name in given}


def write_card(directory, card):
    """Merges `card` into `directory/model_card.json` (one entry per version).

    The top level describes the latest version; `versions` keeps every one.
    """
    path = os.path.join(directory, CARD_FILE)
    versions = {}
    if os.path.exists(path):
        versions = read_card(directory).get("versions", {})
    versions[str(card["version"])] = card
    latest = versions[str(max(int(v) for v in versions))]
    write_atomically(path, json.dumps(dict(latest, versions=versions), indent=2))
    return path


def read_card(directory):
    """Reads `directory/model_card.json`, naming the file on any problem."""
    path = os.path.join(directory, CARD_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No {CARD_FILE} in {directory}: not a keras-robust export "
            "(run `keras-robust export MODEL OUT` first)"
        )
    try:
        with open(path) as f:
            card = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(card, dict) or "versions" not in card:
        raise ValueError(f"{path} is not a keras-robust model card (no 'versions')")
    return card
