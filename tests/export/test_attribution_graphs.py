"""The attribution methods as exported graphs: ONNX and SavedModel against the Python methods and PyTorch autograd.

Keras classifiers: each exported method equals `keras_robust.explanations.attributions` on the same inputs.
ONNX classifiers from PyTorch: equal to torch autograd's attributions, which tests/data/torch_classifiers/
make_models.py computed and stored beside the models.
"""

import warnings

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from keras_robust.explanations import attributions
from keras_robust.export import export_model, export_onnx_classifier, read_card
from keras_robust.export.attribution_graphs import FILE_SUFFIXES
from keras_robust.export.card import ATTRIBUTION_INPUTS, ATTRIBUTION_METHODS
from tests.export.test_onnx_classifier import TORCH_DIR, TORCH_MODELS, _reference
from tests.helpers import TINY_CLASSES, run_onnx

TOLERANCE = 1e-4
# Integrated Gradients differentiates along the straight path from black, where nothing keeps a ReLU's input or a
# max pool's tie clear of float rounding as the test images are kept (SqueezeNet's differed by 2e-3, ShuffleNet's
# by 8e-4, one image each): it is compared with torch's on the networks without kinks.
SMOOTH_TORCH_MODELS = ("vit", "swin")


def relative_error(value, reference):
    return np.abs(value - reference).max() / np.abs(reference).max()


def _session(folder, name, method):
    path = folder / name / f"{name}-1-{FILE_SUFFIXES[method]}.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def keras_inputs():
    rng = np.random.default_rng(3)
    return rng.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32), np.array([1, 4, 7], np.int32)


def test_the_exported_methods_are_the_python_methods():
    assert ATTRIBUTION_METHODS == tuple(attributions.METHODS)
    assert set(FILE_SUFFIXES) == set(ATTRIBUTION_METHODS)


def test_the_export_writes_every_method_with_its_inputs_in_order(tiny_export):
    base, name, _ = tiny_export
    card = read_card(base / name)
    for method in ATTRIBUTION_METHODS:
        assert card["signatures"][method] == {"inputs": list(ATTRIBUTION_INPUTS[method]), "outputs": ["attributions"]}
        session = _session(base, name, method)
        inputs = [value.name for value in session.get_inputs() + session.get_overridable_initializers()]
        assert inputs == list(ATTRIBUTION_INPUTS[method])
    assert card["attribution_defaults"]["grad_cam"] == {"layer": "head_act"}


def test_onnx_attributions_equal_the_python_methods_at_their_defaults(tiny_export, keras_inputs):
    base, name, model = tiny_export
    images, targets = keras_inputs
    for method in ATTRIBUTION_METHODS:
        out = run_onnx(_session(base, name, method), images=images, targets=targets)["attributions"]
        assert relative_error(out, attributions.METHODS[method](model, images, targets)) <= TOLERANCE, method


def test_onnx_attributions_take_settings_per_image(tiny_export, keras_inputs):
    """Each image with its own settings answers as if explained alone with them."""
    base, name, model = tiny_export
    images, targets = keras_inputs
    baselines = np.random.default_rng(4).uniform(0, 1, images.shape).astype(np.float32)
    smooth = run_onnx(_session(base, name, "smoothgrad"), images=images, targets=targets,
                      samples=np.array([2, 3, 1], np.int32), noise=np.array([0.1, 0.2, 0.0], np.float32),
                      seed=np.array([5, 9, 11], np.int32))["attributions"]
    integrated = run_onnx(_session(base, name, "integrated_gradients"), images=images, targets=targets,
                          steps=np.array([4, 7, 1], np.int32), baseline=baselines)["attributions"]
    for i, (samples, noise, seed, steps) in enumerate([(2, 0.1, 5, 4), (3, 0.2, 9, 7), (1, 0.0, 11, 1)]):
        one = images[i:i + 1], targets[i:i + 1]
        expected = attributions.smoothgrad(model, *one, samples=samples, noise=noise, seed=seed)
        assert relative_error(smooth[i:i + 1], expected) <= TOLERANCE
        expected = attributions.integrated_gradients(model, *one, baseline=baselines[i:i + 1], steps=steps)
        assert relative_error(integrated[i:i + 1], expected) <= TOLERANCE


