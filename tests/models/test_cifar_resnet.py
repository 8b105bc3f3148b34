import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_robust import HalfHuberReLU, resnet
from keras_robust.models.cifar_resnet import CIFAR10_MEAN, CIFAR10_STD


def expected_trainable_parameters(depth, num_classes=10):
    """Counts docs/method.md §2's parameters from its prose, independently of the builder."""
    n = (depth - 2) // 6
    count = 3 * 3 * 3 * 16  # stem conv, no bias
    channels = 16
    for width in (16, 32, 64):
        for block in range(n):
            count += 2 * channels  # BN gamma and beta on the block input
            count += 9 * channels * width + 2 * width + 9 * width * width
            if channels != width:
                count += 9 * channels * width  # 3x3 shortcut conv on `pre`
            channels = width
    return count + 2 * 64 + 64 * num_classes + num_classes  # head BN + dense


@pytest.mark.parametrize("depth", [20, 44])
def test_parameter_count_matches_spec(depth):
    model = resnet(depth=depth)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected_trainable_parameters(depth)
    bn_channels = sum(
        layer.gamma.shape[0]
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert non_trainable == 2 * bn_channels


def test_identity_blocks_are_identity_at_init(rng):
    model = resnet(depth=20)
    block_inputs = {}
    for layer in model.layers:
        if layer.name.endswith("_add"):
            block_inputs[layer.name] = layer
    probe = keras.Model(
        model.input,
        [layer.input[1] for layer in block_inputs.values()]
        + [layer.output for layer in block_inputs.values()],
    )
    x = rng.random((2, 32, 32, 3), dtype="float32")
    outs = probe(x, training=False)
    half = len(block_inputs)
    identity, strided = 0, 0
    for name, shortcut, output in zip(block_inputs, outs[:half], outs[half:]):
        if name.endswith("block1_add") and not name.startswith("stage1"):
            strided += 1
            continue
        np.testing.assert_allclose(output.numpy(), shortcut.numpy(), atol=0)
        identity += 1
    assert identity == 7 and strided == 2


def test_strided_conv_pads_symmetrically_like_the_reference(rng):
    model = resnet(depth=20, activation="relu")
    conv = model.get_layer("stage2_block1_conv1")
    pre = keras.Model(model.input, model.get_layer("stage2_block1_act1").output)
    x = rng.random((1, 32, 32, 3), dtype="float32")
    pre_out = pre(x, training=False)
    reference = tf.nn.conv2d(pre_out, conv.kernel, strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
    ours = keras.Model(model.input, conv.output)(x, training=False)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-5)


def test_input_is_standardised_inside_the_model(rng):
    model = resnet(depth=20)
    x = rng.random((2, 32, 32, 3), dtype="float32")
    out = keras.Model(model.input, model.get_layer("standardize").output)(x)
    expected = (x - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_initialisation_follows_spec():
    model = resnet(depth=20)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.numpy()
            if layer.name.endswith("_conv2"):
                assert not kernel.any()
            else:
                fan_in = np.prod(kernel.shape[:3])
                # The He-uniform limit is computed in float32, which may round it up.
                assert np.abs(kernel).max() <= np.float32(np.sqrt(6 / fan_in))
                assert np.abs(kernel).max() > 0.8 * np.sqrt(6 / fan_in)
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5 and layer.momentum == 0.9
            assert np.all(layer.gamma.numpy() == 1) and not layer.beta.numpy().any()
    assert not model.get_layer("logits").bias.numpy().any()


def test_activation_choice():
    robust = resnet(depth=20)
    standard = resnet(depth=20, activation="relu")
    assert sum(isinstance(l, HalfHuberReLU) for l in robust.layers) == 19
    assert not any(isinstance(l, HalfHuberReLU) for l in standard.layers)
    assert sum(isinstance(l, keras.layers.ReLU) for l in standard.layers) == 19


def test_other_depths_and_shapes():
    model = resnet(depth=8, num_classes=3, input_shape=(16, 16, 3))
    assert model(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 3)
    assert model.name == "resnet8"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 45}, "Received: depth=45"),
        ({"depth": 2}, "Received: depth=2"),
        ({"num_classes": 1}, "Received: num_classes=1"),
        ({"activation": "tanh"}, "Received: activation='tanh'"),
        ({"input_shape": (32, 32, 1)}, "mean"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet(**kwargs)
