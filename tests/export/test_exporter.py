"""Export round trips: SavedModel (saved_model_cli, tf.saved_model.load) and ONNX."""

import json
import subprocess
import sys

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

import keras_robust
from keras_robust.export import export_model, read_card
from keras_robust.export.card import ATTRIBUTION_OUTPUTS, EXPLAIN_OUTPUTS
from tests.helpers import TINY_CLASSES, tiny_resnet

RHO, STEPS = 0.1, 35
# ReLU's gradient jumps where a unit crosses zero, and the RMSE-normalised steps
# amplify any rounding difference: after ~8 steps ONNX Runtime's and
# TensorFlow's float32 kernels flip a unit differently and the two ReLU
# trajectories part (TF alone differs by ~8e-4 between batch sizes 1 and 8).
# The half-Huber gradient is continuous and agrees to ~1e-6 over all 35 steps.
ONNX_STEPS = {"half_huber_relu": STEPS, "relu": 5}


@pytest.fixture(scope="module", params=["half_huber_relu", "relu"])
def exported(request, tiny_export, tmp_path_factory):
    """`(model_dir, version dir, keras model)` for each activation."""
    if request.param == "half_huber_relu":
        base, name, model = tiny_export
    else:
        base, name, model = tmp_path_factory.mktemp("relu"), "tiny_relu", tiny_resnet("relu", seed=1)
        export_model(model, str(base), name=name, class_names=TINY_CLASSES)
    return base / name, base / name / "1", model


def _images(batch, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, 32, 32, 3)).astype("float32")


def _explain_inputs(batch, steps=STEPS):
    return {
        "images": _images(batch, seed=batch),
        "targets": (np.arange(batch, dtype=np.int32) * 3 + 1) % 10,
        "rho": np.full(batch, RHO, np.float32),
        "steps": np.full(batch, steps, np.int32),
    }


def _tf_explanation(model, inputs):
    explainer = keras_robust.AdversarialExplainer(
        model, rho=RHO, steps=int(inputs["steps"][0]), overshoot=5.0, sanity_check=False
    )
    return explainer.explain(inputs["images"], inputs["targets"][:, None])


@pytest.mark.slow
def test_layout_and_card(exported):
    model_dir, version_dir, model = exported
    assert (version_dir / "saved_model.pb").exists()
    assert (version_dir / "variables").is_dir()
    card = read_card(str(model_dir))
    assert card["class_names"] == TINY_CLASSES
    assert card["input"]["shape"] == [None, 32, 32, 3]
    assert card["explain_defaults"] == {**card["explain_defaults"], "rho": 0.1, "steps": 35, "overshoot": 5.0}
    assert card["signatures"]["explain"]["inputs"] == ["images", "targets", "rho", "steps"]
    for key in ("onnx_predict", "onnx_explain"):
        assert (model_dir / card["files"][key]).exists()
    assert "predict" in card["files"]["onnx_predict"] and "explain" in card["files"]["onnx_explain"]
    assert list(card["versions"]) == ["1"]
    config = (model_dir.parent / "models.config").read_text()
    assert f'name: "{model_dir.name}"' in config and f'base_path: "/models/{model_dir.name}"' in config


@pytest.mark.slow
@pytest.mark.multiprocess
def test_saved_model_cli_show_lists_both_signatures(exported):
    _, version_dir, _ = exported
    shown = _saved_model_cli("show", "--dir", str(version_dir), "--all")
    explain = shown.split("signature_def['explain']")[1].split("signature_def[")[0]
    for name in ("images", "targets", "rho", "steps", *EXPLAIN_OUTPUTS):
        assert f"['{name}']" in explain
    assert "shape: (-1, 32, 32, 3)" in explain
    default = shown.split("signature_def['serving_default']")[1]
    for name in ("images", "logits", "probabilities", "classes"):
        assert f"['{name}']" in default


@pytest.mark.slow
@pytest.mark.multiprocess
def test_saved_model_cli_run_matches_keras(exported, tmp_path):
    _, version_dir, model = exported
    images = _images(3)
    np.save(tmp_path / "images.npy", images)
    _saved_model_cli(
        "run", "--dir", str(version_dir), "--tag_set", "serve",
        "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'images.npy'}",
        "--outdir", str(tmp_path / "out"),
    )
    logits = np.load(tmp_path / "out" / "logits.npy")
    np.testing.assert_allclose(logits, model(images, training=False), atol=1e-4)
    assert np.array_equal(np.load(tmp_path / "out" / "classes.npy"), np.argmax(logits, -1))


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 8])
def test_loaded_saved_model_predict_and_explain(exported, batch):
    _, version_dir, model = exported
    loaded = tf.saved_model.load(str(version_dir))
    images = _images(batch)
    outputs = loaded.signatures["serving_default"](images=images)
    logits = model(images, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits), atol=1e-5)
    inputs = _explain_inputs(batch)
    explained = loaded.signatures["explain"](**inputs)
    reference = _tf_explanation(model, inputs)
    np.testing.assert_allclose(explained["delta"], reference.delta[:, 0], atol=1e-3)
    np.testing.assert_allclose(explained["explanations"], reference.images[:, 0], atol=1e-3)
    np.testing.assert_allclose(explained["target_confidence"], reference.confidence_after[:, 0], atol=1e-3)
    _assert_same_outcome(explained, reference)


