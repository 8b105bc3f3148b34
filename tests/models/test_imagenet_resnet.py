import keras
import numpy as np
import pytest

from keras_robust import HalfHuberReLU, resnet50
from keras_robust.training.precision import precision_scope


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return resnet50(num_classes=1000)


def test_same_network_as_keras_resnet50v2_but_without_conv_biases(model):
    """keras.applications.ResNet50V2 has the same blocks, with a bias on the stem conv,
    on each block's last 1×1 conv and on each projection shortcut; counted here by hand."""
    reference = keras.applications.ResNet50V2(weights=None)
    stages = ((3, 64), (4, 128), (6, 256), (3, 512))
    biases = 64 + sum(blocks * 4 * width for blocks, width in stages) + sum(4 * width for _, width in stages)
    assert model.count_params() == reference.count_params() - biases == 25_594_792


def test_every_activation_is_the_requested_one_and_logits_are_float32(model):
    activations = [layer for layer in model.layers if isinstance(layer, HalfHuberReLU)]
    assert len(activations) == 3 * 16 + 1  # three per bottleneck, one in the head
    with precision_scope("bf16"):
        mixed = resnet50(num_classes=10, input_shape=(64, 64, 3), activation="relu")
    assert not any(isinstance(layer, HalfHuberReLU) for layer in mixed.layers)
    out = mixed(np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32"))
    assert tuple(out.shape) == (2, 10) and out.dtype.name == "float32"
    assert mixed.get_layer("standardize").dtype_policy.compute_dtype == "float32"
    assert mixed.get_layer("stage1_block1_conv1").dtype_policy.compute_dtype == "bfloat16"


def test_downsamples_224_to_7_and_standardizes_with_imagenet_statistics(model):
    assert model.get_layer("stage4_block3_add").output.shape[1:] == (7, 7, 2048)
    mean = np.array([0.485, 0.456, 0.406], "float32")
    standardized = keras.Model(model.input, model.get_layer("standardize").output)(mean[None, None, None] * np.ones((1, 224, 224, 3), "float32"))
    np.testing.assert_allclose(np.asarray(standardized), 0.0, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`num_classes` must be an integer >= 2. Received: num_classes=1"):
        resnet50(num_classes=1)
