"""Pre-activation ResNet for CIFAR-style inputs, as in the reference (docs/method.md §2)."""

import keras

from keras_robust.common.defaults import CIFAR10_MEAN, CIFAR10_STD
from keras_robust.common.validation import validate_depth
from keras_robust.method.activations import get_activation_layer
from keras_robust.models.fused_batch_norm import FusedBatchNormalization

STAGE_WIDTHS = (16, 32, 64)
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def resnet(
    depth=44,
    num_classes=10,
    activation="half_huber_relu",
    input_shape=(32, 32, 3),
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    name=None,
):
    """Builds the reference pre-activation ResNet (docs/method.md §2).

    The model maps RGB images in [0, 1] to class logits. It standardises its
    input itself, so gradients and attack budgets are in [0, 1] pixel units.
    Layer names are stable (`stage2_block1_conv1`, `head_bn`, ...) so weights
    trained elsewhere for this architecture can be loaded layer by layer.

    Example:

    >>> model = resnet(depth=20, activation="relu")
    >>> model(keras.ops.zeros((2, 32, 32, 3))).shape
    TensorShape([2, 10])

    Args:
        depth: Total depth, `6 n + 2` for `n` blocks per stage (20, 32, 44,
            56, 110, ...).
        num_classes: Number of output logits, at least 2.
        activation: `"half_huber_relu"` (robust), `"relu"` (standard), or a
            Keras layer instance to copy.
        input_shape: `(height, width, channels)` of the images.
        mean: Per-channel mean subtracted inside the model.
        std: Per-channel standard deviation divided out inside the model.
        name: Model name; defaults to `"resnet{depth}"`.

    Returns:
        A functional `keras.Model`.
    """
    validate_depth(depth)
    inputs, x = standardized_input(num_classes, input_shape, mean, std)
    blocks_per_stage = (depth - 2) // 6
    x = _conv(STAGE_WIDTHS[0], 1, "stem_conv")(x)
    for stage, width in enumerate(STAGE_WIDTHS, start=1):
        for block in range(1, blocks_per_stage + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _block(x, width, stride, activation, f"stage{stage}_block{block}")
    return keras.Model(inputs, head(x, num_classes, activation), name=name or f"resnet{depth}")


def standardized_input(num_classes, input_shape, mean, std):
    """Checks the builder arguments; returns the `images` input and its standardised tensor."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    if not len(mean) == len(std) == input_shape[-1]:
        raise ValueError(
            "`mean` and `std` need one value per input channel "
            f"({input_shape[-1]}). Received: mean={mean}, std={std}"
        )
    inputs = keras.Input(shape=input_shape, name="images")
    # Under a mixed-precision policy the input standardisation and the logits
    # stay float32: a bfloat16 pixel has 8 bits of mantissa, coarser than the
    # perturbations attacks and ARA measure, and the loss wants float32 logits.
    x = keras.layers.Normalization(
        mean=list(mean), variance=[s * s for s in std], name="standardize", dtype="float32"
    )(inputs)
    return inputs, x


def head(x, num_classes, activation):
    """The pre-activation head: BN, activation, global average pool, float32 logits."""
    x = batch_norm("head_bn")(x)
    x = get_activation_layer(activation, name="head_act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.HeUniform(),
        bias_initializer="zeros",
        name="logits",
        dtype="float32",
    )(x)


def _block(x, width, stride, activation, prefix):
    """One pre-activation block: `main(act(BN(x))) + shortcut` (docs/method.md §2)."""
    pre = batch_norm(f"{prefix}_bn1")(x)
    pre = get_activation_layer(activation, name=f"{prefix}_act1")(pre)
    main = _conv(width, stride, f"{prefix}_conv1")(_pad_for(stride, pre, f"{prefix}_pad1"))
    main = batch_norm(f"{prefix}_bn2")(main)
    main = get_activation_layer(activation, name=f"{prefix}_act2")(main)
    # A zero last conv makes an identity-shortcut block the identity at init.
    main = _conv(width, 1, f"{prefix}_conv2", kernel_initializer="zeros")(main)
    if stride == 1 and x.shape[-1] == width:
        shortcut = x
    else:
        shortcut = _conv(width, stride, f"{prefix}_shortcut")(
            _pad_for(stride, pre, f"{prefix}_shortcut_pad")
        )
    return keras.layers.Add(name=f"{prefix}_add")([main, shortcut])


def _pad_for(stride, x, name):
    """Pads one pixel on every side before a strided conv.

    TensorFlow's `padding="same"` pads a stride-2 conv asymmetrically (0 before,
    1 after), which shifts the sampling grid by a pixel against the reference's
    symmetric padding of 1 and would break layer-by-layer weight loading.
    """
    if stride == 1:
        return x
    return keras.layers.ZeroPadding2D(1, name=name)(x)


def _conv(filters, stride, name, kernel_initializer=None):
    return keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same" if stride == 1 else "valid",
        use_bias=False,
        kernel_initializer=kernel_initializer or keras.initializers.HeUniform(),
        name=name,
    )


def batch_norm(name):
    return FusedBatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )
