"""Public names that load on first use, and the Keras registration that cannot wait.

The package's public names, and those of `keras_robust.data` and
`keras_robust.export`, load their modules on first use, so the parts that
need no TensorFlow (the command line's checks, the ONNX server) start without
it. Keras, though, resolves a saved layer's registered name only among
registered objects (it imports modules by name for its own packages alone),
so the package's Keras classes register the moment Keras is imported. This
module imports nothing heavy.
"""

import importlib
import importlib.abc
import sys
import threading

# The modules whose classes Keras must know to load a saved model.
SERIALIZABLE_MODULES = ("keras_robust.method.activations", "keras_robust.method.robust_model",
                        "keras_robust.models.fused_batch_norm")


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


def lazy_attributes(package, public):
    """A package's `(__getattr__, __dir__)` loading each name of `public` on first use.

    Args:
        package: The package module's `globals()`.
        public: Public name -> the module holding it (for the names in
            a module named for the public name, like `keras_robust.data`,
            the module itself).
    """

    def __getattr__(name):
        if name not in public:
            raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")
        module = importlib.import_module(public[name])
        value = module if module.__name__.endswith("." + name) else getattr(module, name)
        package[name] = value
        return value

    def __dir__():
        return sorted(set(package) | set(public))

    return __getattr__, __dir__


def install():
    """Registers now if Keras is loaded, else as soon as it is."""
    registration = KerasRegistration()
    if "keras" in sys.modules:
        registration.register()
    else:
        sys.meta_path.insert(0, registration)
