import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_robust
from keras_robust import HalfHuberReLU, RobustModel, attack

DELTA = 0.5


def tiny_classifier(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(0, 1.5)),
            HalfHuberReLU(DELTA),
            keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(0, 1.0)),
        ]
    )


def numpy_loss(params, x, y, psi):
    """CE + psi * mean(g^2) with tandem margins (zeta = 1), written from docs/method.md §3."""
    w1, b1, w2, b2 = params
    h = x @ w1 + b1
    act = np.where(h <= 0, 0, np.where(h <= DELTA, h * h / (2 * DELTA), h - DELTA / 2))
    dact = np.clip(h, 0, DELTA) / DELTA
    logits = act @ w2 + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    ce = -log_probs[np.arange(len(y)), y].mean()
    others = logits.copy()
    others[np.arange(len(y)), y] = -np.inf
    runner_up = others.argmax(axis=1)
    # d margin / d x = W1 (act'(h) * (W2[:, y] - W2[:, runner_up]))
    direction = w2[:, y].T - w2[:, runner_up].T
    g = (dact * direction) @ w1.T
    return ce + psi * np.mean(g**2), ce


def finite_difference_gradient(params, x, y, psi, eps=1e-6):
    grads = []
    for i, p in enumerate(params):
        grad = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            for sign in (1, -1):
                shifted = [q.copy() for q in params]
                shifted[i][idx] += sign * eps
                grad[idx] += sign * numpy_loss(shifted, x, y, psi)[0] / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_train_step_gradient_matches_finite_differences(rng, weight_decay):
    classifier = tiny_classifier()
    model = RobustModel(classifier, zeta=1.0, weight_decay=weight_decay)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    x = rng.random((4, 2, 2, 1)).astype("float32")
    y = np.array([0, 1, 2, 1])
    before = [w.numpy().astype("float64") for w in classifier.weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    after = [w.numpy().astype("float64") for w in classifier.weights]

    flat = x.reshape(4, -1).astype("float64")
    _, ce = numpy_loss(before, flat, y, 0.0)
    accumulator = max(0.0, min(1.0, max(-0.01, -math.log(ce / 1.5))))
    psi = 220.0 * math.exp(0.02 * accumulator)
    assert logs["ce"] == pytest.approx(ce, rel=1e-5)
    assert logs["psi"] == pytest.approx(psi, rel=1e-5)
    total, _ = numpy_loss(before, flat, y, psi)
    assert logs["loss"] == pytest.approx(total, rel=1e-4)
    assert logs["l_adv"] > 0
    expected = finite_difference_gradient(before, flat, y, psi)
    for b, a, g in zip(before, after, expected):
        np.testing.assert_allclose(b - a, g + weight_decay * b, rtol=2e-3, atol=2e-5)


def test_psi_follows_hand_computed_sequence_and_survives_saving(rng, tmp_path):
    model = RobustModel(tiny_classifier(), target_loss=1.2, psi_rate=0.5)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5))
    x = rng.random((16, 2, 2, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    accumulator = 0.0
    for _ in range(6):
        logs = model.train_on_batch(x, y, return_dict=True)
        change = -math.log(logs["ce"] / 1.2)
        accumulator = max(0.0, accumulator + min(1.0, max(-0.01, change)))
        assert logs["psi"] == pytest.approx(220 * math.exp(0.5 * accumulator), rel=1e-4)
    assert accumulator > 0
    assert float(model.psi_accumulator.numpy()) == pytest.approx(accumulator, rel=1e-4)
    assert model.psi == pytest.approx(220 * math.exp(0.5 * accumulator), rel=1e-4)

    model.save(tmp_path / "robust.keras")
    loaded = keras.saving.load_model(tmp_path / "robust.keras")
    assert isinstance(loaded, RobustModel)
    assert loaded.psi == pytest.approx(model.psi, rel=1e-6)
    assert loaded.target_loss == 1.2 and loaded.psi_rate == 0.5
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    logs = loaded.train_on_batch(x, y, return_dict=True)  # compiled on load
    assert "psi" in logs

    model.save_weights(tmp_path / "w.weights.h5")
    fresh = RobustModel(tiny_classifier(seed=1), target_loss=1.2, psi_rate=0.5)
    fresh.load_weights(tmp_path / "w.weights.h5")
    assert fresh.psi == pytest.approx(model.psi, rel=1e-6)


def conv_classifier():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            HalfHuberReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )


def one_step(strategy, data, **kwargs):
    with strategy.scope():
        model = RobustModel(conv_classifier(), target_loss=2.0, **kwargs)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    history = model.fit(data, epochs=1, verbose=0)
    return model, history.history


@pytest.mark.slow
def test_mirrored_strategy_matches_default_strategy(rng):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    x = rng.random((8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 8).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    single, single_logs = one_step(tf.distribute.get_strategy(), data, zeta=1.0, weight_decay=1e-2)
    mirrored, mirrored_logs = one_step(
        tf.distribute.MirroredStrategy(devices), data, zeta=1.0, weight_decay=1e-2
    )
    # R moved off zero, so psi depends on the reduced cross-entropy.
    assert single.psi > 220
    assert mirrored.psi == pytest.approx(single.psi, rel=1e-5)
    for a, b in zip(single.classifier.weights, mirrored.classifier.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert mirrored_logs["ce"][0] == pytest.approx(single_logs["ce"][0], rel=1e-5)


@pytest.mark.slow
def test_mirrored_adversarial_half_and_half_training_runs(rng):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    x = rng.random((16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 16).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model, logs = one_step(
        tf.distribute.MirroredStrategy(devices), data, adversarial_training="l2min"
    )
    assert {"adv_accuracy", "psi", "l_adv", "ce"} <= set(logs)
    values = [v.numpy() for v in model.psi_accumulator.value.values] if hasattr(
        model.psi_accumulator.value, "values"
    ) else [model.psi_accumulator.numpy()]
    assert all(v == values[0] for v in values)


def test_adversarial_training_trains_on_attacked_batch(rng):
    classifier = tiny_classifier()
    model = RobustModel(
        classifier, robust=False, adversarial_training="bounded", adversarial_rho=0.05
    )
    assert model.half_and_half is False  # follows `robust` by default
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    x = rng.random((8, 2, 2, 1)).astype("float32")
    y = rng.integers(0, 3, 8)
    logs = model.train_on_batch(x, y, return_dict=True)
    attacked = attack(classifier, x, y, rho=0.05, steps=7, training=True)
    ce = keras.losses.sparse_categorical_crossentropy(y, classifier(attacked), from_logits=True)
    clean = keras.losses.sparse_categorical_crossentropy(y, classifier(x), from_logits=True)
    assert logs["ce"] == pytest.approx(float(np.mean(ce)), rel=1e-5)
    assert logs["ce"] > float(np.mean(clean))
    assert "psi" not in logs and "l_adv" not in logs and "adv_accuracy" in logs


def test_standard_training_logs_no_robust_metrics(rng):
    model = RobustModel(tiny_classifier(), robust=False)
    model.compile(optimizer="sgd", metrics=["accuracy"])
    logs = model.train_on_batch(rng.random((4, 2, 2, 1)).astype("float32"), [0, 1, 2, 0], return_dict=True)
    assert set(logs) == {"loss", "ce", "accuracy"}
    assert logs["loss"] == pytest.approx(logs["ce"])
    result = model.evaluate(rng.random((4, 2, 2, 1)).astype("float32"), np.array([0, 1, 2, 0]), verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((4, 2, 2, 1), "uint8"), [0, 1, 2, 0], "divide integer images by 255"),
        (np.zeros((4, 3, 3, 1), "float32"), [0, 1, 2, 0], "shape"),
        (np.zeros((4, 2, 2, 1), "float32"), [0, 1, 3, 0], "Received: label 3"),
        (np.full((4, 2, 2, 1), np.nan, "float32"), [0, 1, 2, 0], "(?i)nan|finite"),
        (np.full((4, 2, 2, 1), 2.0, "float32"), [0, 1, 2, 0], r"\[0, 1\]|range"),
    ],
)
def test_bad_training_input_fails_before_training(images, labels, match):
    model = RobustModel(tiny_classifier())
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=match):
        model.fit(images, np.array(labels), epochs=1, verbose=0)
    data = tf.data.Dataset.from_tensor_slices((images, np.array(labels))).batch(4)
    with pytest.raises(ValueError, match=match):
        model.fit(data, epochs=1, verbose=0)
    assert model.psi_accumulator.numpy() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"zeta": 1.5}, "Received: zeta=1.5"),
        ({"z": 0.5}, "Received: z=0.5"),
        ({"target_loss": 0}, "Received: target_loss=0"),
        ({"adversarial_training": "pgd"}, "Received: adversarial_training='pgd'"),
        ({"adversarial_training": "bounded", "adversarial_rho": -0.1}, "Received: adversarial_rho=-0.1"),
        ({"adversarial_steps": 0}, "Received: adversarial_steps=0"),
        ({"max_gradient_ratio": 0}, "Received: max_gradient_ratio=0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustModel(tiny_classifier(), **kwargs)


def test_custom_loss_and_sample_weights_are_refused(rng):
    model = RobustModel(tiny_classifier())
    with pytest.raises(ValueError, match="takes no `loss`"):
        model.compile(optimizer="sgd", loss="mse")
    model.compile(optimizer="sgd")
    x = rng.random((4, 2, 2, 1)).astype("float32")
    with pytest.raises(ValueError, match="sample weights"):
        model.fit(x, np.array([0, 1, 2, 0]), sample_weight=np.ones(4), verbose=0)


@keras.saving.register_keras_serializable(package="keras_robust_tests")
class SubclassedClassifier(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(5)
        self.act = HalfHuberReLU()
        self.out = keras.layers.Dense(3)

    def call(self, x):
        return self.out(self.act(self.hidden(self.flatten(x))))


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_any_kind_of_classifier_trains_and_round_trips(kind, rng, tmp_path):
    if kind == "sequential":
        classifier = tiny_classifier()
    elif kind == "functional":
        inputs = keras.Input((2, 2, 1))
        classifier = keras.Model(inputs, keras.layers.Dense(3)(HalfHuberReLU()(keras.layers.Flatten()(inputs))))
    else:
        classifier = SubclassedClassifier()
    model = RobustModel(classifier, target_loss=5.0)
    # The sequential one starts at L_adv ≈ 400, where SGD(0.1) diverges (the guard stops it).
    model.compile(optimizer=keras.optimizers.SGD(0.001))
    x = rng.random((16, 2, 2, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert model.psi > 220 and history.history["l_adv"][0] > 0
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.psi == pytest.approx(model.psi)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def _small_robust_model():
    model = RobustModel(keras_robust.resnet(depth=8, num_classes=3, input_shape=(8, 8, 3)))
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    return model


@pytest.mark.slow
@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda x, y: x.__setitem__((20, 0, 0, 0), np.nan), "Training batch 2 has NaN or infinite image values"),
        (lambda x, y: y.__setitem__(40, 10), "Training batch 3 has a label outside 0..2: 10"),
        (lambda x, y: x.__setitem__(slice(32, 48), x[32:48] * 255), "Training batch 3 has image values outside [0, 1]"),
    ],
)
def test_every_batch_of_a_dataset_is_checked_before_it_reaches_the_weights(rng, spoil, message):
    images, labels = rng.random((48, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 48)
    spoil(images, labels)
    model = _small_robust_model()
    with pytest.raises(ValueError, match=re.escape(message)):
        model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(16), epochs=1, verbose=0)
    # The bad batch never reached the weights (XLA-compiled step, check in the input pipeline).
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)


