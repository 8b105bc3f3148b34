"""Writes the PyTorch classifiers the ONNX-classifier tests explain, with torch's own gradients.

Run with a Python that has torch and torchvision (never a dependency of
keras-robust, its dev extra or CI; see ../../../docs/export.md):

    TORCH_PYTHON tests/data/torch_classifiers/make_models.py

For each model it writes `<name>.onnx` (torch.onnx.export, opset 17,
dynamic batch, random weights with batch-norm statistics measured on random
images) and
`<name>.npz`: two images in [0, 1] (NHWC), labels, torch's logits, and
torch autograd's gradient of the summed cross-entropy with respect to the
[0, 1] images, through the normalisation the model expects; and, for
`targets` (per image the class with the most Grad-CAM mass, so that no map
is all zero, else the labels), torch's attributions: `saliency` (the target logit's
gradient), `integrated_gradients` (black baseline, `IG_STEPS` trapezoidal
intervals) and, for the networks with a global pooling of 4-D feature
maps, `grad_cam` (those maps, resized bilinearly with half-pixel centres).

The images are drawn so that no activation's input lies within 1e-5 of a
kink (ReLU's 0, hard-swish's ±3) and no max pool's two largest inputs in a
window lie within 1e-5 of each other: closer than that, the two frameworks'
float32 rounding (about 1e-6) can put a unit on different sides of a kink or
pick the other maximum, and the gradients then rightly differ.
"""

import math
import pathlib

import numpy as np
import torch
import torchvision

HERE = pathlib.Path(__file__).resolve().parent
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINKS = {torch.nn.ReLU: (0.0,), torch.nn.Hardswish: (-3.0, 3.0), torch.nn.Hardsigmoid: (-3.0, 3.0)}
MARGIN = 1e-5
IG_STEPS = 16


def models():
    """`{name: (module, image size, normalised input?)}`: a CNN with fire modules, a
    mobile network with hard-swish and squeeze-excitation, a small vision transformer, a
    channel-shuffling network and a small shifted-window transformer."""
    return {
        "squeezenet": (torchvision.models.squeezenet1_1(num_classes=10), 64, True),
        "mobilenet_v3": (torchvision.models.mobilenet_v3_small(num_classes=10, width_mult=0.5), 64, True),
        "vit": (torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10,
        ), 32, False),
        # The older exporter writes these two with reshapes whose shapes are computed at run time.
        "shufflenet": (torchvision.models.shufflenet_v2_x0_5(num_classes=10), 64, True),
        "swin": (torchvision.models.SwinTransformer(
            patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], num_classes=10,
        ), 32, False),
    }


def feature_maps(module):
    """`(layer, hook kind)` whose input (`"pre"`) or output (`"post"`) is Grad-CAM's feature maps, the last 4-D
    activation before global pooling; None for the vision transformer, which has none."""
    return {torchvision.models.SqueezeNet: lambda m: (m.classifier[3], "pre"),
            torchvision.models.MobileNetV3: lambda m: (m.avgpool, "pre"),
            torchvision.models.SwinTransformer: lambda m: (m.avgpool, "pre"),
            torchvision.models.ShuffleNetV2: lambda m: (m.conv5, "post"),  # its forward pools with mean()
            }.get(type(module), lambda m: None)(module)


def logit_gradient(module, images, labels, normalised):
    """The gradient of the summed target logits with respect to [0, 1] images."""
    images = images.detach().clone().requires_grad_(True)
    module(model_input(images, normalised)).gather(1, labels[:, None]).sum().backward()
    return images.grad


def integrated_gradients(module, images, labels, normalised):
    weights = torch.full((IG_STEPS + 1,), 1.0 / IG_STEPS)
    weights[[0, -1]] /= 2
    total = sum(weight * logit_gradient(module, (j / IG_STEPS) * images, labels, normalised)
                for j, weight in enumerate(weights))
    return images.detach() * total


def attribution_targets(module, images, labels, normalised):
    """Per image, the class whose Grad-CAM map has the largest sum (random weights leave many maps all zero)."""
    if feature_maps(module) is None:
        return labels
    classes = module(model_input(images.detach()[:1], normalised)).shape[1]
    mass = torch.stack([grad_cam(module, images, torch.full_like(labels, k), normalised).sum(dim=(1, 2))
                        for k in range(classes)], dim=1)
    return mass.argmax(dim=1)


