"""The `keras.applications` image classifiers, built untrained at a small input for robust training.

Example:

>>> model = backbone("MobileNetV2", num_classes=10)          # 32x32 RGB in [0, 1] -> 10 logits
>>> robust = keras_robust.RobustModel(model)                  # ReLU6s already half-Huber
"""

import keras

from keras_robust.common.validation import check_choice, check_positive_int
from keras_robust.method.smooth_activations import with_half_huber_relu

# Each network and the smallest square input (pixels) it accepts, or 32 where it accepts CIFAR-10's.
BACKBONES = {
    "ResNet50": 32, "ResNet50V2": 32, "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32,
    "MobileNetV3Large": 32, "EfficientNetB0": 32, "EfficientNetV2B0": 32, "DenseNet121": 32,
    "InceptionV3": 75, "Xception": 71, "VGG16": 32, "ConvNeXtTiny": 32, "NASNetMobile": 32,
}

# What each network's own `preprocess_input` makes of [0, 255] pixels, as `x · scale + offset` on
# [0, 1] pixels: "tf" [-1, 1]; "torch" ImageNet mean and std; "caffe" 0-255 less the ImageNet mean
# (colour order kept: the weights are untrained); "inside" 0-255, the network scales them itself.
_PIXEL_MAPS = {
    "tf": (2.0, -1.0),
    "torch": ((1 / 0.229, 1 / 0.224, 1 / 0.225), (-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225)),
    "caffe": (255.0, (-123.68, -116.779, -103.939)),
    "inside": (255.0, 0.0),
}
_PREPROCESSING = {
    "ResNet50": "caffe", "VGG16": "caffe", "DenseNet121": "torch", "MobileNetV3Small": "inside",
    "MobileNetV3Large": "inside", "EfficientNetB0": "inside", "EfficientNetV2B0": "inside", "ConvNeXtTiny": "inside",
}


def backbone(name, num_classes=10, size=None, smooth=True, **kwargs):
    """A `keras.applications` classifier with random weights and logits out, at `size`×`size`.

    Args:
        name: A key of `BACKBONES`, e.g. `"MobileNetV2"`.
        num_classes: Number of output logits.
        size: Input height and width; defaults to `BACKBONES[name]`, the
            smallest the network takes or 32.
        smooth: Whether to return it through `keras_robust.with_half_huber_relu`
            (ReLU, ReLU6, hard sigmoid and hard swish smoothed), as robust
            training needs.
        **kwargs: Further arguments of the constructor, e.g. `alpha=0.35`.

    Returns:
        A `keras.Model` mapping `(batch, size, size, 3)` images in [0, 1], like every model of
        this package, to `num_classes` logits. Its first layer maps them to what the network's
        own `preprocess_input` would feed it.
    """
    check_choice("name", name, BACKBONES)
    check_positive_int("num_classes", num_classes)
    size = BACKBONES[name] if size is None else size
    check_positive_int("size", size)
    if size < BACKBONES[name]:
        raise ValueError(f"{name} takes inputs of at least {BACKBONES[name]}x{BACKBONES[name]}. Received: size={size}")
    network = getattr(keras.applications, name)(weights=None, classes=num_classes, classifier_activation=None,
                                                input_shape=(size, size, 3), **kwargs)
    scale, offset = _PIXEL_MAPS[_PREPROCESSING.get(name, "tf")]
    inputs = keras.Input((size, size, 3), name="images")
    pixels = keras.layers.Rescaling(scale, offset, name="preprocessing")(inputs)
    model = keras.Model(inputs, network(pixels), name=name.lower())
    return with_half_huber_relu(model) if smooth else model
