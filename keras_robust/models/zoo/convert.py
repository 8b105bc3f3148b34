"""Converts the authors' PyTorch ResNet-44s into this package's weight files.

The reference code's networks arrive as `.npz` files keyed by PyTorch
`state_dict` names (`pipe.S.B.pre.0.weight`, ...). This module maps every
tensor onto the layer of `keras_robust.resnet(44)` that plays the same role,
checks that nothing is left over on either side, and writes one compressed
weights file (`catalog.weight_arrays`) and one card per network. Rerun it from a folder of `.npz` files:

```
python -m keras_robust.models.zoo.convert ../shared/pretrained
```

The measured figures already in a card are kept, so rerunning the conversion
never throws away an evaluation.
"""

import argparse
import json
import math
import os

import numpy as np

from keras_robust.common.atomic import atomic_path
from keras_robust.models.zoo.catalog import (
    CATALOG,
    FILES_DIR,
    build_network,
    card_path,
    weight_arrays,
    weights_path,
)

BLOCKS_PER_STAGE = 7
# PyTorch BatchNorm tensors in the order Keras keeps them: gamma, beta, moving mean, moving variance.
BATCH_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def keras_to_torch_names(depth=44):
    """`{keras layer name: [state_dict keys of its weights, in Keras order]}`."""
    if depth != 2 + 6 * BLOCKS_PER_STAGE:
        raise ValueError(f"The authors' networks are ResNet-44s. Received: depth={depth}")
    names = {"stem_conv": ["pipe.0.weight"]}
    for stage in (1, 2, 3):
        for block in range(BLOCKS_PER_STAGE):
            torch_prefix, keras_prefix = f"pipe.{stage}.{block}", f"stage{stage}_block{block + 1}"
            names[f"{keras_prefix}_bn1"] = [f"{torch_prefix}.pre.0.{k}" for k in BATCH_NORM_KEYS]
            names[f"{keras_prefix}_conv1"] = [f"{torch_prefix}.main.0.weight"]
            names[f"{keras_prefix}_bn2"] = [f"{torch_prefix}.main.1.{k}" for k in BATCH_NORM_KEYS]
            names[f"{keras_prefix}_conv2"] = [f"{torch_prefix}.main.3.weight"]
            if stage > 1 and block == 0:
                names[f"{keras_prefix}_shortcut"] = [f"{torch_prefix}.shortcut.weight"]
    names["head_bn"] = [f"pipe.4.{k}" for k in BATCH_NORM_KEYS]
    names["logits"] = ["pipe.7.weight", "pipe.7.bias"]
    return names


def torch_to_keras_array(array):
    """PyTorch layouts to Keras ones: conv (out, in, kh, kw) → (kh, kw, in, out); 1×1 head → dense."""
    if array.ndim == 4 and array.shape[2:] == (1, 1):
        return array[:, :, 0, 0].T
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    return array


def load_state_dict(path, robust):
    """The arrays of one `.npz` file, with the model-level checks of the conversion."""
    with np.load(path) as archive:
        state = {key: archive[key] for key in archive.files}
    deltas = {key: float(state.pop(key)) for key in list(state) if key.endswith(".d")}
    if robust and not deltas:
        raise ValueError(f"{path} holds no half-Huber δ buffers but the catalog says it is robust")
    if not robust and deltas:
        raise ValueError(f"{path} holds half-Huber δ buffers but the catalog says it uses ReLU")
    odd = {key: value for key, value in deltas.items() if value != 0.5}
    if odd:
        raise ValueError(f"{path}: the half-Huber δ must be 0.5 everywhere. Received: {odd}")
    return state


def convert(source_dir, name):
    """Builds the Keras network `name` from its `.npz` file in `source_dir`."""
    entry = CATALOG[name]
    state = load_state_dict(os.path.join(source_dir, entry["source_file"]), entry["robust_additions"])
    offset = state.pop("input_offset")
    expected = np.array([entry["architecture"]["mean"], entry["architecture"]["std"]], dtype="float32")
    if not np.array_equal(offset, expected):
        raise ValueError(f"{name}: input standardisation {offset.tolist()} differs from the catalog's")
    model = build_network(name)
    used = set()
    for layer_name, keys in keras_to_torch_names().items():
        layer = model.get_layer(layer_name)
        arrays = [torch_to_keras_array(state[key]) for key in keys]
        layer.set_weights(arrays)
        used.update(keys)
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"{name}: tensors not mapped onto any layer: {left}")
    return model


def base_card(name, source_dir):
    """The card's fixed part: provenance, licence, recipe, ψ, published figures."""
    entry = CATALOG[name]
    with open(os.path.join(source_dir, "meta.json"), encoding="utf-8") as file:
        meta = json.load(file)[entry["source_key"]]
    accumulator = meta["psi_accumulator_R"]
    psi = None if accumulator is None else entry["recipe"]["psi_initial"] * math.exp(
        entry["recipe"]["psi_rate"] * accumulator
    )
    card = {key: value for key, value in entry.items() if key not in ("source_key",)}
    card.update(
        {
            "name": name,
            "psi_accumulator_R": accumulator,
            "psi": psi,
            "params": meta["params"],
        }
    )
    return card


def write_network(name, source_dir, files_dir=FILES_DIR):
    """Converts one network and writes its weights and card atomically."""
    model = convert(source_dir, name)
    with atomic_path(weights_path(name, files_dir)) as path:
        np.savez_compressed(path, **{key: w.numpy() for key, w in weight_arrays(model).items()})
    card = base_card(name, source_dir)
    old_path = card_path(name, files_dir)
    if os.path.exists(old_path):
        with open(old_path, encoding="utf-8") as file:
            card["measured"] = json.load(file).get("measured", {})
    with atomic_path(old_path) as path, open(path, "w", encoding="utf-8") as file:
        json.dump(card, file, indent=1)
        file.write("\n")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source_dir", help="folder with the authors' networks as .npz and meta.json")
    parser.add_argument("--out", default=FILES_DIR, help="package data folder (default: the installed one)")
    args = parser.parse_args(argv)
    for name in CATALOG:
        write_network(name, args.source_dir, args.out)
        print(f"{name}: {weights_path(name, args.out)}")


if __name__ == "__main__":
    main()
