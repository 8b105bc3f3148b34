"""TensorFlow's oneDNN kernels, on wherever TensorFlow has not been loaded yet.

TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with
AVX-512 VNNI, AVX-512 BF16, AVX-VNNI or AMX; elsewhere (an AVX2 server, say)
its convolutions fall back to Eigen's. The steps this package trains are
mostly convolutions at CIFAR sizes, where oneDNN's `brg_conv` kernels are the
faster ones on AVX2 too (`docs/performance.md`, "Against the authors' PyTorch
code", measures both), and they are what PyTorch runs on the same CPU. The
switch is an environment variable TensorFlow reads once, when it loads, so it
has to be set before anything imports TensorFlow; an explicit setting by the
user always wins.
"""

import os
import sys
import warnings

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn():
    """Asks for oneDNN kernels if TensorFlow is not loaded yet; warns once if it loaded without them.

    Leaves an explicit `TF_ENABLE_ONEDNN_OPTS` (either value) alone.
    """
    if VARIABLE in os.environ:
        return
    if "tensorflow" not in sys.modules:
        os.environ[VARIABLE] = "1"
        return
    if not onednn_enabled():
        warnings.warn(
            "TensorFlow was imported before keras_robust with its oneDNN kernels off (its default on this CPU), "
            f"so convolutions run on Eigen's slower kernels. Import keras_robust first, or set {VARIABLE}=1 "
            f"before importing TensorFlow; set {VARIABLE}=0 to keep Eigen's and silence this.",
            stacklevel=3,
        )


def onednn_enabled():
    """Whether the loaded TensorFlow runs its oneDNN kernels (it decides once, when it loads)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the switch: nothing to advise
        return True
    return _pywrap_util_port.IsMklEnabled()
