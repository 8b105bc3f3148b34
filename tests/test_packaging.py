"""What a wheel installs: export/ and serving/ inside keras_robust, the shipped networks."""

import pathlib
import subprocess
import sys

import numpy as np


def test_export_and_serving_install_as_subpackages_only(tmp_path):
    # Run outside the repository, so only what is installed can be imported.
    script = (
        "import importlib.util, os\n"
        "import keras_robust.export, keras_robust.serving\n"
        "print(importlib.util.find_spec('export') is None, importlib.util.find_spec('serving') is None)\n"
        "static = os.path.join(os.path.dirname(keras_robust.serving.__file__), 'static')\n"
        "print(sorted(os.listdir(static)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    generic, pages = completed.stdout.strip().splitlines()[-2:]
    assert generic == "True True"
    assert "index.html" in pages


def test_pretrained_networks_load_from_an_installed_wheel_without_network(tmp_path, pretrained_dir,
                                                                          reference_images):
    repo = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(repo), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "wheel").glob("keras_robust-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    np.save(tmp_path / "images.npy", reference_images[:20])
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('networking disabled')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "import numpy as np, keras_robust\n"
        "print(keras_robust.__file__)\n"
        "model = keras_robust.pretrained('resnet44-cifar10-all')\n"
        "np.save('logits.npy', model.predict(np.load('images.npy'), verbose=0))\n"
        "print(keras_robust.pretrained_card('resnet44-cifar10-all')['paper_name'])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(site)},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    location, paper_name = completed.stdout.strip().splitlines()[-2:]
    assert location.startswith(str(site)) and paper_name == "N3"
    reference = np.load(pretrained_dir / "reference_logits_all.npy")[:20]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), reference, rtol=0, atol=5e-5)
