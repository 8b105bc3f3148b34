"""End-to-end runs of the command line (explain, evaluate, compare-explanations, export, serve) on tiny models."""

import html
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
from PIL import Image

from keras_robust import RobustModel, cli, resnet
from keras_robust.cli.parser import build_parser
from tests.helpers import free_port


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = RobustModel(resnet(depth=8, num_classes=3, input_shape=(16, 16, 3)))
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 6)):
        for name in ("ant", "bee", "cow"):
            folder = root / "data" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype="uint8")).save(folder / f"{i}.png")
    return root


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_explain_image_files_writes_report(workspace, capsys, tmp_path):
    image = workspace / "data" / "test" / "bee" / "0.png"
    code, out, err = run(capsys, "explain", workspace / "model.keras", image, "--steps", "6",
                         "--class-names", "ant", "bee", "cow", "--out", tmp_path)
    assert code == 0, err
    assert out.count("0.png: toward") == 2 + 3
    assert out.count("(predicted)") == 1 and out.count("(runner-up)") == 1
    assert f"writing to {tmp_path}" in out
    assert (tmp_path / "explanations.png").stat().st_size > 1000
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "bee" in html
    saved = np.load(tmp_path / "explanations.npz")
    assert saved["images"].shape == (1, 5, 16, 16, 3)


def test_explain_separates_held_targets_from_a_missed_budget_and_names_the_switch(capsys, tmp_path):
    # A linear classifier that gives "bee" at p = 1.000 (logit 200 above the others): its softmax, and with it
    # the input gradient toward "bee", is 0 in float32; toward the others the gradient is W_t − W_bee.
    inputs = keras.Input((16, 16, 3))
    logits = keras.layers.Dense(3, bias_initializer=keras.initializers.Constant([0.0, 200.0, 0.0]))(
        keras.layers.Flatten()(inputs))
    keras.Model(inputs, logits).save(tmp_path / "sure.keras")
    image = tmp_path / "grey.png"
    Image.fromarray(np.full((16, 16, 3), 128, "uint8")).save(image)
    argv = ["explain", tmp_path / "sure.keras", image, "--steps", "6", "--class-names", "ant", "bee", "cow"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "strict")
    assert code == 1
    # The standard targets: predicted (bee), runner-up, then every class (bee again).
    assert "1 of 1 images (2 of 5 explanations, 5 targets per image) fell short" in err
    assert ("2 are toward a class the network already gives at p ≈ 1.000, where its input gradient vanishes: there "
            "is nothing to explain (more steps or a larger rho change nothing) (image 0 toward bee, image 0 toward "
            "bee)") in err
    assert "did not reach the budget" not in err and "rerun with --no-sanity-check" in err
    assert not (tmp_path / "strict").exists()
    with pytest.warns(UserWarning, match="^2 of 5 explanations are toward a class the network already gives"):
        code, out, err = run(capsys, *argv, "--no-sanity-check", "--out", tmp_path / "lenient")
    assert code == 0, err
    assert out.count("[short of rho: held]") == 2
    assert "2 of 5 explanations make the target the top class on x + δ." in out
    assert "3 of 5 reached their budget ρ by step 3 of 6" in out
    saved = np.load(tmp_path / "lenient" / "explanations.npz")
    assert saved["outcome"].tolist() == [["held", "reached", "reached", "held", "reached"]]
    assert saved["target_is_top"].tolist() == [[True, False, False, True, False]]
    assert "2 of 5 explanations make the target the top class" in (tmp_path / "lenient" / "report.html").read_text()