def test_an_images_smoothgrad_does_not_depend_on_the_batch_around_it(tiny_export, keras_inputs):
    base, name, _ = tiny_export
    images, targets = keras_inputs
    session = _session(base, name, "smoothgrad")
    together = run_onnx(session, images=images, targets=targets, samples=np.array([3], np.int32))["attributions"]
    alone = run_onnx(session, images=images[2:], targets=targets[2:], samples=np.array([3], np.int32))
    np.testing.assert_allclose(alone["attributions"], together[2:], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_saved_model_signatures_equal_the_python_methods(tiny_export, keras_inputs):
    base, name, model = tiny_export
    images, targets = keras_inputs
    loaded = tf.saved_model.load(str(base / name / "1"))
    settings = {"smoothgrad": dict(samples=[3], noise=[0.15], seed=[2]),
                "integrated_gradients": dict(steps=[5], baseline=np.zeros((1, 32, 32, 3), np.float32))}
    python = {"smoothgrad": dict(samples=3, noise=0.15, seed=2), "integrated_gradients": dict(steps=5)}
    for method in ATTRIBUTION_METHODS:
        feeds = {key: tf.constant(value) for key, value in settings.get(method, {}).items()}
        out = loaded.signatures[method](images=tf.constant(images), targets=tf.constant(targets), **feeds)
        expected = attributions.METHODS[method](model, images, targets, **python.get(method, {}))
        assert relative_error(out["attributions"].numpy(), expected) <= TOLERANCE, method
    with pytest.raises(tf.errors.InvalidArgumentError, match="samples must be >= 1"):
        loaded.signatures["smoothgrad"](images=tf.constant(images), targets=tf.constant(targets),
                                        samples=tf.constant([0]), noise=tf.constant([0.1]), seed=tf.constant([0]))


@pytest.fixture(scope="module")
def torch_attribution_exports(tmp_path_factory):
    """`({name: model folder}, {name: warnings})`: each PyTorch classifier exported with every method it has."""
    base = tmp_path_factory.mktemp("torch_attributions")
    caught = {}
    for name in TORCH_MODELS:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            export_onnx_classifier(str(TORCH_DIR / f"{name}.onnx"), str(base), layout="NCHW", **_reference(name)[1])
        caught[name] = [str(record.message) for record in records]
    return base, caught


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_onnx_classifier_attributions_equal_torch_autograd(torch_attribution_exports, name):
    base, _ = torch_attribution_exports
    reference, _ = _reference(name)
    feeds = dict(images=reference["images"], targets=reference["targets"].astype(np.int32))
    for method in ("saliency", "integrated_gradients", "grad_cam"):  # a check against zeros could not fail
        assert method not in reference or np.abs(reference[method]).max() > 1e-3, method
    saliency = run_onnx(_session(base, name, "saliency"), **feeds)["attributions"]
    assert relative_error(saliency, reference["saliency"]) <= TOLERANCE
    if name in SMOOTH_TORCH_MODELS:
        steps = np.array([int(reference["ig_steps"])], np.int32)
        integrated = run_onnx(_session(base, name, "integrated_gradients"), steps=steps, **feeds)["attributions"]
        assert relative_error(integrated, reference["integrated_gradients"]) <= TOLERANCE
    if "grad_cam" in reference:
        cam = run_onnx(_session(base, name, "grad_cam"), **feeds)["attributions"]
        assert cam.shape == reference["grad_cam"].shape
        assert relative_error(cam, reference["grad_cam"]) <= TOLERANCE


def test_a_transformer_without_feature_maps_is_exported_without_grad_cam(torch_attribution_exports):
    base, caught = torch_attribution_exports
    methods = [m for m in ATTRIBUTION_METHODS if m in read_card(base / "vit")["signatures"]]
    assert methods == ["saliency", "smoothgrad", "integrated_gradients"]
    assert any("without Grad-CAM" in message for message in caught["vit"])
    assert not (base / "vit" / "vit-1-grad-cam.onnx").exists()
    assert not caught["squeezenet"] and (base / "squeezenet" / "squeezenet-1-grad-cam.onnx").exists()


def test_onnx_smoothgrad_averages_the_saliency_of_the_noisy_copies(torch_attribution_exports):
    """SmoothGrad of an imported classifier: the mean saliency at `x + σ·range·z`, z from the NumPy generator."""
    from tests.explanations.test_noise import numpy_standard_normal

    base, _ = torch_attribution_exports
    reference, _ = _reference("mobilenet_v3")
    images, targets = reference["images"], reference["labels"].astype(np.int32)
    smooth = run_onnx(_session(base, "mobilenet_v3", "smoothgrad"), images=images, targets=targets,
                      samples=np.array([3], np.int32), noise=np.array([0.1], np.float32),
                      seed=np.array([7], np.int32))["attributions"]
    spread = 0.1 * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))[:, None, None, None]
    saliency = _session(base, "mobilenet_v3", "saliency")
    expected = np.mean([
        run_onnx(saliency, images=images + spread * numpy_standard_normal([7, 7], sample, images.shape[1:]),
                 targets=targets)["attributions"]
        for sample in range(3)], axis=0)
    assert relative_error(smooth, expected) <= TOLERANCE


def _mlp():
    return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)], name="mlp")


def test_grad_cam_is_left_out_with_a_warning_when_the_default_methods_meet_a_model_without_feature_maps(tmp_path):
    with pytest.warns(UserWarning, match="without Grad-CAM.*4-D"):
        paths = export_model(_mlp(), str(tmp_path), formats=("onnx",))
    assert "onnx_grad_cam" not in paths and "onnx_saliency" in paths
    assert "grad_cam" not in read_card(tmp_path / "mlp")["signatures"]


@pytest.mark.parametrize("kwargs, error", [
    (dict(methods=["grad_cam"]), "Grad-CAM cannot be exported.*4-D"),
    (dict(methods=["saliency", "lime"]), r"Unknown attribution methods \['lime'\]"),
    (dict(methods="saliency"), "must be a list of method names"),
])
def test_bad_method_choices_are_named(tmp_path, kwargs, error):
    with pytest.raises(ValueError, match=error):
        export_model(_mlp(), str(tmp_path), formats=("onnx",), **kwargs)
    assert not (tmp_path / "mlp").exists()


def test_a_chosen_grad_cam_layer_and_methods_are_exported_and_carded(tmp_path, keras_inputs):
    from tests.helpers import tiny_resnet

    model = tiny_resnet()
    images, targets = keras_inputs
    paths = export_model(model, str(tmp_path), name="chosen", formats=("onnx",), methods=["grad_cam"],
                         grad_cam_layer="stage2_block1_add", class_names=TINY_CLASSES)
    assert sorted(k for k in paths if k.startswith("onnx_")) == ["onnx_explain", "onnx_grad_cam", "onnx_predict"]
    card = read_card(tmp_path / "chosen")
    assert card["attribution_defaults"]["grad_cam"] == {"layer": "stage2_block1_add"}
    cam = run_onnx(_session(tmp_path, "chosen", "grad_cam"), images=images, targets=targets)["attributions"]
    expected = attributions.grad_cam(model, images, targets, layer="stage2_block1_add")
    assert relative_error(cam, expected) <= TOLERANCE