def _assert_same_outcome(outputs, reference):
    """The export's outcome of each explanation is the Python explainer's."""
    assert outputs["first_met_step"].dtype == np.int32 and outputs["target_is_top"].dtype == bool
    np.testing.assert_array_equal(outputs["first_met_step"], reference.first_met_step[:, 0])
    np.testing.assert_array_equal(outputs["target_is_top"], reference.target_is_top[:, 0])


def test_onnx_inputs_and_outputs_come_in_the_documented_order(exported):
    model_dir, _, _ = exported
    card = read_card(model_dir)
    for endpoint, signature in (("onnx_predict", "serving_default"), ("onnx_explain", "explain")):
        session = _session(model_dir, endpoint)
        assert [o.name for o in session.get_outputs()] == card["signatures"][signature]["outputs"]
    assert card["signatures"]["serving_default"]["outputs"] == ["logits", "probabilities", "classes"]
    assert card["signatures"]["explain"]["outputs"] == ["explanations", "delta", "target_confidence",
                                                        "first_met_step", "target_is_top"]
    assert set(card["outputs"]) == {*card["signatures"]["serving_default"]["outputs"], *EXPLAIN_OUTPUTS,
                                    *ATTRIBUTION_OUTPUTS}


@pytest.mark.parametrize("batch", [1, 8])
def test_onnx_predict_matches_keras(exported, batch):
    model_dir, _, model = exported
    session = _session(model_dir, "onnx_predict")
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape[0] not in (1, 8)  # symbolic batch
    images = _images(batch)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": images})))
    logits = model(images, training=False).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"], tf.nn.softmax(logits), atol=1e-4)
    assert np.array_equal(outputs["classes"], np.argmax(logits, -1))


@pytest.mark.parametrize("batch", [1, 8])
def test_onnx_explain_matches_tensorflow_explanation(exported, batch):
    model_dir, _, model = exported
    session = _session(model_dir, "onnx_explain")
    assert [i.name for i in session.get_inputs()] == ["images", "targets"]
    assert [i.name for i in session.get_overridable_initializers()] == ["rho", "steps"]
    relu = isinstance(model.get_layer("head_act"), keras.layers.ReLU)
    inputs = _explain_inputs(batch, ONNX_STEPS["relu" if relu else "half_huber_relu"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))
    reference = _tf_explanation(model, inputs)
    np.testing.assert_allclose(outputs["delta"], reference.delta[:, 0], atol=1e-3)
    np.testing.assert_allclose(outputs["explanations"], reference.images[:, 0], atol=1e-3)
    np.testing.assert_allclose(outputs["target_confidence"], reference.confidence_after[:, 0], atol=1e-3)
    _assert_same_outcome(outputs, reference)
    if not relu:  # 35 steps end on the budget sphere (docs/method.md §5)
        rmse = np.sqrt(np.mean(outputs["delta"].reshape(batch, -1) ** 2, axis=1))
        np.testing.assert_allclose(rmse, RHO, rtol=0.05)


@pytest.mark.slow
def test_onnx_explain_takes_rho_and_steps_per_example(tiny_export):
    base, name, model = tiny_export
    session = _session(base / name, "onnx_explain")
    images = np.repeat(_images(1), 3, axis=0)
    targets = np.array([2, 2, 2], np.int32)
    rho = np.array([0.05, 0.1, 0.1], np.float32)
    steps = np.array([35, 35, 7], np.int32)
    delta = session.run(["delta"], dict(images=images, targets=targets, rho=rho, steps=steps))[0]
    for b in range(3):
        alone = keras_robust.attack_details(
            model, images[b:b + 1], targets[b:b + 1], rho=float(rho[b]), steps=int(steps[b]),
            overshoot=5.0, targeted=True, sanity_check=False,
        )
        np.testing.assert_allclose(delta[b], alone.delta[0], atol=1e-4)


def test_onnx_explain_defaults_rho_and_steps_to_the_card(tiny_export):
    base, name, _ = tiny_export
    session = _session(base / name, "onnx_explain")
    defaults = read_card(str(base / name))["explain_defaults"]
    inputs = _explain_inputs(3, steps=defaults["steps"])
    inputs["rho"][:] = defaults["rho"]
    given = session.run(None, inputs)
    left_out = session.run(None, {"images": inputs["images"], "targets": inputs["targets"]})
    for a, b in zip(given, left_out):
        np.testing.assert_array_equal(a, b)
    one_rho = session.run(["delta"], {**inputs, "rho": np.array([0.05], np.float32)})[0]
    per_image = session.run(["delta"], {**inputs, "rho": np.full(3, 0.05, np.float32)})[0]
    np.testing.assert_array_equal(one_rho, per_image)
    assert not np.allclose(one_rho, given[[o.name for o in session.get_outputs()].index("delta")])


