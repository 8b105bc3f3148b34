"""ONNX classifiers from another framework: PyTorch's, against PyTorch autograd.

The classifiers and torch's gradients in tests/data/torch_classifiers/ were
written by make_models.py there (torch is no dependency of this package).
"""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from keras_robust.export import describe_unsupported, export_onnx_classifier
from keras_robust.export.autodiff import gradient_model, prepare_classifier
from tests.helpers import REPO_ROOT, call, run_onnx, running_server

TORCH_DIR = REPO_ROOT / "tests" / "data" / "torch_classifiers"
TORCH_MODELS = ("squeezenet", "mobilenet_v3", "vit", "shufflenet", "swin")
# Written by the older PyTorch exporter with reshapes whose shapes are computed at run time.
RUN_TIME_SHAPES = ("shufflenet", "swin")
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _reference(name):
    reference = np.load(TORCH_DIR / f"{name}.npz")
    options = IMAGENET if reference["normalised"] else {}
    return reference, options


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_input_gradient_equals_torch_autograd(name):
    reference, options = _reference(name)
    classifier = prepare_classifier(TORCH_DIR / f"{name}.onnx", layout="NCHW", **options)
    session = ort.InferenceSession(gradient_model(classifier).SerializeToString(), providers=["CPUExecutionProvider"])
    out = run_onnx(session, images=reference["images"], labels=reference["labels"].astype(np.int64))
    np.testing.assert_allclose(out["logits"], reference["logits"], atol=1e-4)
    error = np.abs(out["gradient"] - reference["gradient"]).max() / np.abs(reference["gradient"]).max()
    assert error <= 1e-4


