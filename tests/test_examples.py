"""The examples run against what they document."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.multiprocess
def test_explain_over_http_prints_both_answers_and_saves_the_panel(tiny_server, tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "panel.png"
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "explain_over_http.py"), str(image), "--url", tiny_server,
         "--model", "tiny", "--target", "dog", "--steps", "10", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "prediction:" in completed.stdout and "explanation toward dog: confidence" in completed.stdout
    before, after = completed.stdout.split("confidence ")[1].split()[0:3:2]
    assert float(after) > float(before)
    assert re.search(r"^outcome: delta reached rho=0\.1 at step \d+ of 10(?: \(late\))?; the network (now|does not) "
                     r"give", completed.stdout, flags=re.M), completed.stdout
    assert Image.open(out).size == (3 * 32 * 4, 32 * 4)


@pytest.mark.multiprocess
@pytest.mark.parametrize("arguments, message", [
    (["--target", "zebra"], "--target must be a class index in [0, 10) or one of airplane"),
    (["--target", "10"], "Received: '10'"),
    (["--target", "dog", "--model", "nothing"], "No model 'nothing' is served"),
])
def test_explain_over_http_names_a_bad_argument(tiny_server, tmp_path, arguments, message):
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    arguments = ["--model", "tiny", *arguments]
    completed = subprocess.run([sys.executable, str(EXAMPLES / "explain_over_http.py"), str(image), "--url",
                                tiny_server, *arguments], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2 and message in completed.stderr, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr


K8S = EXAMPLES / "k8s"


@pytest.mark.multiprocess
@pytest.mark.parametrize("job_file", ["train-job.yaml", "evaluate-job.yaml"])
def test_kubernetes_job_gives_every_worker_a_tf_config_naming_the_others(job_file):
    """The manifests are valid YAML, the Service's DNS names are the hosts TF_CONFIG
    lists, and the TF_CONFIG each pod builds from its completion index is right."""
    import yaml

    service = yaml.safe_load((K8S / "workers-service.yaml").read_text())
    volume = yaml.safe_load((K8S / "runs-volume.yaml").read_text())
    job = yaml.safe_load((K8S / job_file).read_text())
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    workers = int(env["WORKERS"])
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == workers
    assert env["JOB_NAME"] == job["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = service["spec"]["ports"][0]["port"]
    assert container["ports"][0]["containerPort"] == port
    script = container["args"][0]
    assert "--strategy multiworker" in script and "--out /runs/" in script
    assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == volume["metadata"]["name"]
    assert container["volumeMounts"][0]["mountPath"] == "/runs"

    snippet = re.search(r"python -c '([^']*)'", script).group(1)
    hosts = [f"{env['JOB_NAME']}-{i}.{service['metadata']['name']}:{port}" for i in range(workers)]
    for index in range(workers):
        out = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, check=True,
                             env={**env, "JOB_COMPLETION_INDEX": str(index)}).stdout
        assert json.loads(out) == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def test_grad_cam_onnx_explains_an_exported_pytorch_classifier(tmp_path):
    """The walkthrough of docs/export.md: a PyTorch classifier's ONNX file, exported, explained by Grad-CAM with
    ONNX Runtime alone; the example's answers are the graphs' own."""
    import onnxruntime as ort

    from keras_robust.export import export_onnx_classifier, read_card

    torch_dir = pathlib.Path(__file__).resolve().parent / "data" / "torch_classifiers"
    export_onnx_classifier(str(torch_dir / "mobilenet_v3.onnx"), str(tmp_path), name="net", layout="NCHW",
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), methods=("grad_cam",))
    model_dir = tmp_path / "net"
    size = read_card(str(model_dir))["input"]["shape"][1:3]
    pixels = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    out = tmp_path / "cam.png"

    completed = subprocess.run([sys.executable, str(EXAMPLES / "grad_cam_onnx.py"), str(model_dir),
                                str(tmp_path / "in.png"), "--target", "7", "--out", str(out)],
                               capture_output=True, text=True, timeout=300)

    assert completed.returncode == 0, completed.stderr[-2000:]
    image = (pixels.astype(np.float32) / 255.0)[None]
    probabilities = ort.InferenceSession(str(model_dir / "net-1-predict.onnx")).run(["probabilities"],
                                                                                     {"images": image})[0][0]
    heat = ort.InferenceSession(str(model_dir / "net-1-grad-cam.onnx")).run(
        ["attributions"], {"images": image, "targets": np.array([7], np.int32)})[0][0]
    row, column = np.unravel_index(np.argmax(heat), heat.shape)
    assert f"prediction: {np.argmax(probabilities)} (p = {probabilities.max():.3f})" in completed.stdout
    assert f"Grad-CAM toward 7: hottest at row {row}, column {column} of {size[0]}×{size[1]}" in completed.stdout
    assert Image.open(out).size == (2 * size[1] * 4, size[0] * 4)


def test_grad_cam_onnx_says_when_the_export_has_no_grad_cam(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "model_card.json").write_text(json.dumps({"files": {"onnx_predict": "p.onnx"}}))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    completed = subprocess.run([sys.executable, str(EXAMPLES / "grad_cam_onnx.py"), str(tmp_path / "net"),
                                str(tmp_path / "in.png")], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2 and "has no Grad-CAM graph" in completed.stderr
    assert "Traceback" not in completed.stderr
