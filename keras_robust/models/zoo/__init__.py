"""The authors' four trained CIFAR-10 ResNet-44s, shipped with the package.

`pretrained(name)` builds `keras_robust.resnet(44)` and loads the weights
converted from the reference code's PyTorch networks (MIT licence, kept in
`files/LICENSE`); nothing is downloaded. Each network carries a card
(`pretrained_card(name)`): provenance, licence, class names, training recipe,
ψ and its accumulator R at the end of training, the published figures and
the figures measured with this package.

Example:

>>> model = keras_robust.pretrained("resnet44-cifar10-all")
>>> logits = model(images)                       # images in [0, 1], (n, 32, 32, 3)
>>> keras_robust.pretrained_card("resnet44-cifar10-all")["psi"]
14240.0...
>>> robust = keras_robust.RobustModel(model)     # keeps the network's R: training continues at ψ 14,240
"""

import copy
import json
import os

from keras_robust.models.zoo.catalog import CATALOG, build_network, card_path, load_weights, weights_path


def pretrained_names():
    """The names `pretrained` accepts, N1 to N4 of the paper in order."""
    return list(CATALOG)


def pretrained_card(name):
    """The card of the shipped network `name`, as a new dict.

    Args:
        name: One of `pretrained_names()`.

    Returns:
        A dict with `name`, `paper_name`, `description`, `class_names`,
        `input`, `architecture`, `recipe`, `provenance`, `psi`,
        `psi_accumulator_R`, `published` and `measured` figures.
    """
    _check_name(name)
    path = card_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The card of {name} is missing from the installed package ({path}); "
            "reinstall keras-robust"
        )
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def pretrained(name):
    """Loads one of the authors' trained ResNet-44s, offline.

    Args:
        name: `"resnet44-cifar10-standard"` (N1), `"resnet44-cifar10-adv-train"`
            (N2), `"resnet44-cifar10-all"` (N3: robust additions and L2,min
            adversarial training) or `"resnet44-cifar10-robust"` (N4: robust
            additions).

    Returns:
        A functional `keras.Model` from [0, 1] RGB images `(n, 32, 32, 3)` to
        10 CIFAR-10 logits. Its `pretrained_card` attribute is the card;
        `RobustModel(model)` starts from the card's ψ accumulator R.
    """
    card = pretrained_card(name)
    path = weights_path(name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The network {name} is are missing from the installed package ({path}); "
            "reinstall keras-robust"
        )
    model = load_weights(build_network(name), path)
    model.pretrained_card = copy.deepcopy(card)
    return model


def _check_name(name):
    if name not in CATALOG:
        raise ValueError(
            f"Unknown pretrained network; known: {', '.join(CATALOG)}. Received: name={name!r}"
        )