def test_every_batch_of_a_generator_is_checked(rng):
    images, labels = rng.random((48, 8, 8, 3)).astype("float32"), rng.integers(0, 3, 48)
    images[20, 1, 1, 1] = np.inf

    def batches():
        for start in range(0, 48, 16):
            yield images[start : start + 16], labels[start : start + 16]

    model = _small_robust_model()
    with pytest.raises(ValueError, match="Training batch 2: Images must be finite. Received: 1 NaN or infinite values"):
        model.fit(batches(), epochs=1, verbose=0)
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)


@pytest.mark.parametrize("robust, adversarial", [(False, None), (True, None), (True, "bounded")])
def test_fused_batch_norm_trains_in_every_mode(rng, robust, adversarial):
    """The regulariser's pass too: its second derivative is written out (docs/performance.md)."""
    model = RobustModel(keras_robust.resnet(depth=8), robust=robust, adversarial_training=adversarial,
                        adversarial_steps=1)
    model.compile(optimizer="sgd")
    images = tf.constant(rng.random((2, 32, 32, 3)).astype("float32"))
    labels = tf.constant([0, 1])
    graph = tf.function(model.train_step).get_concrete_function((images, labels)).graph
    types = {op.type for op in graph.get_operations()}
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= types


def first_gradients(classifier, images, labels):
    """The weight gradients of CE and of ψ0 · mean(|d margin / d x|^2) in training mode (docs/method.md §3,
    ζ = 1), computed here apart from RobustModel, in float64 sums."""
    images = tf.constant(images)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            inner.watch(images)
            logits = classifier(images, training=True)
            true = tf.gather(logits, labels, batch_dims=1)
            others = tf.where(tf.one_hot(labels, logits.shape[1]) > 0, -np.inf, logits)
            margin = tf.reduce_sum(true - tf.reduce_max(others, axis=1))
        regulariser = 220.0 * tf.reduce_mean(tf.square(inner.gradient(margin, images)))
        ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    variables = classifier.trainable_variables
    as_numpy = lambda gradients: [np.zeros(v.shape) if g is None else g.numpy().astype("float64")  # noqa: E731
                                  for g, v in zip(gradients, variables)]
    return as_numpy(outer.gradient(ce, variables)), as_numpy(outer.gradient(regulariser, variables)), float(ce)


