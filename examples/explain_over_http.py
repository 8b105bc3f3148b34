"""Ask a running `keras-robust serve` (or TF Serving) what an image is, and why.

    keras-robust export runs/robust/model.keras exports --name cifar10
    keras-robust serve exports &
    python examples/explain_over_http.py cat.png --target dog --out explanation.png

Sends the image once to `:predict` (the class and its probability), then asks
the `explain` signature for the adversarial explanation toward `--target`
(docs/method.md §5), and saves `input | x + δ | |δ|` side by side. Only the standard
library, NumPy and Pillow: what a client of the REST API needs.

The image goes as a nested list of floats in [0, 1], resized here to the
model's input, so the same requests work on TensorFlow Serving.
"""

import argparse
import json
import urllib.error
import urllib.request

import numpy as np
from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="an image file (PNG, JPEG, ...)")
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="the server")
    parser.add_argument("--model", default="cifar10", help="model name in the URL")
    parser.add_argument("--target", required=True, help="class index, or a class name from the model card")
    parser.add_argument("--rho", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--out", default="explanation.png")
    args = parser.parse_args()

    base = f"{args.url}/v1/models/{args.model}"
    try:
        card = _get(base + "/metadata")["metadata"]["card"]
    except (urllib.error.URLError, OSError) as error:  # the server's own message when it answered
        parser.error(f"cannot read model {args.model!r} at {args.url}: {_reason(error)}")
    names = card["class_names"]
    target = _target(args.target, names)
    if target is None:
        parser.error(f"--target must be a class index in [0, {len(names)}) or one of {', '.join(names)}. "
                     f"Received: {args.target!r}")
    _, height, width, _ = card["input"]["shape"]
    try:
        image = np.asarray(Image.open(args.image).convert("RGB").resize((width, height)), np.float32) / 255
    except OSError as error:
        parser.error(f"{args.image} is not a readable image: {error}")

    predicted = _post(base + ":predict", {"instances": [image.tolist()]})["predictions"][0]
    print(f"prediction: {names[predicted['classes']]} ({max(predicted['probabilities']):.3f})")

    request = {"signature_name": "explain", "instances": [
        {"images": image.tolist(), "targets": target, "rho": args.rho, "steps": args.steps}]}
    explained = _post(base + ":predict", request)["predictions"][0]
    print(f"explanation toward {names[target]}: confidence "
          f"{predicted['probabilities'][target]:.3f} -> {explained['target_confidence']:.3f}")
    print(_outcome(explained, names[target], args.rho, args.steps))
    _save(image, np.array(explained["explanations"]), np.array(explained["delta"]), args.out)
    print(f"wrote {args.out}")


def _outcome(explained, name, rho, steps):
    """Whether the explanation is evidence: delta reached rho in time, and the network now gives the target.
    (An export from before these fields existed answers without them.)"""
    if "first_met_step" not in explained:
        return "outcome: not reported by this export"
    step = explained["first_met_step"]
    reached = (f"delta never reached rho={rho} in {steps} steps (an empty explanation)" if step < 0 else
               f"delta reached rho={rho} at step {step} of {steps}" + (" (late)" if step > steps // 2 else ""))
    top = "now gives" if explained["target_is_top"] else "does not give"
    return f"outcome: {reached}; the network {top} {name} on x + delta"


def _target(text, names):
    """The class index `text` names (an index or a class name), or None."""
    if text in names:
        return names.index(text)
    return int(text) if text.isdigit() and int(text) < len(names) else None


def _reason(error):
    if isinstance(error, urllib.error.HTTPError):
        return json.loads(error.read() or b"{}").get("error", str(error))
    return str(getattr(error, "reason", error))


def _save(image, explanation, delta, path):
    heat = np.abs(delta).mean(axis=-1)
    heat = np.repeat((heat / max(heat.max(), 1e-12))[..., None], 3, axis=-1)
    panel = np.concatenate([image, np.clip(explanation, 0, 1), heat], axis=1)
    Image.fromarray((panel * 255).round().astype(np.uint8)).resize(
        (panel.shape[1] * 4, panel.shape[0] * 4), Image.NEAREST).save(path)


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _post(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


if __name__ == "__main__":
    main()
