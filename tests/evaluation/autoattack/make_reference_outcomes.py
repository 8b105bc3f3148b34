"""Writes `reference_outcomes.json`: the PyTorch original AutoAttack's verdicts on a few test images, which
`test_agreement.py` holds `keras_robust.autoattack` to.

Run once, from the repository root, with both environments (torch is never a dependency of this package):

    python tests/evaluation/autoattack/make_reference_outcomes.py $TORCH_VENV/bin/python <fra31/auto-attack checkout>
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
sys.path.insert(0, ROOT)

from keras_robust.data import load_dataset  # noqa: E402
from keras_robust.evaluation.accuracy_robustness import evaluation_indices  # noqa: E402

# The paper's N3 (reference "all") at L2 1.0 on the seed-1776 permutation's first images.
NETWORK, NORM, EPS, IMAGES = "all", "L2", 1.0, 8


def main(torch_python, autoattack):
    test = load_dataset(os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg.tar.gz"), "test", batch_size=500)
    images, labels = test.arrays()
    chosen = evaluation_indices(len(labels), IMAGES)
    with tempfile.TemporaryDirectory() as work:
        saved, out = os.path.join(work, "images.npz"), os.path.join(work, "out.json")
        np.savez(saved, images=images[chosen], labels=labels[chosen])
        subprocess.run([torch_python, os.path.join(ROOT, "benchmarks", "autoattack_reference_torch.py"), NETWORK,
                        saved, out, NORM, str(EPS)], check=True, env={**os.environ, "AUTOATTACK": autoattack})
        reference = json.load(open(out))
    record = {"network": NETWORK, "norm": NORM, "eps": EPS, "indices": chosen.tolist(), "labels": labels[chosen].tolist(),
              "robust": reference["robust"], "clean_correct": reference["clean_correct"], "torch": reference["torch"],
              "made_by": "python tests/evaluation/autoattack/make_reference_outcomes.py"}
    with open(os.path.join(HERE, "reference_outcomes.json"), "w") as file:
        json.dump(record, file, indent=1)
    print(record)


if __name__ == "__main__":
    main(*sys.argv[1:3])
