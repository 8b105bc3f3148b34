"""The model card: what a client needs to call an export, beside the exports."""

import datetime
import json
import os

from keras_robust.common.atomic import write_atomically

CARD_FILE = "model_card.json"


PREDICT_INPUTS = ("images",)
PREDICT_OUTPUTS = ("logits", "probabilities", "classes")
EXPLAIN_INPUTS = ("images", "targets", "rho", "steps")
EXPLAIN_OUTPUTS = ("explanations", "delta", "target_confidence")
MAX_STEPS = 10_000


def build_card(name, version, image_shape, class_names, defaults, files, training=None, ara=None, source=None):
    """The card of one exported version (a JSON-serialisable dict).

    `source` describes an ONNX classifier's own input convention (its file,
    layout, mean and std), which the exported graphs wrap; None for Keras.
    """
    image_shape = list(image_shape)
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
        },
        "explain_defaults": {
            "rho": float(defaults["rho"]),
            "steps": int(defaults["steps"]),
            "overshoot": float(defaults["overshoot"]),
            "max_steps": MAX_STEPS,
            "method": "adversarial explanation (docs/method.md §5): bounded targeted attack, "
                      "RMSE(delta) = rho, overshoot fixed at export",
        },
        "files": files,
        "source": source,
        "training": training,
        "ara": ara,
    }


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
