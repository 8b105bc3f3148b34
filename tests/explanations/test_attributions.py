import keras
import numpy as np
import pytest

from keras_robust import resnet
from keras_robust.explanations import attributions


def test_saliency_of_a_linear_model_is_its_weight_column(rng):
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    weights = model.layers[-1].kernel.numpy()
    images = rng.random((3, 2, 2, 3)).astype("float32")
    out = attributions.saliency(model, images, [0, 2, 3])
    for i, t in enumerate([0, 2, 3]):
        np.testing.assert_allclose(out[i].reshape(-1), weights[:, t], rtol=1e-5)


def test_smoothgrad_without_noise_is_saliency(rng):
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    images = rng.random((2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(
        attributions.smoothgrad(model, images, [1, 2], samples=3, noise=0.0),
        attributions.saliency(model, images, [1, 2]), rtol=1e-5, atol=1e-7,
    )
    noisy = attributions.smoothgrad(model, images, [1, 2], samples=8)
    assert not np.allclose(noisy, attributions.saliency(model, images, [1, 2]))


def test_integrated_gradients_completeness(rng):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    images = rng.random((3, 4, 4, 3)).astype("float32")
    targets = np.array([0, 1, 2])
    attribution = attributions.integrated_gradients(model, images, targets, steps=128)
    logits = model.predict(images, verbose=0)[np.arange(3), targets]
    at_baseline = model.predict(np.zeros_like(images), verbose=0)[np.arange(3), targets]
    np.testing.assert_allclose(attribution.reshape(3, -1).sum(axis=1), logits - at_baseline, rtol=1e-3, atol=1e-4)


def numpy_conv_valid(x, kernel):
    n, h, w, _ = x.shape
    kh, kw, _, k = kernel.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, k))
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            patch = x[:, i : i + kh, j : j + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def test_grad_cam_matches_numpy_on_a_tiny_conv_net(rng):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, padding="valid", use_bias=False, name="conv"),
        keras.layers.ReLU(name="features"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, name="head"),
    ])
    images = rng.random((2, 6, 6, 2)).astype("float32")
    targets = np.array([1, 3])
    features = np.maximum(numpy_conv_valid(images.astype("float64"), model.get_layer("conv").kernel.numpy()), 0)
    dense = model.get_layer("head").kernel.numpy()
    # d logit_t / d A = W[:, t] / (h w) everywhere, so alpha_k = W[k, t] / (h w).
    alpha = dense[:, targets].T / (4 * 4)
    expected = np.maximum(np.einsum("nhwk,nk->nhw", features, alpha), 0)
    cam = attributions.grad_cam(model, images, targets, upsample=False)
    np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-6)
    explicit = attributions.grad_cam(model, images, targets, layer="features", upsample=False)
    np.testing.assert_allclose(explicit, cam)
    assert attributions.grad_cam(model, images, targets).shape == (2, 6, 6)


def test_grad_cam_picks_the_last_spatial_layer_of_the_resnet(rng):
    model = resnet(depth=8)
    images = rng.random((2, 32, 32, 3)).astype("float32")
    assert attributions.grad_cam(model, images, [0, 1], upsample=False).shape == (2, 8, 8)
    assert attributions.grad_cam(model, images, [0, 1], layer="stage2_block1_add", upsample=False).shape == (2, 16, 16)


def test_grad_cam_reads_the_maps_feeding_global_pooling_not_a_later_one_by_one_head():
    """MobileNetV3-style heads keep the pooled maps 4-D (1×1) and convolve them; Grad-CAM over those is one number."""
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(features)
    head = keras.layers.Conv2D(10, 1, name="head_conv")(pooled)
    model = keras.Model(inputs, keras.layers.Flatten()(head))
    assert attributions.grad_cam_layer(model).name == "features"
    flat = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(2, 3, name="last_maps"),
                             keras.layers.Flatten(), keras.layers.Dense(3)])
    assert attributions.grad_cam_layer(flat).name == "last_maps"  # no global pooling: the last 4-D output


def test_grad_cam_needs_a_layer_graph(rng):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 12)))

    with pytest.raises(ValueError, match="functional or Sequential"):
        attributions.grad_cam(Subclassed(), rng.random((1, 2, 2, 3)).astype("float32"), [0])


def test_heatmap_and_bad_inputs(rng):
    values = rng.normal(size=(2, 3, 3, 3))
    np.testing.assert_allclose(attributions.heatmap(values), np.abs(values).max(axis=-1))
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Received:"):
        attributions.saliency(model, np.zeros((2, 2, 2, 3), "uint8"), [0, 1])
    with pytest.raises(ValueError, match="Received:"):
        attributions.saliency(model, np.zeros((2, 2, 2, 3), "float32"), [0])
