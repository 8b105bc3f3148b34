"""Grad-CAM of an exported classifier (Keras or PyTorch alike), with ONNX Runtime only.

    keras-robust export net.onnx exports --name net --layout NCHW \
        --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225
    python examples/grad_cam_onnx.py exports/net cat.jpg --out grad_cam.png

Reads the export's model card, resizes the image to the model's input, runs
the predict graph for the top class and the Grad-CAM graph toward
`--target` (default: that class), and saves `input | Grad-CAM over the
input` side by side. Needs NumPy, Pillow and onnxruntime: no TensorFlow, no
PyTorch. The graphs take NHWC images in [0, 1] whatever the model's own
layout and normalisation; the export put both in front of the model.
"""

import argparse
import json
import os

import numpy as np
from PIL import Image

CARD = "model_card.json"
PANEL_HEIGHT = 256  # at least, in whole multiples of the image's pixels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="an exported model's folder (it holds model_card.json)")
    parser.add_argument("image", help="an image file (PNG, JPEG, ...)")
    parser.add_argument("--target", help="class index or name from the card (default: the predicted class)")
    parser.add_argument("--out", default="grad_cam.png")
    args = parser.parse_args()
    card = _card(parser, args.model_dir)
    if "onnx_grad_cam" not in card["files"]:
        parser.error(f"{args.model_dir} has no Grad-CAM graph (export it with --methods grad_cam; a network without "
                     "4-D feature maps, such as a vision transformer, has none)")
    image = _image(parser, args.image, card["input"]["shape"][1:3])

    import onnxruntime

    def session(kind):
        return onnxruntime.InferenceSession(os.path.join(args.model_dir, card["files"][f"onnx_{kind}"]),
                                            providers=["CPUExecutionProvider"])

    names = card["class_names"]
    probabilities = session("predict").run(["probabilities"], {"images": image})[0][0]
    predicted = int(np.argmax(probabilities))
    target = predicted if args.target is None else _class(parser, args.target, names)
    print(f"prediction: {names[predicted]} (p = {probabilities[predicted]:.3f})")
    heat = session("grad_cam").run(["attributions"], {"images": image, "targets": np.array([target], np.int32)})[0][0]
    row, column = np.unravel_index(np.argmax(heat), heat.shape)
    print(f"Grad-CAM toward {names[target]}: hottest at row {row}, column {column} of {heat.shape[0]}×{heat.shape[1]}")
    _save_panel(image[0], heat, args.out)
    print(f"saved {args.out}")


def _card(parser, model_dir):
    try:
        with open(os.path.join(model_dir, CARD), encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        parser.error(f"cannot read {os.path.join(model_dir, CARD)}: {error}")


def _image(parser, path, size):
    try:
        picture = Image.open(path).convert("RGB")
    except OSError as error:
        parser.error(f"cannot read image {path}: {error}")
    resized = picture.resize((size[1], size[0]), Image.BILINEAR)
    return (np.asarray(resized, np.float32) / 255.0)[None]


def _class(parser, value, names):
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    parser.error(f"--target must be a class index in [0, {len(names)}) or one of {', '.join(names)}. "
                 f"Received: {value!r}")


def _save_panel(image, heat, path):
    """`image | image under the heat map`, the map scaled to its own maximum (red where it is hottest)."""
    scaled = heat / heat.max() if heat.max() > 0 else heat
    overlay = 0.5 * image + 0.5 * np.stack([scaled, np.zeros_like(scaled), 1.0 - scaled], axis=-1)
    panel = (np.concatenate([image, overlay], axis=1) * 255).round().astype(np.uint8)
    height, width = panel.shape[:2]
    scale = -(-PANEL_HEIGHT // height)
    Image.fromarray(panel).resize((width * scale, height * scale), Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
