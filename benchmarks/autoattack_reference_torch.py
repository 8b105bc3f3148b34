"""The reference side of `benchmarks/autoattack_reference.py`: the PyTorch original AutoAttack
(fra31/auto-attack, standard version) on the authors' PyTorch ResNet-44 with the arrays of
../shared/pretrained, on the images our side chose.

Runs only in the torch virtual environment of ../shared/anchors/README.md, with the original on the
path (`pip install git+https://github.com/fra31/auto-attack`, or a checkout in AUTOATTACK):

    AUTOATTACK=<checkout> $TORCH_VENV/bin/python autoattack_reference_torch.py NETWORK IMAGES.npz OUT.json NORM EPS STATE

NETWORK is a reference name (standard, adv-train, robust, all); IMAGES.npz holds `images` (n, 32, 32,
3) in [0, 1] and `labels`. Writes `robust` (per image), `clean_correct` and `seconds` as JSON. STATE is the
original's own evaluation state (a JSON file): a rerun continues after the last attack it finished.
"""

import json
import os
import pathlib
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")
sys.path.insert(0, os.path.join(SHARED, "anchors", "reference"))
if os.environ.get("AUTOATTACK"):
    sys.path.insert(0, os.environ["AUTOATTACK"])
os.environ.setdefault("CIFAR10_PATH", "/nonexistent")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import main as reference  # noqa: E402
import model as reference_model  # noqa: E402
from autoattack import AutoAttack  # noqa: E402
from autoattack.state import EvaluationState  # noqa: E402


def load(network):
    meta = json.load(open(os.path.join(SHARED, "pretrained", "meta.json")))[network]
    options = dict(robust_additions=meta["robust_additions"], adversarial_training=meta["adversarial_training"],
                   l2_min=meta["l2_min"], arch=reference.MODEL_ARCH, input_offset=reference.MODEL_INPUT_OFFSET)
    net = reference_model.Model(options)
    with np.load(os.path.join(SHARED, "pretrained", f"resnet44-{network}.npz")) as arrays:
        net.load_state_dict({key: torch.from_numpy(arrays[key]) for key in arrays.files})
    return net.eval()


def main(network, images_path, out_path, norm, eps, state_path):
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    with np.load(images_path) as saved:
        x = torch.from_numpy(np.ascontiguousarray(saved["images"].transpose(0, 3, 1, 2)))
        y = torch.from_numpy(saved["labels"].astype("int64"))
    net = load(network)
    attack = AutoAttack(net, norm=norm, eps=float(eps), version="standard", device="cpu", seed=0, verbose=False)
    start = time.perf_counter()
    attack.run_standard_evaluation(x, y, bs=250, state_path=pathlib.Path(state_path))
    seconds = time.perf_counter() - start
    # The state's flags, not a prediction of the returned images: after a resumed run those hold only
    # the current run's adversarial examples.
    robust = EvaluationState.from_disk(pathlib.Path(state_path)).robust_flags.tolist()
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).tolist()
    with open(out_path, "w") as file:
        json.dump({"robust": robust, "clean_correct": clean, "seconds": seconds, "torch": torch.__version__}, file)


if __name__ == "__main__":
    main(*sys.argv[1:7])