@pytest.mark.slow
def test_explain_from_data_toward_named_class(workspace, capsys, tmp_path):
    code, out, err = run(capsys, "explain", workspace / "model.keras", "--data", workspace / "data",
                         "--indices", "0", "5", "--targets", "cow", "--steps", "6",
                         "--out", tmp_path, "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert out.count("toward cow") == 2
    assert "test image 0: toward cow" in out and "test image 5: toward cow" in out


@pytest.mark.slow
def test_evaluate_prints_aras_and_writes_curve(workspace, capsys, tmp_path):
    code, out, err = run(capsys, "evaluate", workspace / "model.keras", "--data", workspace / "data",
                         "--n-images", "6", "--steps", "20", "--out", tmp_path,
                         "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "attack ARA" in out and "BTR ARA" in out and "robust_accuracy_l2_0.5" in out
    summary = json.loads((tmp_path / "evaluation.json").read_text())
    assert summary["num_images"] == 6 and summary["attack_ara"] >= 0
    assert (tmp_path / "ara_curve.png").exists() and (tmp_path / "report.html").exists()


def test_evaluate_names_the_sanity_switch_and_reports_late_images(workspace, capsys, tmp_path, monkeypatch):
    from keras_robust.evaluation import accuracy_robustness

    argv = ("evaluate", workspace / "model.keras", "--data", workspace / "data", "--n-images", "12",
            "--out", tmp_path, "--cache-dir", tmp_path / "cache")
    code, _, err = run(capsys, *argv, "--rho", "1e-6", "--steps", "4")
    assert code == 1 and "Increase rho or steps" in err and "rerun with --no-sanity-check" in err
    real_ara, asked = accuracy_robustness.ara, []

    def late_ara(model, images, labels, **options):
        asked.append(options["sanity_check"])
        found = real_ara(model, images, labels, **{**options, "steps": 8})
        btr = found.btr_min_rmse.copy()
        btr[0] = np.inf
        return accuracy_robustness.AraResult(**{**vars(found), "attack_late_images": 2, "btr_late_images": 1,
                                                "btr_min_rmse": btr})

    monkeypatch.setattr(accuracy_robustness, "ara", late_ara)
    code, out, err = run(capsys, *argv, "--no-sanity-check")
    assert code == 0, err
    assert asked == [False]
    assert "loose bound: 2 images changed class and 1 fell to 1/K only after step 225" in out
    assert "unbroken: 0 images never changed class and 1 never fell to 1/K within rho=20" in out
    assert json.loads((tmp_path / "evaluation.json").read_text())["attack_late_images"] == 2


def test_evaluate_autoattack_reports_beside_the_papers_attack(workspace, capsys, tmp_path, monkeypatch):
    from keras_robust.evaluation.autoattack import ensemble

    asked = []

    def fake_autoattack(model, images, labels, norm, eps, batch_size, strategy, progress, checkpoint):
        asked.append((norm, round(eps, 6), os.path.basename(checkpoint)))
        robust = np.arange(len(images)) < len(images) // 4
        return ensemble.AutoAttackResult(robust, images, np.where(robust, "", "apgd-ce"), 1.0, float(robust.mean()),
                                         norm, eps)

    monkeypatch.setattr(ensemble, "autoattack", fake_autoattack)
    argv = ("evaluate", workspace / "model.keras", "--data", workspace / "data", "--n-images", "8", "--steps", "6",
            "--no-sanity-check", "--out", tmp_path, "--cache-dir", tmp_path / "cache")
    code, out, err = run(capsys, *argv, "--autoattack", "--eps", "0.5")
    assert code == 0, err
    assert asked == [("L2", 0.5, "autoattack-L2-0.5.npz")]
    summary = json.loads((tmp_path / "evaluation.json").read_text())
    assert summary["autoattack_l2_0.5"] == 0.25 and "robust_accuracy_l2_0.5" in summary
    assert "autoattack_l2_0.5: 0.2500" in out
    paper = summary["robust_accuracy_l2_0.5"]
    sentence = f"AutoAttack (L2, ε = 0.5): robust accuracy 25%, against {100 * paper:.0f}% under the paper's L2,min attack"
    assert sentence in html.unescape((tmp_path / "report.html").read_text())
    asked.clear()
    code, out, err = run(capsys, *argv, "--autoattack", "--norm", "Linf")
    assert code == 0, err
    assert asked == [("Linf", round(8 / 255, 6), "autoattack-Linf-0.0313725.npz")]
    summary = json.loads((tmp_path / "evaluation.json").read_text())
    assert "autoattack_linf_0.0313725" in summary and not any(k.startswith("robust_accuracy_l2") for k in summary)
    code, _, err = run(capsys, *argv, "--norm", "Linf")
    assert code == 1 and "--norm Linf needs --autoattack" in err


@pytest.mark.slow
def test_compare_explanations_runs(workspace, capsys, tmp_path):
    code, out, err = run(capsys, "compare-explanations", workspace / "model.keras", "--data",
                         workspace / "data", "--n-images", "2", "--methods", "saliency", "grad_cam",
                         "--out", tmp_path, "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "rank_correlation_saliency" in out and "class_changed" in out
    assert (tmp_path / "comparison.png").exists()
    summary = json.loads((tmp_path / "comparison.json").read_text())
    html = (tmp_path / "report.html").read_text()
    # The report's sentence is the figure's: its ρs and what it means.
    saliency = summary["rank_correlation_saliency"]
    verdict = "barely move" if saliency >= 0.7 else "change substantially" if saliency <= 0.4 else "change partly"
    assert f"The saliency maps {verdict} (mean ρs {saliency:.2f})" in html
    assert "<th>ρs Grad-CAM</th>" in html


def test_clear_errors(workspace, capsys, tmp_path):
    (tmp_path / "x.txt").write_text("no")
    code, _, err = run(capsys, "explain", workspace / "model.keras", tmp_path / "x.txt")
    assert code == 1 and "x.txt is not a readable image" in err and "Traceback" not in err
    code, _, err = run(capsys, "explain", tmp_path / "nope.keras", tmp_path / "x.txt")
    assert code == 1 and "nope.keras" in err
    (tmp_path / "torn.keras").write_bytes((workspace / "model.keras").read_bytes()[:200])
    code, _, err = run(capsys, "explain", tmp_path / "torn.keras", tmp_path / "x.txt")
    assert code == 1 and "torn.keras is not a readable Keras model file" in err and "not found" not in err
    code, _, err = run(capsys, "explain", workspace / "model.keras", "--data", workspace / "data",
                       "--targets", "horse", "--steps", "4", "--cache-dir", tmp_path / "c")
    assert code == 1 and "Unknown class name" in err
    code, _, err = run(capsys, "evaluate", workspace / "model.keras", "--data", workspace / "data",
                       "--rho", "-1", "--cache-dir", tmp_path / "c")
    assert code == 1 and "rho" in err


@pytest.mark.slow
def test_export_writes_both_formats_and_a_card_from_the_training_summary(workspace, capsys, tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "model.keras").write_bytes((workspace / "model.keras").read_bytes())
    (model_dir / "summary.json").write_text(json.dumps({"class_names": ["ant", "bee", "cow"], "psi": 12.5}))
    (tmp_path / "evaluation.json").write_text(json.dumps({"attack_ara": 0.0071, "btr_ara": 0.0233}))
    out = tmp_path / "exports"
    code, printed, err = run(capsys, "export", model_dir / "model.keras", out, "--name", "bugs",
                             "--evaluation", tmp_path / "evaluation.json", "--steps", "20")
    assert code == 0, err
    assert (out / "bugs" / "1" / "saved_model.pb").exists()
    assert (out / "bugs" / "bugs-1-predict.onnx").exists() and (out / "bugs" / "bugs-1-explain.onnx").exists()
    card = json.loads((out / "bugs" / "model_card.json").read_text())
    assert card["class_names"] == ["ant", "bee", "cow"] and card["input"]["shape"] == [None, 16, 16, 3]
    assert card["training"]["psi"] == 12.5 and card["ara"]["attack_ara"] == 0.0071
    assert card["explain_defaults"]["steps"] == 20
    assert "onnx_explain" in printed and "models.config" in printed
    code, _, err = run(capsys, "export", model_dir / "model.keras", out, "--name", "bugs", "--formats", "onnx")
    assert code == 1 and "already exported" in err and "--overwrite" in err
    code, _, err = run(capsys, "export", model_dir / "model.keras", out, "--name", "bugs",
                       "--formats", "onnx", "--overwrite", "--class-names", "a", "b")
    assert code == 1 and "class_names" in err and "Traceback" not in err


def test_export_writes_the_attribution_methods_chosen(capsys, tmp_path):
    """An .onnx classifier's methods by --methods, Grad-CAM's maps named by --grad-cam-layer; all in the card."""
    from tests.export.test_onnx_classifier import TORCH_DIR

    source = TORCH_DIR / "squeezenet.onnx"
    code, printed, err = run(capsys, "export", source, tmp_path, "--layout", "NCHW", "--methods", "saliency",
                             "grad_cam", "--grad-cam-layer", "/features/features.12/Concat_output_0")
    assert code == 0, err
    card = json.loads((tmp_path / "squeezenet" / "model_card.json").read_text())
    assert [m for m in card["signatures"] if m not in ("serving_default", "explain")] == ["saliency", "grad_cam"]
    assert card["attribution_defaults"]["grad_cam"] == {"layer": "/features/features.12/Concat_output_0"}
    assert "onnx_grad_cam" in printed and "onnx_smoothgrad" not in printed
    code, _, err = run(capsys, "export", source, tmp_path / "again", "--layout", "NCHW", "--methods", "grad_cam",
                       "--grad-cam-layer", "no_such_value")
    assert code == 1 and "Grad-CAM's feature maps must be a 4-D value" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.multiprocess
def test_serve_answers_the_rest_api_with_the_limits_given_as_flags(tiny_export, tmp_path):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    base, name, model = tiny_export
    port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "keras_robust.cli", "serve", str(base), "--port", str(port),
         "--max-batch", "2", "--log-level", "warning", "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1/models/{name}"
    try:
        status = _wait_for(url, server)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        images = np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).round(4)
        answer = _post(url + ":predict", {"instances": images[:2].tolist()})
        logits = np.array([p["logits"] for p in answer["predictions"]])
        np.testing.assert_allclose(logits, model(images[:2].astype("float32")), atol=1e-4)
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(url + ":predict", {"instances": images.tolist()})
        assert refused.value.code == 400 and "max_batch=2" in json.loads(refused.value.read())["error"]
        message = predict_pb2.PredictRequest()
        message.model_spec.name = name
        message.inputs["images"].CopyFrom(tf.make_tensor_proto(images[:1].astype("float32")))
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(message, timeout=60)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["logits"]), logits[:1], atol=1e-6)
    finally:
        server.terminate()
        server.wait(30)


