"""`keras_robust.models.backbones`: the fourteen keras.applications classifiers, ready for robust training."""

import keras
import numpy as np
import pytest

import keras_robust
from keras_robust.method.classifier_inspection import kinked_activation_layers
from keras_robust.models.backbones import BACKBONES, backbone


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_takes_robust_steps_finitely_with_the_defaults(name):
    """Issue #33: every one diverged or died within a few steps at ψ0 = 220; docs/method.md §3a."""
    keras.utils.set_random_seed(0)
    classifier = backbone(name, num_classes=3)
    size = BACKBONES[name]
    assert classifier.input_shape == (None, size, size, 3) and classifier.output_shape == (None, 3)
    assert kinked_activation_layers(classifier) == []
    model = keras_robust.RobustModel(classifier, weight_decay=1e-4)
    # Eagerly: for two steps, tracing these networks' twice-differentiated step costs several times more.
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), run_eagerly=True)
    # Batches of 8: over 2 images, batch norm at these networks' 1x1 last stages divides by
    # near-zero spreads, and input gradients start near float32's limit.
    images = np.random.default_rng(0).random((16, size, size, 3), dtype="float32")
    history = model.fit(images, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
    assert all(np.isfinite(history.history[key][0]) for key in ("loss", "ce", "l_adv", "psi"))
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.variables)
    # Measured where the bound applies: every network with normalisation layers, which VGG16 lacks.
    assert (float(model.first_gradient_ratio.numpy()) > 0) == (name != "VGG16")


def test_the_first_layer_maps_unit_pixels_to_what_the_network_expects():
    expected = {"MobileNetV2": (2.0, -1.0), "EfficientNetB0": (255.0, 0.0)}
    for name, (scale, offset) in expected.items():
        layer = backbone(name, smooth=False).get_layer("preprocessing")
        assert (layer.scale, layer.offset) == (scale, offset)
    resnet = backbone("ResNet50", smooth=False)
    pixels = keras.ops.convert_to_numpy(resnet.get_layer("preprocessing")(np.full((1, 1, 1, 3), 0.5, "float32")))
    np.testing.assert_allclose(pixels.ravel(), 127.5 - np.array([123.68, 116.779, 103.939]), rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="Received: name='ResNet18'"):
        backbone("ResNet18")
    with pytest.raises(ValueError, match="at least 75x75. Received: size=32"):
        backbone("InceptionV3", size=32)
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        backbone("MobileNetV2", num_classes=0)