def grad_cam(module, images, labels, normalised):
    if feature_maps(module) is None:
        return None
    layer, kind = feature_maps(module)
    captured = {}
    if kind == "pre":
        handle = layer.register_forward_pre_hook(lambda _, args: captured.update(maps=args[0]))
    else:
        handle = layer.register_forward_hook(lambda _, args, output: captured.update(maps=output))
    logits = module(model_input(images.detach(), normalised))
    handle.remove()
    maps = captured["maps"]
    gradient, = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), maps)
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1, keepdim=True))
    size = images.shape[1:3]
    return torch.nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0].detach()


def randomise(module, generator, size, normalised):
    """Non-degenerate random weights: no all-zero layer (the ViT's head starts at 0), batch-norm scales drawn, and
    batch-norm statistics measured on random images, so activations and logits are of order one (with the
    initial statistics MobileNetV3's logits are about 1e-8 and every gradient vanishes)."""
    batch_norms = [layer for layer in module.modules() if isinstance(layer, torch.nn.BatchNorm2d)]
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear) and not layer.weight.any():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)
    for layer in batch_norms:
        layer.weight.data.copy_(torch.rand(layer.weight.shape, generator=generator) + 0.5)
        layer.bias.data.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the calibration batches
    if batch_norms:
        module.train()
        for _ in range(4):
            module(model_input(torch.rand(16, size, size, 3, generator=generator), normalised))
        module.eval()


def model_input(images, normalised):
    nchw = images.permute(0, 3, 1, 2)
    if normalised:
        nchw = (nchw - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    return nchw


def kink_margin(module, inputs):
    """The smallest distance of any activation's input from one of its kinks, or of a max pool's largest input
    from the runner-up in its window (a tie: the two frameworks' rounding may pick either)."""
    margins = []

    def hook(layer, args):
        if isinstance(layer, torch.nn.MaxPool2d):
            margins.append(max_pool_gap(layer, args[0]))
        else:
            margins.append(min(float((args[0] - k).abs().min()) for k in KINKS[type(layer)]))

    handles = [layer.register_forward_pre_hook(hook) for layer in module.modules()
               if type(layer) in KINKS or isinstance(layer, torch.nn.MaxPool2d)]
    with torch.no_grad():
        module(inputs)
    for handle in handles:
        handle.remove()
    return min(margins, default=float("inf"))


def max_pool_gap(layer, x):
    """The smallest gap, other than an exact tie, between the largest and second-largest value of any of the
    pool's windows."""
    kernel, stride, padding = (torch.nn.modules.utils._pair(v) for v in (layer.kernel_size, layer.stride, layer.padding))
    rounding = math.ceil if layer.ceil_mode else math.floor
    extra = []
    for axis in (0, 1):  # ceil mode reads windows that run past the input: padding for them
        size = x.shape[2 + axis] + 2 * padding[axis]
        windows = rounding((size - kernel[axis]) / stride[axis]) + 1
        extra.append(max(0, (windows - 1) * stride[axis] + kernel[axis] - size))
    padded = torch.nn.functional.pad(x, (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0]),
                                     value=-math.inf)
    values = torch.nn.functional.unfold(padded, kernel, stride=stride).reshape(x.shape[0], x.shape[1],
                                                                               kernel[0] * kernel[1], -1)
    top = values.topk(2, dim=2).values
    gaps = top[:, :, 0] - top[:, :, 1]
    # Exact ties (windows of ReLU's zeros) are computed alike everywhere, and send no gradient through the ReLU.
    return float(gaps[gaps > 0].min())


def main():
    torch.manual_seed(1776)
    for name, (module, size, normalised) in models().items():
        generator = torch.Generator().manual_seed(1776)  # one per model: each file is reproducible alone
        module.eval()
        with torch.no_grad():
            randomise(module, generator, size, normalised)
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
        targets = attribution_targets(module, images, labels, normalised)
        attributions = {
            "saliency": logit_gradient(module, images, targets, normalised),
            "integrated_gradients": integrated_gradients(module, images, targets, normalised),
            "grad_cam": grad_cam(module, images, targets, normalised),
        }
        np.savez_compressed(
            HERE / f"{name}.npz", images=images.detach().numpy(), labels=labels.numpy(),
            logits=logits.detach().numpy(), gradient=images.grad.numpy(), normalised=normalised,
            targets=targets.numpy(), ig_steps=IG_STEPS, **{key: value.numpy() for key, value in attributions.items() if value is not None},
        )
        print(name, (HERE / f"{name}.onnx").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
