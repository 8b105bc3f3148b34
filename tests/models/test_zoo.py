"""The authors' four networks: port fidelity, cards, ψ accumulator, offline loading."""

import json
import math
import os
import socket

import keras
import numpy as np
import pytest

import keras_robust
from keras_robust.models.zoo import catalog, convert

NETWORKS = {
    "resnet44-cifar10-standard": "standard",
    "resnet44-cifar10-adv-train": "adv-train",
    "resnet44-cifar10-all": "all",
    "resnet44-cifar10-robust": "robust",
}
# The reference README's table (lossless CIFAR-10): accuracy, attack ARA, BTR ARA, final psi.
PUBLISHED = {
    "standard": (0.9384, 0.0013, 0.0015, None),
    "adv-train": (0.8643, 0.0100, 0.0157, None),
    "all": (0.679, 0.0188, 0.0414, 14240),
    "robust": (0.6758, 0.0142, 0.0395, 33778),
}


@pytest.fixture(scope="module")
def no_network(monkeypatch_module):
    def refuse(*args, **kwargs):
        raise OSError("networking is disabled in this test")

    monkeypatch_module.setattr(socket.socket, "connect", refuse)
    monkeypatch_module.setattr(socket, "create_connection", refuse)
    monkeypatch_module.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETWORKS))
def test_ported_logits_match_the_reference_code(name, reference_images, pretrained_dir, no_network):
    reference = np.load(pretrained_dir / f"reference_logits_{NETWORKS[name]}.npy")
    logits = keras_robust.pretrained(name).predict(reference_images, batch_size=100, verbose=0)
    np.testing.assert_allclose(logits, reference, rtol=0, atol=5e-5)
    assert np.array_equal(np.argmax(logits, 1), np.argmax(reference, 1))


def test_names_in_the_papers_order_and_unknown_names_list_them():
    assert keras_robust.pretrained_names() == list(NETWORKS)
    with pytest.raises(ValueError, match="known: resnet44-cifar10-standard, .*Received: name='n3'"):
        keras_robust.pretrained("n3")
    with pytest.raises(ValueError, match="resnet44-cifar10-robust"):
        keras_robust.pretrained_card("resnet44-cifar10")


@pytest.mark.parametrize("name", list(NETWORKS))
def test_card_carries_provenance_recipe_psi_and_figures(name, pretrained_dir):
    card = keras_robust.pretrained_card(name)
    key = NETWORKS[name]
    meta = json.loads((pretrained_dir / "meta.json").read_text())[key]
    assert card["provenance"]["licence"] == "MIT"
    assert "Walt Woods" in card["provenance"]["copyright"]
    assert card["class_names"][0] == "airplane" and card["class_names"][9] == "truck"
    assert card["recipe"]["robust_additions"] == meta["robust_additions"]
    assert bool(card["recipe"]["adversarial_training"]) == meta["adversarial_training"]
    assert card["psi_accumulator_R"] == meta["psi_accumulator_R"]
    accuracy, attack_ara, btr_ara, psi = PUBLISHED[key]
    published = card["published"]
    assert (published["test_accuracy"], published["attack_ara"], published["btr_ara"]) == (
        accuracy, attack_ara, btr_ara)
    if psi is None:
        assert card["psi"] is None
    else:
        # psi = 220 exp(0.02 R) reproduces the published final psi to its printed digits.
        assert card["psi"] == pytest.approx(220 * math.exp(0.02 * meta["psi_accumulator_R"]))
        assert card["psi"] == pytest.approx(psi, abs=1)
    assert card["architecture"]["activation"] == ("half_huber_relu" if meta["robust_additions"] else "relu")


def test_measured_figures_name_their_data_and_command():
    for name in NETWORKS:
        measured = keras_robust.pretrained_card(name)["measured"]
        assert "JPEG" in measured["data"] and measured["test_images"] == 10000
        assert 0 < measured["attack_ara"] <= measured["btr_ara"]
        assert measured["command"].startswith("python benchmarks/pretrained_figures.py")


