"""Pre-activation ResNet-50 for ImageNet-sized inputs (docs/imagenet.md)."""

import keras

from keras_robust.method.activations import get_activation_layer
from keras_robust.models.cifar_resnet import batch_norm, head, standardized_input

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (blocks, bottleneck width) per stage; each block outputs 4 × its width.
RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
BOTTLENECK_EXPANSION = 4


def resnet50(
    num_classes=1000,
    activation="half_huber_relu",
    input_shape=(224, 224, 3),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    name="resnet50",
):
    """Builds a pre-activation (v2) ResNet-50 in the style of `keras_robust.resnet`.

    The same conventions as the CIFAR network hold: images in [0, 1] in,
    standardisation inside the model (float32 under mixed precision, so input
    gradients and attack budgets are in [0, 1] pixel units), every activation
    `activation`, float32 logits out. `keras.applications.ResNet50V2` has the
    same blocks but fixed ReLUs and no standardisation inside, so the robust
    additions could not use it as is.

    Blocks (He et al., 2016, "Identity mappings"): a 7×7/2 stem and 3×3/2 max
    pool, then 3, 4, 6, 3 bottlenecks `1×1 → 3×3 → 1×1` (widths 64, 128, 256,
    512, output 4× that), each `main(act(BN(x))) + shortcut`, the stride on
    the 3×3 of each stage's first block, a 1×1 projection shortcut where the
    shape changes.

    Example:

    >>> model = resnet50(num_classes=1000)
    >>> model(keras.ops.zeros((1, 224, 224, 3))).shape
    TensorShape([1, 1000])

    Args:
        num_classes: Number of output logits, at least 2.
        activation: `"half_huber_relu"` (robust), `"relu"` (standard), or a
            Keras layer instance to copy.
        input_shape: `(height, width, channels)`; 224×224 for the recipe.
        mean: Per-channel mean subtracted inside the model (ImageNet's).
        std: Per-channel standard deviation divided out inside the model.
        name: Model name.

    Returns:
        A functional `keras.Model`.
    """
    inputs, x = standardized_input(num_classes, input_shape, mean, std)
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="stem_conv",
                            kernel_initializer=keras.initializers.HeNormal())(x)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for stage, (blocks, width) in enumerate(RESNET50_STAGES, start=1):
        for block in range(1, blocks + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _bottleneck(x, width, stride, activation, f"stage{stage}_block{block}")
    return keras.Model(inputs, head(x, num_classes, activation), name=name)


def _bottleneck(x, width, stride, activation, prefix):
    pre = batch_norm(f"{prefix}_bn1")(x)
    pre = get_activation_layer(activation, name=f"{prefix}_act1")(pre)
    main = _conv(width, 1, 1, f"{prefix}_conv1")(pre)
    main = batch_norm(f"{prefix}_bn2")(main)
    main = get_activation_layer(activation, name=f"{prefix}_act2")(main)
    if stride > 1:
        main = keras.layers.ZeroPadding2D(1, name=f"{prefix}_pad2")(main)
    main = _conv(width, 3, stride, f"{prefix}_conv2")(main)
    main = batch_norm(f"{prefix}_bn3")(main)
    main = get_activation_layer(activation, name=f"{prefix}_act3")(main)
    # A zero last conv makes an identity-shortcut block the identity at init.
    main = _conv(width * BOTTLENECK_EXPANSION, 1, 1, f"{prefix}_conv3", "zeros")(main)
    if stride == 1 and x.shape[-1] == width * BOTTLENECK_EXPANSION:
        shortcut = x
    else:
        shortcut = _conv(width * BOTTLENECK_EXPANSION, 1, stride, f"{prefix}_shortcut")(pre)
    return keras.layers.Add(name=f"{prefix}_add")([main, shortcut])


def _conv(filters, size, stride, name, kernel_initializer=None):
    return keras.layers.Conv2D(
        filters, size, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
        kernel_initializer=kernel_initializer or keras.initializers.HeNormal(), name=name,
    )
