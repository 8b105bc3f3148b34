"""keras-robust: robust training and adversarial explanations for Keras.

Implements Woods, Chen & Teuscher, "Adversarial explanations for understanding
image classification decisions and improved neural network robustness"
(Nature Machine Intelligence, 2019).

The public names load on first use, so that the parts that need no
TensorFlow (the ONNX server, the command line's parsing) start without it.
The Keras layers and models register with Keras as soon as Keras is imported,
before or after this package, so `keras.saving.load_model` finds them.
"""

import importlib
import importlib.abc
import sys
import threading
import types

__version__ = "0.1.0"

# Public name -> the module holding it (a submodule itself when the names match).
_PUBLIC = {
    "HalfHuberReLU": "keras_robust.activations",
    "half_huber_relu": "keras_robust.activations",
    "attributions": "keras_robust.attributions",
    "data": "keras_robust.data",
    "AttackResult": "keras_robust.attacks",
    "AttackSanityError": "keras_robust.attacks",
    "attack": "keras_robust.attacks",
    "attack_details": "keras_robust.attacks",
    "AdversarialExplainer": "keras_robust.explain",
    "Explanation": "keras_robust.explain",
    "AraResult": "keras_robust.robustness",
    "ara": "keras_robust.robustness",
    "pretrained": "keras_robust.model_zoo",
    "pretrained_card": "keras_robust.model_zoo",
    "pretrained_names": "keras_robust.model_zoo",
    "resnet": "keras_robust.resnet",
    "resnet50": "keras_robust.resnet50",
    "RobustModel": "keras_robust.robust_model",
}
# The modules whose classes Keras must know to load a saved model.
_SERIALIZABLE = ("keras_robust.activations", "keras_robust.robust_model")

__all__ = sorted(_PUBLIC)


# The public names that are modules; the others are attributes of their module.
_MODULES = ("attributions", "data")


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'keras_robust' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """This package's module type: importing the submodule `resnet` must not
    replace the public function `resnet` (the import system sets a package
    attribute per imported submodule)."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and name in _PUBLIC and name not in _MODULES:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


class _KerasRegistration(importlib.abc.MetaPathFinder):
    """Registers the package's Keras classes as soon as Keras is imported.

    Keras resolves a saved layer's registered name only among registered
    objects (it imports modules by name for its own packages alone), so the
    registration cannot wait for the classes' first use. It happens when the
    outermost import of Keras or of a module of this package ends with Keras
    loaded: then no module of this package is half-imported, and importing
    the registering modules cannot meet an import cycle.
    """

    def __init__(self):
        self._depth = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" and not fullname.startswith("keras_robust."):
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *_: None)(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            self._depth.value = getattr(self._depth, "value", 0) + 1
            try:
                run_module(module)
            finally:
                self._depth.value -= 1
            if self._depth.value == 0 and "keras" in sys.modules:
                self.register()

        spec.loader.exec_module = exec_module
        return spec

    def register(self):
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for module in _SERIALIZABLE:
            importlib.import_module(module)


_registration = _KerasRegistration()
if "keras" in sys.modules:
    _registration.register()
else:
    sys.meta_path.insert(0, _registration)
