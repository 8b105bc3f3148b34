import keras
import numpy as np
import pytest

from keras_robust.explanations.comparison import compare_explanations, spearman


def test_spearman_against_ranked_pearson(rng):
    a = rng.normal(size=(3, 50))
    b = a + rng.normal(size=(3, 50))
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    expected = [np.corrcoef(ranks(x), ranks(y))[0, 1] for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman(a, b), expected, rtol=1e-12)
    np.testing.assert_allclose(spearman(a, a), 1.0)
    np.testing.assert_allclose(spearman(a, -a), -1.0)


@pytest.mark.slow
def test_compare_explanations_on_a_tiny_conv_net(rng):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", activation="tanh"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    images = rng.random((4, 8, 8, 3)).astype("float32")
    labels = model.predict(images, verbose=0).argmax(axis=1)
    result = compare_explanations(model, images, labels, attack_steps=60)
    assert np.all(result.predicted == labels)
    assert np.all(result.predicted_attacked != labels)
    assert set(result.maps) == {"saliency", "smoothgrad", "integrated_gradients", "grad_cam"}
    for name, (clean, moved) in result.maps.items():
        assert clean.shape == moved.shape == (4, 8, 8)
        assert np.all((-1 <= result.rank_correlation[name]) & (result.rank_correlation[name] <= 1))
    np.testing.assert_array_equal(result.explanation.targets[:, 0], result.predicted)
    np.testing.assert_array_equal(result.explanation.targets[:, 1], result.predicted_attacked)
    summary = result.summary()
    assert summary["class_changed"] == 1.0 and summary["mean_attack_rmse"] > 0


def test_unknown_method_is_refused(rng):
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Received: methods=\\['lime'\\]"):
        compare_explanations(model, rng.random((1, 2, 2, 3)).astype("float32"), [0], methods=["lime"])