def normalised_classifier():
    """A batch-norm network whose regulariser's first gradient is many times the cross-entropy's."""
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((4, 4, 3)), keras.layers.Conv2D(8, 3, padding="same"), keras.layers.BatchNormalization(),
        HalfHuberReLU(), keras.layers.Conv2D(8, 3, padding="same"), keras.layers.BatchNormalization(),
        HalfHuberReLU(), keras.layers.Flatten(), keras.layers.Dense(3),
    ])


def global_norm(arrays):
    return math.sqrt(sum(float(np.sum(a * a)) for a in arrays))


def test_a_regulariser_gradient_beyond_the_ratio_is_bounded_on_every_batch(rng, tmp_path):
    x = rng.random((16, 4, 4, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    ce_gradient, regulariser_gradient, ce = first_gradients(normalised_classifier(), x, y)
    growth = math.exp(0.02 * max(0.0, min(1.0, -math.log(ce / 1.5))))  # ψ's first step from R = 0
    ratio = growth * global_norm(regulariser_gradient) / global_norm(ce_gradient)
    assert ratio > 5  # the case the bound is for
    classifier = normalised_classifier()
    before = [w.numpy().astype("float64") for w in classifier.trainable_variables]
    model = RobustModel(classifier, zeta=1.0)
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    logs = model.train_on_batch(x, y, return_dict=True)
    bound = 1.0 / ratio
    assert float(model.first_gradient_ratio.numpy()) == pytest.approx(ratio, rel=1e-3)
    assert logs["psi"] == pytest.approx(220 * growth * bound, rel=1e-3)
    for b, a, c, r in zip(before, classifier.trainable_variables, ce_gradient, regulariser_gradient):
        np.testing.assert_allclose(b - a.numpy(), 1e-3 * (c + bound * growth * r), rtol=2e-3, atol=1e-7)  # float32 weights: 6e-8 apart near 1
    # The next batch is bounded by its own gradients; R does not climb while bounded.
    before = [w.numpy().astype("float64") for w in classifier.trainable_variables]
    accumulator = float(model.psi_accumulator.numpy())
    ce_gradient, regulariser_gradient, _ = first_gradients(classifier, x[::-1], y[::-1])
    logs = model.train_on_batch(x[::-1], y[::-1], return_dict=True)
    psi = 220 * math.exp(0.02 * accumulator)
    bound = global_norm(ce_gradient) / (psi / 220 * global_norm(regulariser_gradient))
    assert bound < 1 and logs["psi"] == pytest.approx(psi * bound, rel=1e-3)
    for b, a, c, r in zip(before, classifier.trainable_variables, ce_gradient, regulariser_gradient):
        np.testing.assert_allclose(b - a.numpy(), 1e-3 * (c + bound * psi / 220 * r), rtol=2e-3, atol=1e-7)  # float32 weights: 6e-8 apart near 1
    assert float(model.psi_accumulator.numpy()) <= accumulator
    assert float(model.first_gradient_ratio.numpy()) == pytest.approx(ratio, rel=1e-3)  # measured once
    model.save(tmp_path / "bounded.keras")
    loaded = keras.saving.load_model(tmp_path / "bounded.keras")
    assert float(loaded.first_gradient_ratio.numpy()) == pytest.approx(ratio, rel=1e-6)


def test_no_bound_within_the_ratio_or_without_normalisation(rng):
    x = rng.random((16, 4, 4, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    roomy = RobustModel(normalised_classifier(), zeta=1.0, max_gradient_ratio=1e9)
    paper = RobustModel(normalised_classifier(), zeta=1.0, max_gradient_ratio=None)
    for model in (roomy, paper):
        model.compile(optimizer=keras.optimizers.SGD(1e-4))
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs["psi"] >= 220.0
    assert float(roomy.first_gradient_ratio.numpy()) > 5 and float(paper.first_gradient_ratio.numpy()) == 0.0
    for a, b in zip(roomy.get_weights(), paper.get_weights()):
        if a.shape:  # the model's own variables differ: the ratio was measured on one of them only
            np.testing.assert_array_equal(a, b)
    plain = RobustModel(tiny_classifier())
    plain.compile(optimizer=keras.optimizers.SGD(1e-4))
    logs = plain.train_on_batch(rng.random((4, 2, 2, 1)).astype("float32"), np.array([0, 1, 2, 0]), return_dict=True)
    assert logs["l_adv"] > 1.0 and logs["psi"] >= 220.0


def test_a_file_saved_before_the_ratio_was_kept_loads_r_and_measures_it_anew():
    model = RobustModel(tiny_classifier())
    model.load_own_variables({"0": np.float32(50.0)})  # such a file holds R alone
    assert float(model.first_gradient_ratio.numpy()) == 0.0
    assert model.psi == pytest.approx(220 * math.exp(0.02 * 50.0))


@pytest.mark.slow
@pytest.mark.parametrize("network", ["resnet20", "resnet44", "resnet44-cifar10-all", "resnet44-cifar10-robust"])
def test_the_papers_networks_train_with_psi0_exactly(network, cifar10_archive):
    """docs/method.md §3a: their regulariser's first gradient is well within the ratio: the paper's recipe exactly."""
    data = keras_robust.data.load_dataset(cifar10_archive, "train", batch_size=16, limit=32, augment=False,
                                          shuffle=False)
    weights = {}
    for limit in (1.0, None):
        keras.utils.set_random_seed(0)
        if network.startswith("resnet44-"):
            classifier = keras_robust.pretrained(network)
        else:
            classifier = keras_robust.resnet(depth=int(network[len("resnet"):]))
        model = RobustModel(classifier, max_gradient_ratio=limit)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        model.fit(data.dataset, epochs=1, verbose=0)
        weights[limit] = model.classifier.get_weights()
        if limit and network.startswith("resnet44-"):
            assert float(model.first_gradient_ratio.numpy()) == 0.0  # they bring their R: never measured
        elif limit:
            assert 0 < float(model.first_gradient_ratio.numpy()) < 0.5 * limit
    for bounded, paper in zip(weights[1.0], weights[None]):
        np.testing.assert_array_equal(bounded, paper)