@pytest.mark.parametrize("name", RUN_TIME_SHAPES)
def test_graphs_whose_shapes_are_computed_at_run_time_get_them_measured(name):
    """ONNX shape inference leaves these graphs' sizes unknown; the prepared classifier knows every one."""
    model = onnx.load(str(TORCH_DIR / f"{name}.onnx"))
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    dims = [[d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
            for value in inferred.graph.value_info]
    assert any(None in value[1:] for value in dims)
    classifier = prepare_classifier(TORCH_DIR / f"{name}.onnx", layout="NCHW", **_reference(name)[1])
    produced = [output for node in classifier.nodes for output in node.output]
    assert all(list(classifier.shapes[value][0]).count(None) <= 1 for value in produced)  # the batch's only
    assert {classifier.shapes[value][0].count(None) for value in produced} == {0, 1}


def test_an_operator_without_a_rule_is_named_as_the_model_names_it(tmp_path):
    """The refusal names the model's own node, not the copy inside the explain graph's loop."""
    node = helper.make_node("Round", ["input"], ["hidden"], name="/my/round")
    graph = helper.make_graph(
        [node, helper.make_node("ReduceMean", ["hidden"], ["logits"], axes=[2, 3], keepdims=0, name="/pool")],
        "g", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match=r"Round node '/my/round'") as error:
        export_onnx_classifier(model, str(tmp_path), name="erf", layout="NCHW")
    assert "step/" not in str(error.value)


@pytest.fixture(scope="module")
def torch_exports(tmp_path_factory):
    """`{name: model folder}`: each PyTorch classifier exported with its input convention."""
    base = tmp_path_factory.mktemp("torch_exports")
    for name in TORCH_MODELS:
        export_onnx_classifier(str(TORCH_DIR / f"{name}.onnx"), str(base), layout="NCHW", **_reference(name)[1])
    return base


def _session(folder, name, endpoint):
    return ort.InferenceSession(str(folder / name / f"{name}-1-{endpoint}.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_exported_graphs_take_nhwc_images_in_unit_range(torch_exports, name):
    reference, _ = _reference(name)
    predict = run_onnx(_session(torch_exports, name, "predict"), images=reference["images"])
    np.testing.assert_allclose(predict["logits"], reference["logits"], atol=1e-4)
    assert list(predict) == ["logits", "probabilities", "classes"]
    card = json.loads((torch_exports / name / "model_card.json").read_text())
    assert card["input"]["shape"][1:] == list(reference["images"].shape[1:])
    assert card["source"]["layout"] == "NCHW" and card["source"]["file"] == f"{name}.onnx"


def _numpy_explanation(gradient_session, images, targets, rho, steps, overshoot):
    """Algorithm 1's explanation mode (docs/method.md §4–5) in NumPy, over the gradient graph:
    `(δ, first step that began with RMSE(δ) >= ρ or -1)`."""
    delta = np.zeros_like(images, np.float64)
    first_met = np.full(len(images), -1)
    total = steps * (steps + 1) / 2

    def rmse(value):
        return np.sqrt(np.mean(value.reshape(len(value), -1) ** 2, axis=1))[:, None, None, None]

    for i in range(steps):
        gradient = run_onnx(gradient_session, images=(images + delta).astype(np.float32),
                            labels=targets.astype(np.int64))["gradient"]
        met = rmse(delta) >= rho
        first_met = np.where((first_met < 0) & met[:, 0, 0, 0], i, first_met)
        direction = np.where(met, -delta, -gradient)
        direction = direction / (1e-8 + rmse(direction))
        delta = delta + rho * overshoot * (steps - i) / total * direction
    return delta, first_met


@pytest.mark.parametrize("name", ["vit", "mobilenet_v3"])
def test_explain_graph_equals_algorithm_1_in_numpy(torch_exports, name):
    reference, options = _reference(name)
    images, targets = reference["images"], np.array([5, 0], np.int32)
    classifier = prepare_classifier(TORCH_DIR / f"{name}.onnx", layout="NCHW", **options)
    gradient = ort.InferenceSession(gradient_model(classifier).SerializeToString(), providers=["CPUExecutionProvider"])
    # Hard-swish's kinks make long trajectories fragile to rounding: with batch-norm statistics that put units near
    # them, ONNX Runtime's and NumPy's float rounding part MobileNetV3's by 2e-4 at step 3 and 0.35 at step 6.
    steps = 35 if name == "vit" else 2
    explained = run_onnx(_session(torch_exports, name, "explain"), images=images, targets=targets,
                         steps=np.array([steps], np.int32))
    expected, first_met = _numpy_explanation(gradient, images, targets, 0.1, steps, 5.0)
    np.testing.assert_allclose(explained["delta"], expected, atol=1e-4)
    assert list(explained) == ["explanations", "delta", "target_confidence", "first_met_step", "target_is_top"]
    np.testing.assert_array_equal(explained["first_met_step"], first_met)
    explained = run_onnx(_session(torch_exports, name, "explain"), images=images, targets=targets)  # 35 steps
    before = run_onnx(_session(torch_exports, name, "predict"), images=images)["probabilities"]
    assert np.all(explained["target_confidence"] > before[np.arange(2), targets])
    after = run_onnx(_session(torch_exports, name, "predict"), images=explained["explanations"])["classes"]
    np.testing.assert_array_equal(explained["target_is_top"], after == targets)


def test_served_over_rest_and_v2_with_explanations(torch_exports):
    from keras_robust.serving import create_app

    reference, _ = _reference("vit")
    image = reference["images"][:1]
    with running_server(create_app(str(torch_exports))) as url:
        predict = call(f"{url}/v1/models/vit:predict", {"instances": image.tolist()})
        explain = call(f"{url}/v1/models/vit:explain", {"instances": [{"images": image[0].tolist(), "targets": 4}]})
        v2 = call(f"{url}/v2/models/vit-explainer/infer", {"inputs": [
            {"name": "images", "shape": [1, 32, 32, 3], "datatype": "FP32", "data": image.ravel().tolist()},
            {"name": "targets", "shape": [1], "datatype": "INT32", "data": [4]}]})
    np.testing.assert_allclose(predict[1]["predictions"][0]["logits"], reference["logits"][0], atol=1e-4)
    assert explain[0] == 200 and v2[0] == 200
    delta = np.asarray(explain[1]["predictions"][0]["delta"])
    assert np.sqrt(np.mean(delta ** 2)) == pytest.approx(0.1, rel=0.05)


@pytest.mark.multiprocess
def test_cli_exports_an_onnx_file_without_tensorflow(tmp_path):
    code = (
        "import sys; from keras_robust.cli import main; "
        f"code = main(['export', {str(TORCH_DIR / 'vit.onnx')!r}, {str(tmp_path)!r}, '--layout', 'NCHW', "
        "'--name', 'tiny-vit']); assert 'tensorflow' not in sys.modules; sys.exit(code)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (tmp_path / "tiny-vit" / "tiny-vit-1-explain.onnx").exists()


def _graph(nodes, inputs, output_dims, initializers=(), opset=17):
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output_dims)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in dict(initializers).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _image_input(name="x", dims=(None, 3, 8, 8), elem_type=onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, ["batch" if d is None else d for d in dims])


def _small_classifier(*middle, opset=17, dims=(None, 3, 8, 8)):
    """x → middle nodes (ending in "h", NCHW) → global pool → (batch, 3) logits."""
    nodes = list(middle) + [
        helper.make_node("GlobalAveragePool", ["h"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="head"),
    ]
    return _graph(nodes, [_image_input(dims=dims)], ["batch", 3], {"w": np.ones((3, 3))}, opset)


def test_unsupported_operators_are_all_named_and_nothing_is_written(tmp_path):
    model = _small_classifier(
        helper.make_node("Sin", ["x"], ["s"], name="wave"),
        helper.make_node("CumSum", ["s", "axis"], ["c"], name="running"),
        helper.make_node("Floor", ["x"], ["unused"], name="not_on_the_path"),
        helper.make_node("Add", ["c", "s"], ["h"], name="join"),
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(2, np.int64), "axis"))
    problems = describe_unsupported(model, layout="NCHW")
    assert [p.split(":")[0] for p in problems] == ["Sin node 'wave'", "CumSum node 'running'"]
    with pytest.raises(ValueError, match=r"\(CumSum, Sin\)"):
        export_onnx_classifier(model, str(tmp_path), "m", layout="NCHW")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("model, options, message", [
    (_graph([helper.make_node("Relu", ["x"], ["y"])], [_image_input(), _image_input("z")], ["batch", 3]), {},
     "one image input and one logits output"),
    (_graph([helper.make_node("Cast", ["x"], ["y"], to=1)], [_image_input(elem_type=onnx.TensorProto.INT64)],
            ["batch", 3]), {}, "must be float32"),
    (_small_classifier(helper.make_node("Relu", ["x"], ["h"]), dims=(None, 3, None, None)), {},
     "size must be fixed.*image_size"),
    (_graph([helper.make_node("Relu", ["x"], ["y"])], [_image_input()], None), {}, r"logits of shape \(batch, K"),
    (_small_classifier(helper.make_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["h", "m", "v"],
                                        training_mode=1)), {}, "training mode"),
    (_small_classifier(helper.make_node("Relu", ["x"], ["h"]), opset=11), {}, "opset must be 13 or later"),
    (_small_classifier(helper.make_node("Relu", ["x"], ["h"])), {"layout": "CHW"}, "layout"),
    (_small_classifier(helper.make_node("Relu", ["x"], ["h"])), {"std": [1.0, 0.0, 1.0]}, "std.*> 0"),
    (_small_classifier(helper.make_node("Relu", ["x"], ["h"])), {"mean": [0.5, 0.5]}, "mean.*one per channel"),
])
def test_what_is_no_explainable_classifier_is_named(tmp_path, model, options, message):
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "s"))
    with pytest.raises(ValueError, match=message):
        export_onnx_classifier(model, str(tmp_path), "m", **{"layout": "NCHW", **options})
    assert list(tmp_path.iterdir()) == []


def test_a_dynamic_size_is_fixed_by_image_size(tmp_path):
    model = _small_classifier(helper.make_node("Relu", ["x"], ["h"]), dims=(None, 3, None, None))
    paths = export_onnx_classifier(model, str(tmp_path), "m", layout="NCHW", image_size=(5, 7))
    images = np.random.default_rng(0).uniform(0, 1, (2, 5, 7, 3)).astype(np.float32)
    out = run_onnx(ort.InferenceSession(paths["onnx_predict"]), images=images)
    np.testing.assert_allclose(out["logits"], np.repeat(images.mean(axis=(1, 2)).sum(1, keepdims=True), 3, 1),
                               rtol=1e-5)
