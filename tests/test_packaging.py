"""What a wheel installs: export/ and serving/ inside keras_robust, the shipped networks."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT

# What the distribution is built from; copied so that building leaves no build/ in the checkout.
SOURCES = ("setup.py", "pyproject.toml", "README.md", "keras_robust", "export", "serving")


def run_python(script, cwd, **env):
    """Runs `script` in a fresh interpreter in `cwd` (outside the repository); its stdout lines."""
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.strip().splitlines()


def build_and_install_wheel(tmp_path):
    """Builds the wheel from a copy of the sources and installs it alone into a folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO_ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "wheel").glob("keras_robust-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return site


@pytest.mark.multiprocess
def test_export_and_serving_install_as_subpackages_only(tmp_path):
    # Run outside the repository, so only what is installed can be imported.
    script = (
        "import importlib.util, os\n"
        "import keras_robust.export, keras_robust.serving\n"
        "print(importlib.util.find_spec('export') is None, importlib.util.find_spec('serving') is None)\n"
        "static = os.path.join(os.path.dirname(keras_robust.serving.__file__), 'static')\n"
        "print(sorted(os.listdir(static)))\n"
    )
    generic, pages = run_python(script, tmp_path)[-2:]
    assert generic == "True True"
    assert "index.html" in pages


@pytest.mark.slow
@pytest.mark.multiprocess
def test_pretrained_networks_load_from_an_installed_wheel_without_network(tmp_path, pretrained_dir,
                                                                          reference_images):
    site = build_and_install_wheel(tmp_path)
    np.save(tmp_path / "images.npy", reference_images[:20])
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('networking disabled')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "import numpy as np, keras_robust, keras_robust.cli\n"
        "print(keras_robust.cli.__file__.startswith(keras_robust.__file__.rsplit('keras_robust', 1)[0]))\n"
        "print(keras_robust.__file__)\n"
        "model = keras_robust.pretrained('resnet44-cifar10-all')\n"
        "np.save('logits.npy', model.predict(np.load('images.npy'), verbose=0))\n"
        "print(keras_robust.pretrained_card('resnet44-cifar10-all')['paper_name'])\n"
        "from keras_robust.export.autodiff import RULES\n"  # the export subpackages are in the wheel
        "print(len(RULES))\n"
        # Every serving folder, and V2's gRPC service, which reads its compiled protos at import.
        "from keras_robust.serving import app, plane, transport, tf_serving\n"
        "from keras_robust.serving.open_inference import grpc_service\n"
        "print(grpc_service.SERVICE)\n"
    )
    cli_beside, location, paper_name, rules, service = run_python(script, tmp_path, PYTHONPATH=str(site))[-5:]
    assert location.startswith(str(site)) and paper_name == "N3" and cli_beside == "True"
    assert int(rules) >= 50 and service == "inference.GRPCInferenceService"
    reference = np.load(pretrained_dir / "reference_logits_all.npy")[:20]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), reference, rtol=0, atol=5e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_importing_the_package_loads_no_tensorflow_and_keeps_the_public_names(tmp_path):
    script = (
        "import sys\n"
        "import keras_robust\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
        "import keras_robust.models.cifar_resnet\n"  # the submodule must not shadow the function of the same name
        "print(callable(keras_robust.resnet), callable(keras_robust.resnet50), keras_robust.data.__name__)\n"
        "print(sorted(set(keras_robust.__all__) - set(dir(keras_robust))))\n"
    )
    lines = run_python(script, tmp_path, PYTHONPATH=str(REPO_ROOT))
    assert lines[-3:] == ["False False", "True True keras_robust.data", "[]"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_saved_models_load_whichever_is_imported_first(tmp_path):
    """Keras finds the package's layers and RobustModel when Keras is imported before
    the package, after it, or by one of its modules, without touching a public name."""
    import keras_robust
    from tests.helpers import tiny_resnet

    path = str(tmp_path / "robust.keras")
    keras_robust.RobustModel(tiny_resnet()).save(path)
    load = f"model = keras.saving.load_model({path!r}, compile=False)\nprint(type(model).__name__)\n"
    orders = {
        "keras first": "import keras\nimport keras_robust\n",
        "package first": "import keras_robust\nimport keras\n",
        "by a module": "from keras_robust.method.attacks import attack\nimport keras\n",
    }
    for order, imports in orders.items():
        assert run_python(imports + load, tmp_path, PYTHONPATH=str(REPO_ROOT))[-1] == "RobustModel", order
