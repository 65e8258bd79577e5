"""The layering of docs/design.md, asserted without exceptions, and the torch-free packages.

Imports point one way: bundle.errors <- bundle <- {models, runtime} <- {export, calib, engine,
serve} <- {cli, bench}. A package may import its own modules and those of lower layers only,
lazily or not; packages of one layer never import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {
    "zipvlm.bundle.errors": 0,
    "zipvlm.bundle": 1,
    "zipvlm.models": 2,
    "zipvlm.runtime": 2,
    "zipvlm.export": 3,
    "zipvlm.calib": 3,
    "zipvlm.engine": 3,
    "zipvlm.serve": 3,
    "zipvlm.cli": 4,
    "zipvlm.bench": 4,
}
TORCH_FREE = ("bundle", "runtime", "calib", "engine", "serve", "cli")
HEAVY = ("torch", "transformers", "onnxscript")


def owner(module: str) -> str:
    """The most specific entry of LAYERS that `module` belongs to."""
    return max((name for name in LAYERS if module == name or module.startswith(name + ".")), key=len)


def package_modules(folder: str) -> list[tuple[str, Path]]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("zipvlm", *parts)).removesuffix(".__init__")
        found.append((name, path))
    return found


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


FOLDERS = sorted({name.split(".")[1] for name in LAYERS})
ALL_MODULES = [entry for folder in FOLDERS for entry in package_modules(folder)]


def test_every_package_folder_is_in_the_layer_table():
    folders = {p.parent.relative_to(ROOT).parts[0] for p in ROOT.glob("*/__init__.py")}
    assert {f"zipvlm.{folder}" for folder in folders} <= set(LAYERS)


@pytest.mark.parametrize(("module", "path"), ALL_MODULES, ids=[name for name, _ in ALL_MODULES])
def test_imports_point_down_the_layers(module, path):
    mine = owner(module)
    wrong = [
        name
        for name in imports(path)
        if name.startswith("zipvlm.") and owner(name) != mine and LAYERS[owner(name)] >= LAYERS[mine]
    ]
    assert wrong == [], f"{module} (layer {LAYERS[mine]}) imports {wrong}"


@pytest.mark.parametrize("folder", TORCH_FREE)
def test_torch_free_packages_never_import_torch(folder):
    found = [
        f"{module}: {name}"
        for module, path in package_modules(folder)
        for name in imports(path)
        if name.split(".")[0] in HEAVY
    ]
    assert found == []


def test_importing_every_torch_free_module_loads_no_torch():
    names = [
        name for folder in TORCH_FREE for name, _ in package_modules(folder) if not name.endswith("__main__")
    ]
    code = (
        f"import importlib, sys; [importlib.import_module(n) for n in {names!r}]; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
