"""Batch-normalization statistics recomputed after training (`keras_robust.recalibrate_batch_norm`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_robust


def small_network():
    inputs = keras.Input((4, 4, 2))
    hidden = keras.layers.BatchNormalization(momentum=0.999)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs)


def test_the_moving_statistics_become_the_average_of_the_batches(rng):
    model = small_network()
    batches = [(rng.normal(size=(8, 4, 4, 2)) * scale + shift).astype("float32")
               for scale, shift in ((1.0, 0.0), (2.0, 1.0), (0.5, -1.0))]
    weights = [np.array(w) for w in model.layers[-1].get_weights()]
    assert keras_robust.recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(
        np.stack(batches)).map(lambda x: (x, 0)), batches=3) == 1
    layer = model.layers[1]
    # Keras normalizes with the biased batch variance; the moving values are their plain means.
    means = [b.mean(axis=(0, 1, 2)) for b in batches]
    variances = [b.var(axis=(0, 1, 2)) for b in batches]
    np.testing.assert_allclose(layer.moving_mean, np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, np.mean(variances, axis=0), rtol=1e-4)
    assert layer.momentum == 0.999
    for before, after in zip(weights, model.layers[-1].get_weights()):
        np.testing.assert_array_equal(before, after)


def test_arrays_are_cut_into_batches_and_the_count_respected(rng):
    model = small_network()
    images = rng.normal(size=(300, 4, 4, 2)).astype("float32")
    keras_robust.recalibrate_batch_norm(model, images, batches=2)  # the first 256 images, in 2 batches
    np.testing.assert_allclose(model.layers[1].moving_mean,
                               np.mean([images[:128].mean(axis=(0, 1, 2)), images[128:256].mean(axis=(0, 1, 2))],
                                       axis=0), rtol=1e-5, atol=1e-6)


def test_bad_input_is_refused(rng):
    with pytest.raises(ValueError, match="no batch-normalization layer"):
        keras_robust.recalibrate_batch_norm(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
                                            np.zeros((4, 2)))
    with pytest.raises(ValueError, match="batches"):
        keras_robust.recalibrate_batch_norm(small_network(), np.zeros((4, 4, 4, 2)), batches=0)
    with pytest.raises(ValueError, match="gave no batch"):
        keras_robust.recalibrate_batch_norm(small_network(), np.zeros((0, 4, 4, 2)))


def test_the_callback_recalibrates_a_robust_models_classifier_when_fit_ends(rng):
    classifier = small_network()
    model = keras_robust.RobustModel(classifier, robust=False)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    images = rng.uniform(0.2, 0.9, size=(64, 4, 4, 2)).astype("float32")
    labels = rng.integers(0, 3, 64)
    model.fit(images, labels, batch_size=32, epochs=1, verbose=0,
              callbacks=[keras_robust.RecalibrateBatchNorm(images, batches=1)])
    # After the fit, the statistics are those of the first 128 images (here all 64), not a slow average.
    np.testing.assert_allclose(classifier.layers[1].moving_mean, images.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(classifier.layers[1].moving_variance, images.var(axis=(0, 1, 2)), rtol=1e-3)
    with pytest.raises(ValueError, match="batches"):
        keras_robust.RecalibrateBatchNorm(images, batches=0)