def test_serve_names_a_folder_without_exports(capsys, tmp_path):
    code, _, err = run(capsys, "serve", tmp_path)
    assert code == 1 and "model_card.json" in err and "Traceback" not in err


def _wait_for(url, server, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve exited: {server.stdout.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"serve did not answer {url} within {timeout} s")


def _post(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.multiprocess
def test_help_imports_neither_tensorflow_nor_the_servers(tmp_path):
    script = (
        "import contextlib, io, sys\n"
        "from keras_robust.cli import main\n"
        "for argv in (['--help'], ['demo', '--help'], ['train', '--help'], ['explain', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "    assert 'usage: keras-robust' in out.getvalue(), argv\n"
        # keras_robust itself loads nothing heavy until a public name is used (its defaults are read).
        "print(sorted(m for m in ('tensorflow', 'keras', 'fastapi', 'onnxruntime', 'keras_robust.method.attacks') "
        "if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
    assert completed.stderr == ""


@pytest.mark.multiprocess
@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "{data}", "--out", "o", "--lr", "-1"], "Received: learning_rate=-1.0"),
    (["train", "--data", "{data}", "--out", "o", "--depth", "45"], "Received: depth=45"),
    (["train", "--data", "missing.tar.gz", "--out", "o"], "Image source not found: missing.tar.gz"),
    (["train", "--data", "{data}", "--out", "o", "--depth", "1000004"], "Received: depth=1000004"),
    (["train", "--data", "{data}", "--out", "o", "--strategy", "multiworker"], "Received: TF_CONFIG unset"),
    (["evaluate", "m.keras", "--data", "{data}", "--strategy", "multiworker"], "Received: TF_CONFIG unset"),
    (["evaluate", "m.keras", "--data", "{data}", "--eps", "-1"], "Received: eps=-1.0"),
    (["explain", "m.keras", "a.png", "--data", "{data}"], "not both"),
    (["explain", "m.keras", "--rho", "2"], "Nothing to explain"),
    (["explain", "m.keras", "--data", "{data}", "--rho", "2"], "Received: rho=2.0"),
    (["evaluate", "m.keras", "--data", "{data}", "--momentum", "1"], "Received: momentum=1.0"),
    (["evaluate", "m.keras", "--data", "{data}", "--batch-size", "0"], "Received: batch_size=0"),
    (["export", "m.keras", "out", "--steps", "1"], "Received: steps=1"),
    (["export", "m.keras", "out", "--layout", "NCHW"], "describe an .onnx model's input"),
    (["export", "m.onnx", "out"], "needs --layout"),
    (["export", "m.keras", "out", "--out", "out2"], "Give the output folder once"),
    (["export", "m.keras"], "Give the output folder once"),
    (["serve", "{data}", "--max-batch", "0"], "Received: max_batch=0"),
    (["explain", "m.keras", "--data", "{data}", "--steps", "100000000"],
     "`steps` must be an integer in [2, 10000]. Received: steps=100000000"),
    (["train", "--data", "{data}", "--out", "o", "--momentum", "1.0"], "must be in [0, 1). Received: momentum=1.0"),
    (["explain", "m.keras", "--data", "{data}", "--out", "{data}/afile"], "--out names a file"),
    (["export", "m.keras", "{data}/afile"], "OUT names a file"),
])
def test_bad_arguments_are_refused_before_tensorflow_loads(tmp_path, monkeypatch, argv, message):
    argv = [word.replace("{data}", str(tmp_path)) for word in argv]
    (tmp_path / "afile").write_text("a file where a folder belongs")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    script = (
        "import sys\n"
        "from keras_robust.cli import main\n"
        f"code = main({argv!r})\n"
        "print(code, sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120)
    assert completed.stdout.strip() == "1 []", completed.stderr
    assert message in completed.stderr and "Traceback" not in completed.stderr


def test_help_describes_every_option_with_its_default():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        for action in command._actions:
            if action.dest in ("help",):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.default not in (None, False) and action.option_strings:
                shown = action.default if not isinstance(action.default, list) else action.default[0]
                forms = {str(shown), f"{shown:g}" if isinstance(shown, float) else str(shown)}
                assert "default" in action.help and any(f in action.help for f in forms), (
                    f"{name} {action.option_strings} does not show its default {action.default!r}")


def test_command_line_defaults_are_the_librarys():
    import inspect

    import keras_robust.evaluation.accuracy_robustness as robustness
    import keras_robust.explanations.adversarial as explain
    import keras_robust.training.loop as training
    from keras_robust.common.strategies import STRATEGIES
    from keras_robust.export import export_model
    from keras_robust.reporting import demo
    from keras_robust.training.precision import PRECISIONS
    from keras_robust.training.recipes import RECIPES

    def defaults(function):
        return {k: p.default for k, p in inspect.signature(function).parameters.items()}

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    parsed = {name: vars(commands[name].parse_args(argv)) for name, argv in {
        "explain": ["m"], "evaluate": ["m", "--data", "d"], "export": ["m", "o"],
        "train": ["--data", "d", "--out", "o"], "demo": []}.items()}
    explainer = defaults(explain.AdversarialExplainer.__init__)
    assert (parsed["explain"]["rho"], parsed["explain"]["steps"], parsed["explain"]["overshoot"]) == (
        explainer["rho"], explainer["steps"], explainer["overshoot"])
    ara = defaults(robustness.ara)
    assert {k: parsed["evaluate"][k] for k in ("rho", "steps", "momentum", "batch_size")} == {
        k: ara[k] for k in ("rho", "steps", "momentum", "batch_size")}
    exporter = defaults(export_model)
    assert {k: parsed["export"][k] for k in ("rho", "steps", "overshoot", "version")} == {
        k: exporter[k] for k in ("rho", "steps", "overshoot", "version")}
    config = training.TrainingConfig()
    choices = {a.dest: a for a in commands["train"]._actions}
    assert (choices["precision"].default, list(choices["precision"].choices)) == (config.precision, list(PRECISIONS))
    assert (choices["strategy"].default, tuple(choices["strategy"].choices)) == (config.strategy, STRATEGIES)
    assert (choices["recipe"].default, list(choices["recipe"].choices)) == (config.recipe, list(RECIPES))
    runner = defaults(demo.run_demo)
    assert parsed["demo"]["model"] == runner["model"] == demo.DEMO_MODEL
    assert (parsed["demo"]["steps"], parsed["demo"]["attack_steps"], parsed["demo"]["out"]) == (
        runner["steps"], runner["attack_steps"], runner["out_dir"])


@pytest.mark.slow
def test_commands_accept_a_shipped_network_by_name(capsys, tmp_path):
    image = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 32, 3), 128, "uint8")).save(image)
    code, out, err = run(capsys, "explain", "resnet44-cifar10-robust", image, "--targets", "cat",
                         "--steps", "4", "--out", tmp_path / "e")
    assert code == 0, err
    assert "grey.png: toward cat" in out
    code, _, err = run(capsys, "explain", "resnet44-cifar10-nope", image)
    assert code == 1 and "shipped networks: resnet44-cifar10-standard" in err