def test_saved_model_explain_takes_one_rho_and_steps_for_all_images(tiny_export):
    base, name, _ = tiny_export
    explain = tf.saved_model.load(str(base / name / "1")).signatures["explain"]
    inputs = _explain_inputs(2, steps=5)
    shared = explain(**{**inputs, "rho": inputs["rho"][:1], "steps": inputs["steps"][:1]})
    np.testing.assert_array_equal(shared["delta"], explain(**inputs)["delta"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="rho needs one entry per image, or one"):
        explain(**{**inputs, "rho": np.full(3, RHO, np.float32)})


def test_saved_model_explain_rejects_bad_targets(tiny_export):
    base, name, _ = tiny_export
    explain = tf.saved_model.load(str(base / name / "1")).signatures["explain"]
    inputs = _explain_inputs(2)
    inputs["targets"] = np.array([1, 10], np.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="targets must be < the number of classes"):
        explain(**inputs)


def test_second_version_merges_into_card_and_existing_version_is_kept(tmp_path):
    model = tiny_resnet()
    export_model(model, str(tmp_path), name="m", formats=("onnx",))
    export_model(model, str(tmp_path), name="m", version=2, formats=("onnx",), rho=0.2)
    card = read_card(str(tmp_path / "m"))
    assert card["version"] == 2 and card["explain_defaults"]["rho"] == 0.2
    assert sorted(card["versions"]) == ["1", "2"]
    assert card["versions"]["1"]["explain_defaults"]["rho"] == 0.1
    assert not (tmp_path / "m" / "1").exists()  # ONNX only: no SavedModel directory
    assert "config {" not in (tmp_path / "models.config").read_text()  # nothing for TF Serving
    with pytest.raises(FileExistsError, match="version"):
        export_model(model, str(tmp_path), name="m", version=2, formats=("onnx",))
    # V2 clients call m's explain endpoint "m-explainer": no export may take that name beside m, nor m beside it.
    with pytest.raises(ValueError, match="holds the export 'm', and 'm-explainer' is the name V2 clients use for "
                                         "'m''s explain endpoint"):
        export_model(model, str(tmp_path), name="m-explainer", formats=("onnx",))
    assert not (tmp_path / "m-explainer").exists()
    with pytest.raises(ValueError, match="'m-grad-cam' is the name V2 clients use for 'm''s grad_cam endpoint"):
        export_model(model, str(tmp_path), name="m-grad-cam", formats=("onnx",))
    export_model(model, str(tmp_path / "other"), name="n-explainer", formats=("onnx",))
    with pytest.raises(ValueError, match="holds the export 'n-explainer'"):
        export_model(model, str(tmp_path / "other"), name="n", formats=("onnx",))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "a/b"}, "name"),
        ({"version": 0}, "version"),
        ({"rho": 0}, "rho"),
        ({"steps": 0}, "steps"),
        ({"formats": ("tflite",)}, "formats"),
        ({"class_names": ["a", "b"]}, "class_names"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_model(tiny_resnet(), str(tmp_path), **{"name": "m", **kwargs})


def test_onnx_refuses_operators_without_a_derivative_rule_and_writes_nothing(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda v: keras.ops.cumsum(v, axis=1), name="running_total")(inputs)
    x = keras.layers.Lambda(lambda v: keras.ops.sin(v * 4.0), name="wave")(x)
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, logits)
    with pytest.raises(ValueError, match=r"\(CumSum, Sin\).*CumSum node '.*running_total.*'.*Sin node"):
        export_model(model, str(tmp_path), name="m")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the SavedModel
    paths = export_model(model, str(tmp_path), name="m", formats=("savedmodel",))
    assert json.load(open(paths["card"]))["files"] == {"saved_model": "1"}


def _saved_model_cli(*args):
    completed = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def _session(model_dir, key):
    card = read_card(str(model_dir))
    return ort.InferenceSession(str(model_dir / card["files"][key]), providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_shipped_robust_resnet44_explains_the_same_in_onnx(tmp_path):
    """N4, the authors' half-Huber ResNet-44: 35 steps agree as on the tiny ResNets."""
    model = keras_robust.pretrained("resnet44-cifar10-robust")
    paths = export_model(model, str(tmp_path), name="n4", formats=("onnx",))
    inputs = _explain_inputs(2)
    outputs = dict(zip(EXPLAIN_OUTPUTS, ort.InferenceSession(paths["onnx_explain"]).run(None, inputs)))
    reference = _tf_explanation(model, inputs)
    np.testing.assert_allclose(outputs["delta"], reference.delta[:, 0], atol=1e-3)
    np.testing.assert_allclose(outputs["target_confidence"], reference.confidence_after[:, 0], atol=1e-3)
    _assert_same_outcome(outputs, reference)
