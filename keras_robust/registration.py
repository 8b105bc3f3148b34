"""Registering the package's Keras classes the moment Keras is imported.

Keras resolves a saved layer's registered name only among registered objects
(it imports modules by name for its own packages alone), so registration
cannot wait for the classes' first use, and the package's public names load
lazily (see `keras_robust/__init__.py`). This module imports nothing heavy.
"""

import importlib
import importlib.abc
import sys
import threading

# The modules whose classes Keras must know to load a saved model.
SERIALIZABLE_MODULES = ("keras_robust.method.activations", "keras_robust.method.robust_model")


class KerasRegistration(importlib.abc.MetaPathFinder):
    """Imports `SERIALIZABLE_MODULES` once Keras is loaded.

    It happens when the outermost import of Keras or of a module of this
    package ends with Keras loaded: then no module of this package is
    half-imported, and importing the registering modules cannot meet an
    import cycle.
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
        for module in SERIALIZABLE_MODULES:
            importlib.import_module(module)


def install():
    """Registers now if Keras is loaded, else as soon as it is."""
    registration = KerasRegistration()
    if "keras" in sys.modules:
        registration.register()
    else:
        sys.meta_path.insert(0, registration)
