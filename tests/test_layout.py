"""Project-wide rules: one-way layers, no gradio under ensemble/, cheap side-effect-free imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lower layers must not import higher ones
LAYER = {"errors": 0, "audio": 1, "dsp": 1, "features": 1, "models": 2,
         "perform": 3, "rag": 3, "extend": 3, "metrics": 3, "ratings": 3, "corpus": 3, "training": 3,
         "cli": 4, "__main__": 4}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_under_ensemble_imports_gradio():
    for path in (ROOT / "ensemble").rglob("*.py"):
        mods = imported_modules(path)
        assert not any(m == "gradio" or m.startswith("gradio.") for m in mods), path


def test_layers_import_one_way():
    for path in (ROOT / "ensemble").rglob("*.py"):
        rel = path.relative_to(ROOT / "ensemble").parts
        own = LAYER.get(rel[0].removesuffix(".py"))
        if own is None:
            continue
        for mod in imported_modules(path):
            parts = mod.split(".")
            if parts[0] != "ensemble" or len(parts) < 2:
                continue
            other = LAYER.get(parts[1])
            assert other is None or other <= own, f"{path} (layer {own}) imports {mod} (layer {other})"


def test_core_imports_without_gradio():
    code = ("import sys, ensemble.audio, ensemble.dsp, ensemble.features; "
            "assert 'gradio' not in sys.modules, 'gradio was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
