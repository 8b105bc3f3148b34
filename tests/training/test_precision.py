"""Mixed precision: bfloat16 must train and attack soundly, float16 must loss-scale."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_robust
from keras_robust.method import regularizer
from keras_robust.method.attacks import attack_details, per_example_rmse
from keras_robust.training.precision import check_precision, precision_scope

# Stated bounds for bfloat16 against float32 on the same weights (the
# authors' robust ResNet-44, 32 real test images): each example's input
# gradient within this cosine of the float32 one, and the regulariser's value
# within this relative error. Measured on an AVX-512 BF16 CPU: cosine >= 0.9999,
# penalty within 0.03%.
BF16_GRADIENT_COSINE = 0.999
BF16_PENALTY_RELATIVE_ERROR = 0.01


def _twin(name, precision):
    with precision_scope(precision):
        return keras_robust.pretrained(name)


def _regularised_gradient(classifier, images, labels):
    """The regulariser's input gradient (tandem margin output), as in a training step."""
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = classifier(images, training=True)
        total = tf.reduce_sum(regularizer.margin(tf.cast(logits, tf.float32), labels))
    return tape.gradient(total, images)


def test_precision_scope_sets_and_restores_the_policy():
    with precision_scope("bf16"):
        model = keras_robust.resnet(8)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    # What attacks and the loss read stays float32.
    assert model.get_layer("standardize").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match=r"`precision` must be one of \('fp32', 'bf16', 'fp16'\)"):
        check_precision("int8")


@pytest.mark.slow
def test_bf16_input_gradient_and_penalty_track_float32(reference_images, pretrained_dir):
    images, labels = reference_images[:32], np.repeat(np.arange(10), 20)[:32].astype("int32")
    half_model = _twin("resnet44-cifar10-robust", "bf16")
    assert half_model.get_layer("stage3_block7_conv2").compute_dtype == "bfloat16"
    full = _regularised_gradient(_twin("resnet44-cifar10-robust", "fp32"), images, labels)
    half = _regularised_gradient(half_model, images, labels)
    assert half.dtype == tf.float32
    full, half = full.numpy().reshape(32, -1), half.numpy().reshape(32, -1)
    cosine = np.sum(full * half, 1) / np.linalg.norm(full, axis=1) / np.linalg.norm(half, axis=1)
    assert cosine.min() > BF16_GRADIENT_COSINE, cosine.min()
    penalty = [float(regularizer.lipschitz_penalty(g)) for g in (full, half)]
    assert abs(penalty[1] / penalty[0] - 1) < BF16_PENALTY_RELATIVE_ERROR, penalty


@pytest.mark.slow
def test_bf16_attack_keeps_delta_float32_and_its_rmse_exact(reference_images, pretrained_dir):
    model = _twin("resnet44-cifar10-robust", "bf16")
    result = attack_details(model, reference_images[:4], [3, 1, 4, 1], rho=0.1, overshoot=5.0,
                            steps=8, targeted=True, sanity_check=False)
    delta = result.delta.numpy()
    assert delta.dtype == np.float32
    exact = np.sqrt(np.mean(np.square(delta.astype("float64")).reshape(4, -1), axis=1))
    np.testing.assert_allclose(result.rmse.numpy(), exact, rtol=1e-6)
    # The bounded steps sum to rho * overshoot; with no step walked back the
    # RMSE is the sum of the step sizes, unaffected by the model's precision.
    np.testing.assert_allclose(per_example_rmse(result.delta).numpy(), exact, rtol=1e-6)


def _learnable_data(rng, n=256):
    """Images whose class is their mean colour: learnable in a few steps."""
    labels = rng.integers(0, 10, n)
    images = rng.uniform(0, 0.2, (n, 32, 32, 3)).astype("float32") + (labels / 12.5)[:, None, None, None].astype("float32")
    return images, labels


def _short_robust_run(precision, images, labels, steps=24):
    keras.utils.set_random_seed(5)
    with precision_scope(precision):
        model = keras_robust.RobustModel(keras_robust.resnet(8), weight_decay=1e-4)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = model.fit(images, labels, batch_size=32, epochs=steps * 32 // len(images), verbose=0,
                        shuffle=False)
    return model, history.history


@pytest.mark.slow
def test_bf16_robust_training_tracks_float32(rng):
    images, labels = _learnable_data(rng)
    full_model, full = _short_robust_run("fp32", images, labels)
    half_model, half = _short_robust_run("bf16", images, labels)
    # Measured: cross-entropy within 0.1%, accuracy within 0.4 points, psi within 0.01%.
    np.testing.assert_allclose(half["ce"], full["ce"], rtol=0.03)
    np.testing.assert_allclose(half["accuracy"], full["accuracy"], atol=0.03)
    np.testing.assert_allclose(half_model.psi, full_model.psi, rtol=0.002)
    assert half["ce"][-1] < half["ce"][0]


@pytest.mark.slow
def test_fp16_training_scales_the_loss_and_matches_a_float32_step(rng):
    images, labels = _learnable_data(rng, 32)
    steps = {}
    for precision in ("fp32", "fp16"):
        keras.utils.set_random_seed(5)
        with precision_scope(precision):
            model = keras_robust.RobustModel(keras_robust.resnet(8), weight_decay=0.1)
            model.compile(optimizer=keras.optimizers.SGD(0.05))
        before = [v.numpy() for v in model.trainable_variables]
        logs = model.train_on_batch(images, labels, return_dict=True)
        after = [v.numpy() for v in model.trainable_variables]
        steps[precision] = (model, logs, [a - b for a, b in zip(after, before)])
    model, logs, update = steps["fp16"]
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(logs["loss"])
    # The coupled weight decay is unscaled with the loss: one SGD step moves
    # each weight by about as much as in float32.
    for half, full in zip(update, steps["fp32"][2]):
        assert np.linalg.norm(half - full) <= 0.1 * np.linalg.norm(full) + 1e-6


def test_training_refuses_fp16_without_a_gpu(tmp_path):
    from keras_robust.training.config import TrainingConfig
    from keras_robust.training.loop import train

    data = (np.zeros((8, 8, 8, 3), "float32"), np.arange(8) % 2)
    with pytest.raises(ValueError, match=r"precision='fp16' is mixed float16 for GPUs; this run's devices are "
                                         r".*CPU:0.*Use bf16 .* or fp32\. Received: precision='fp16'"):
        train(TrainingConfig(depth=8, epochs=1, batch_size=4, precision="fp16"), data, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
