"""The package's folders are layers: each imports only from the folders before it (README, Layout)."""

import ast
import pathlib

from tests.helpers import REPO_ROOT

# Lowest first, as the README's Layout table lists them.
LAYERS = ("common", "data", "method", "models", "explanations", "evaluation", "reporting", "training",
          "export", "serving", "cli")
FOLDERS = {layer: REPO_ROOT / ("keras_robust" if layer not in ("export", "serving") else "") / layer
           for layer in LAYERS}
LIGHT_ROOT = {"__version__", "lazy_loading"}  # the package's own module-free names


def imports_of(path):
    """Every `keras_robust` module or name `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("keras_robust.")}


def layer_of(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for rank, layer in enumerate(LAYERS):
        allowed = set(LAYERS[: rank + 1])
        for path in sorted(FOLDERS[layer].rglob("*.py")):
            for name in sorted(imports_of(path)):
                target = layer_of(name)
                if target is None and name.split(".")[1] not in LIGHT_ROOT:
                    wrong.append(f"{path.relative_to(REPO_ROOT)} imports {name}, outside every layer")
                elif target is not None and target not in allowed:
                    wrong.append(f"{path.relative_to(REPO_ROOT)} ({layer}) imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_every_module_of_the_package_is_in_a_layer():
    loose = sorted(path.name for path in (REPO_ROOT / "keras_robust").glob("*.py"))
    assert loose == ["__init__.py", "lazy_loading.py"]
    folders = {path.name for path in (REPO_ROOT / "keras_robust").iterdir()
               if path.is_dir() and not path.name.startswith("__")}
    assert folders == set(LAYERS) - {"export", "serving"}
    assert all(isinstance(folder, pathlib.Path) and folder.is_dir() for folder in FOLDERS.values())


def test_the_readme_layout_lists_the_layers_in_order():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("`")[1] for line in layout.splitlines() if line.startswith("| `")]
    listed = [row.strip("/").split("/")[-1] for row in rows if row.strip("/").split("/")[-1] in LAYERS]
    assert listed == list(LAYERS)
    assert all((REPO_ROOT / row).exists() for row in rows), rows
