"""`keras_robust.autoattack` against the PyTorch original's verdicts on a few test images
(`reference_outcomes.json`, written once by `make_reference_outcomes.py` with the original)."""

import json
import os

import numpy as np
import pytest

import keras_robust
from keras_robust.data import load_dataset

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_outcomes.json")


@pytest.mark.slow
def test_the_verdicts_match_the_pytorch_originals(cifar10_archive):
    reference = json.load(open(REFERENCE))
    images, labels = load_dataset(str(cifar10_archive), "test", batch_size=500).arrays()
    chosen = np.asarray(reference["indices"])
    np.testing.assert_array_equal(labels[chosen], reference["labels"])  # the same images as the original saw
    model = keras_robust.pretrained({"all": "resnet44-cifar10-all"}[reference["network"]])
    result = keras_robust.autoattack(model, images[chosen], labels[chosen], norm=reference["norm"],
                                     eps=reference["eps"], progress=False)
    np.testing.assert_array_equal(model.predict(images[chosen], verbose=0).argmax(axis=1) == labels[chosen],
                                  reference["clean_correct"])
    # Random starts differ (NumPy's generator against PyTorch's): at most one image of eight may fall otherwise.
    assert np.sum(result.robust != np.asarray(reference["robust"])) <= 1, (result.robust, reference["robust"])
