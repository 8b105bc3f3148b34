"""What is known of each shipped network before it is loaded: source, recipe, architecture.

Imports no TensorFlow, so the command line lists the networks without it."""

import os

import numpy as np

from keras_robust.common.defaults import CIFAR10_MEAN, CIFAR10_STD

FILES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
PROVENANCE = {
    "authors": "Walt Woods, Jack Chen, Christof Teuscher",
    "paper": "Adversarial explanations for understanding image classification decisions and "
    "improved neural network robustness, Nature Machine Intelligence 1, 508-516 (2019), "
    "arXiv:1906.02896",
    "repository": "https://github.com/wwoods/adversarial-explanations-cifar",
    "commit": "ce19735",
    "licence": "MIT",
    "copyright": "Copyright (c) 2019 Walt Woods",
    "licence_file": "LICENSE",
    "note": "The authors: these networks correspond with, but are not the same as, the "
    "paper's N1-N4. Converted from the PyTorch state_dict by "
    "`python -m keras_robust.models.zoo.convert`.",
}
# The reference recipe every network was trained with (docs/method.md, "Training").
BASE_RECIPE = {
    "optimizer": "SGD, lr 0.1, momentum 0.9, coupled weight decay 1e-4 on every parameter",
    "batch_size": 128,
    "epochs": 200,
    "lr_drops": "divide by 10 at epochs 170 and 195",
    "augmentation": "pad 4 pixels (edge replication), random 32x32 crop, random horizontal flip",
    "data": "CIFAR-10 training split (lossless)",
    "psi_initial": 220.0,
    "psi_rate": 0.02,
}
# The reference README's table: lossless CIFAR-10, ARA on 1,000 test images.
PUBLISHED = {
    "standard": (0.0075, None, 0.9384, 0.0013, 0.0015),
    "adv-train": (0.5313, None, 0.8643, 0.0100, 0.0157),
    "all": (1.4799, 14240, 0.679, 0.0188, 0.0414),
    "robust": (1.4799, 33778, 0.6758, 0.0142, 0.0395),
}


def _entry(key, paper_name, description, robust, adversarial=None):
    loss, psi, accuracy, attack_ara, btr_ara = PUBLISHED[key]
    recipe = dict(
        BASE_RECIPE,
        robust_additions=robust,
        activation="half_huber_relu" if robust else "relu",
        adversarial_training=adversarial,
    )
    return {
        "paper_name": paper_name,
        "description": description,
        "source_key": key,
        "source_file": f"resnet44-{key}.npz",
        "robust_additions": robust,
        "adversarial_training": adversarial,
        "class_names": list(CIFAR10_CLASS_NAMES),
        "input": {"shape": [32, 32, 3], "range": [0.0, 1.0], "layout": "NHWC, RGB"},
        "architecture": {
            "builder": "keras_robust.resnet",
            "depth": 44,
            "num_classes": 10,
            "activation": recipe["activation"],
            "mean": list(CIFAR10_MEAN),
            "std": list(CIFAR10_STD),
        },
        "recipe": recipe,
        "provenance": PROVENANCE,
        "published": {
            "data": "lossless CIFAR-10 test split; ARA on 1,000 test images (seed-1776 permutation)",
            "final_training_loss": loss,
            "final_psi": psi,
            "test_accuracy": accuracy,
            "attack_ara": attack_ara,
            "btr_ara": btr_ara,
        },
    }


CATALOG = {
    "resnet44-cifar10-standard": _entry(
        "standard", "N1", "standard training (ReLU)", robust=False
    ),
    "resnet44-cifar10-adv-train": _entry(
        "adv-train", "N2", "adversarial training, bounded attack rho 0.01 (ReLU)", robust=False,
        adversarial={"mode": "bounded", "rho": 0.01, "steps": 7},
    ),
    "resnet44-cifar10-all": _entry(
        "all", "N3", "robust additions + adversarial training, L2,min attack rho 0.1 (half-Huber ReLU)",
        robust=True, adversarial={"mode": "l2min", "rho": 0.1, "steps": 7, "half_and_half": True},
    ),
    "resnet44-cifar10-robust": _entry(
        "robust", "N4", "robust additions: Lipschitz regulariser, adaptive psi, half-Huber ReLU",
        robust=True,
    ),
}

# The demo's networks: the robust N3 leads, the standard N1 is its contrast.
DEMO_MODEL = "resnet44-cifar10-all"
STANDARD_MODEL = "resnet44-cifar10-standard"


def build_network(name):
    """An untrained `resnet` with the architecture of the shipped network `name`."""
    from keras_robust.models.cifar_resnet import resnet

    architecture = CATALOG[name]["architecture"]
    return resnet(
        depth=architecture["depth"],
        num_classes=architecture["num_classes"],
        activation=architecture["activation"],
        mean=tuple(architecture["mean"]),
        std=tuple(architecture["std"]),
        name=name,
    )


def weights_path(name, files_dir=FILES_DIR):
    return os.path.join(files_dir, f"{name}.weights.npz")


def weight_arrays(model):
    """`{"layer/weight": array}` of every weight of `model`, the shipped files' keys.

    A compressed `.npz` keyed by layer and weight name keeps the four
    networks within 11 MB (a `.weights.h5` is 3.1 MB each, uncompressed) and
    readable with NumPy alone.
    """
    return {f"{layer.name}/{weight.name}": weight for layer in model.layers for weight in layer.weights}


def load_weights(model, path):
    """Assigns the arrays of a file written from `weight_arrays` to `model`."""
    weights = weight_arrays(model)
    with np.load(path) as archive:
        missing, extra = sorted(set(weights) - set(archive.files)), sorted(set(archive.files) - set(weights))
        if missing or extra:
            raise ValueError(f"{path} does not fit {model.name}: missing {missing[:3]}, unexpected {extra[:3]}")
        for key, weight in weights.items():
            weight.assign(archive[key])
    return model


def card_path(name, files_dir=FILES_DIR):
    return os.path.join(files_dir, f"{name}.json")
