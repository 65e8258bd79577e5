"""The runtime runs on the robot without PyTorch."""

import subprocess
import sys


def test_importing_the_runtime_does_not_import_torch():
    code = ("import sys, zipvlm.runtime, zipvlm.runtime.bundle, zipvlm.runtime.cli, "
            "zipvlm.runtime.preprocess, zipvlm.runtime.prompt; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_runtime_and_calib_import_neither_export_nor_models():
    """DESIGN.md: dependencies point one way; runtime owns the bundle format. Only the CLI's
    `export` and `demo` commands reach into zipvlm.export, lazily, on the workstation."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for path in sorted([*(root / "runtime").rglob("*.py"), *(root / "calib").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith(("zipvlm.export", "zipvlm.models")):
                    found.append(f"{path.relative_to(root)}: {name}")
    assert found == ["runtime/cli.py: zipvlm.export.pipeline", "runtime/cli.py: zipvlm.models.visionzip",
                     "runtime/cli.py: zipvlm.export.demo"]
