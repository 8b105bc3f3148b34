"""Writes the PyTorch classifiers the ONNX-classifier tests explain, with torch's own gradients.

Run with a Python that has torch and torchvision (never a dependency of
keras-robust, its dev extra or CI; see ../../../docs/export.md):

    TORCH_PYTHON tests/data/torch_classifiers/make_models.py

For each model it writes `<name>.onnx` (torch.onnx.export, opset 17,
dynamic batch, random weights with non-trivial batch-norm statistics) and
`<name>.npz`: two images in [0, 1] (NHWC), labels, torch's logits, and
torch autograd's gradient of the summed cross-entropy with respect to the
[0, 1] images, through the normalisation the model expects.

The images are drawn so that no activation's input lies within 1e-5 of a
kink (ReLU's 0, hard-swish's ±3): closer than that, the two frameworks'
float32 rounding (about 1e-6) can put a unit on different sides of it,
and the gradients then rightly differ.
"""

import pathlib

import numpy as np
import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINKS = {torch.nn.ReLU: (0.0,), torch.nn.Hardswish: (-3.0, 3.0), torch.nn.Hardsigmoid: (-3.0, 3.0)}
MARGIN = 1e-5


def models():
    """`{name: (module, image size, normalised input?)}`: a CNN with fire modules, a
    mobile network with hard-swish and squeeze-excitation, and a small vision transformer."""
    return {
        "squeezenet": (torchvision.models.squeezenet1_1(num_classes=10), 64, True),
        "mobilenet_v3": (torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.5), 64, True),
        "vit": (torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10,
        ), 32, False),
    }


def randomise(module, generator):
    """Batch-norm statistics away from the identity, and no all-zero layer (the ViT's head starts at 0)."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear) and not layer.weight.any():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)
        if isinstance(layer, torch.nn.BatchNorm2d):
            shape = layer.running_mean.shape
            layer.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(shape, generator=generator) * 0.1)


def model_input(images, normalised):
    nchw = images.permute(0, 3, 1, 2)
    if normalised:
        nchw = (nchw - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return nchw


def kink_margin(module, inputs):
    """The smallest distance of any activation's input from one of its kinks."""
    margins = []

    def hook(layer, args):
        kinks = KINKS[type(layer)]
        margins.append(min(float((args[0] - k).abs().min()) for k in kinks))

    handles = [layer.register_forward_pre_hook(hook) for layer in module.modules() if type(layer) in KINKS]
    with torch.no_grad():
        module(inputs)
    for handle in handles:
        handle.remove()
    return min(margins, default=float("inf"))


def main():
    torch.manual_seed(1776)
    generator = torch.Generator().manual_seed(1776)
    for name, (module, size, normalised) in models().items():
        module.eval()
        with torch.no_grad():
            randomise(module, generator)
        images = next(x for x in iter(lambda: torch.rand(2, size, size, 3, generator=generator), None)
                      if kink_margin(module, model_input(x, normalised)) >= MARGIN)
        images.requires_grad_(True)
        labels = torch.tensor([3, 8])
        logits = module(model_input(images, normalised))
        torch.nn.functional.cross_entropy(logits, labels, reduction="sum").backward()
        torch.onnx.export(
            module, torch.zeros(1, 3, size, size), str(HERE / f"{name}.onnx"), input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
        np.savez_compressed(
            HERE / f"{name}.npz", images=images.detach().numpy(), labels=labels.numpy(),
            logits=logits.detach().numpy(), gradient=images.grad.numpy(), normalised=normalised,
        )
        print(name, (HERE / f"{name}.onnx").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