def test_licence_travels_with_the_weights():
    licence = open(os.path.join(catalog.FILES_DIR, "LICENSE"), encoding="utf-8").read()
    assert "MIT License" in licence and "Copyright (c) 2019 Walt Woods" in licence
    assert "The above copyright notice and this permission notice shall be included" in licence


def test_shipped_files_stay_small():
    total = sum(os.path.getsize(catalog.weights_path(name)) for name in NETWORKS)
    assert total <= 12 * 2**20


@pytest.mark.slow
def test_robust_model_keeps_the_networks_psi_accumulator(tmp_path):
    card = keras_robust.pretrained_card("resnet44-cifar10-all")
    model = keras_robust.RobustModel(keras_robust.pretrained("resnet44-cifar10-all"), adversarial_training="l2min")
    assert float(model.psi_accumulator.numpy()) == pytest.approx(card["psi_accumulator_R"], rel=1e-6)
    assert model.psi == pytest.approx(card["psi"], rel=1e-5)
    model.save(tmp_path / "n3.keras")
    reloaded = keras.saving.load_model(tmp_path / "n3.keras")
    assert float(reloaded.psi_accumulator.numpy()) == pytest.approx(card["psi_accumulator_R"], rel=1e-6)
    standard = keras_robust.RobustModel(keras_robust.pretrained("resnet44-cifar10-standard"))
    assert float(standard.psi_accumulator.numpy()) == 0.0
    chosen = keras_robust.RobustModel(keras_robust.pretrained("resnet44-cifar10-robust"), initial_psi_accumulator=5.0)
    assert float(chosen.psi_accumulator.numpy()) == 5.0
    with pytest.raises(ValueError, match="initial_psi_accumulator"):
        keras_robust.RobustModel(keras_robust.resnet(depth=8), initial_psi_accumulator=-1.0)


def test_conversion_reproduces_the_shipped_weights(pretrained_dir, tmp_path):
    name = "resnet44-cifar10-robust"
    convert.write_network(name, str(pretrained_dir), str(tmp_path))
    with np.load(tmp_path / f"{name}.weights.npz") as fresh, np.load(catalog.weights_path(name)) as shipped:
        assert sorted(fresh.files) == sorted(shipped.files)
        for key in fresh.files:
            np.testing.assert_array_equal(fresh[key], shipped[key])
    card = json.loads((tmp_path / f"{name}.json").read_text())
    assert card["psi_accumulator_R"] == keras_robust.pretrained_card(name)["psi_accumulator_R"]


def test_conversion_maps_every_tensor_once(pretrained_dir):
    names = convert.keras_to_torch_names()
    keys = [key for keys in names.values() for key in keys]
    assert len(keys) == len(set(keys))
    with np.load(pretrained_dir / "resnet44-robust.npz") as state:
        weights = {k for k in state.files if not k.endswith(".d") and k != "input_offset"}
    assert set(keys) == weights


def test_conversion_refuses_a_wrong_network(pretrained_dir, tmp_path):
    with np.load(pretrained_dir / "resnet44-standard.npz") as state:
        arrays = dict(state)
    np.savez(tmp_path / "resnet44-all.npz", **arrays)
    with pytest.raises(ValueError, match="no half-Huber"):
        convert.convert(str(tmp_path), "resnet44-cifar10-all")


def test_torch_layouts_become_keras_layouts():
    conv = np.arange(2 * 3 * 3 * 3).reshape(2, 3, 3, 3)  # (out, in, kh, kw)
    converted = convert.torch_to_keras_array(conv)
    assert converted.shape == (3, 3, 3, 2) and converted[1, 2, 0, 1] == conv[1, 0, 1, 2]
    head = np.arange(10 * 4).reshape(10, 4, 1, 1)
    assert np.array_equal(convert.torch_to_keras_array(head), head[:, :, 0, 0].T)