def test_evaluate_refuses_data_of_another_number_of_classes(capsys, tmp_path):
    # A 10-class network on a 3-class folder would read the labels as classes 0-2 and report
    # "accuracy 0.3333"-like figures for a comparison that means nothing.
    rng = np.random.default_rng(1)
    for name in ("ant", "bee", "cow"):
        folder = tmp_path / "data" / "test" / name
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype="uint8")).save(folder / "0.png")
    code, _, err = run(capsys, "evaluate", "resnet44-cifar10-standard", "--data", tmp_path / "data",
                       "--n-images", "3", "--out", tmp_path / "o", "--cache-dir", tmp_path / "c")
    assert code == 1 and "Traceback" not in err
    assert "The model has 10 classes and the data set 3 (ant, bee, cow)" in err
    assert not (tmp_path / "o" / "evaluation.json").exists()


def test_clear_messages_for_bad_arguments(workspace, capsys, tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    image = workspace / "data" / "test" / "bee" / "0.png"
    code, _, err = run(capsys, "explain", corrupt, image)
    assert code == 1 and "corrupt.keras is not a readable Keras model file" in err
    code, _, err = run(capsys, "evaluate", workspace / "model.keras", "--data", workspace / "data",
                       "--batch-size", "0", "--cache-dir", tmp_path / "c", "--out", tmp_path / "o")
    assert code == 1 and "Received: batch_size=0" in err
    code, _, err = run(capsys, "explain", workspace / "model.keras", image, "--targets", "-1",
                       "--steps", "4", "--out", tmp_path / "e")
    assert code == 1 and "Received: target -1" in err
    code, _, err = run(capsys, "export", workspace / "model.keras", tmp_path / "x", "--steps", "1")
    assert code == 1 and "`steps` must be an integer in [2," in err
    code, _, err = run(capsys, "train", "--data", workspace / "data", "--out", tmp_path / "t", "--lr", "-1")
    assert code == 1 and "Received: learning_rate=-1.0" in err
    code, _, err = run(capsys, "train", "--data", workspace / "data", "--out", tmp_path / "t", "--lr", "nan")
    assert code == 1 and "`learning_rate` must be a finite number > 0" in err
    with pytest.raises(SystemExit):
        cli.main(["serve", str(tmp_path), "--port", "99999"])
    assert "a port is in 1-65535. Received: 99999" in capsys.readouterr().err
    assert "Traceback" not in err
