"""Project-wide rules: one-way layers in two wings, no gradio under ensemble/, cheap imports.

Every module of ``ensemble/`` and ``ui/`` (and ``app.py``) belongs to one numbered layer; a module may
import its own layer and the ones below, never one above. The offline jobs (corpus building, training,
evaluation, database and asset builds: ``ensemble/jobs/``) sit above the whole runtime, so the runtime
(what ``python app.py``, ``extend``, ``perform`` and ``report`` need) can never import a job; a second
test checks the same thing where it matters, in a fresh interpreter that loads the app and the engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each top-level module or package of ensemble/ (and ui/, app) and its layer. Lower layers never import
# higher ones; the runtime wing is 0-5, the offline jobs 6, entry points 7.
LAYER = {
    # 0 ground: pure functions over arrays, files and numbers
    "errors": 0, "files": 0, "music": 0, "config": 0, "audio": 0, "dsp": 0, "colour": 0, "features": 0, "beats": 0,
    # 1 models: decoders, arranger (+ its input features), checkpoint files
    "models": 1,
    # 2 analysis: clip analysis, its cache, scores, seams
    "metrics": 2,
    # 3 pipeline: performer, retrieval, the engine and one request, the ratings log and statistics
    "perform": 3, "rag": 3, "rag_index": 3, "rag_bound": 3, "engine": 3, "extend": 3, "conform": 3, "timbre": 3,
    "outputs": 3, "ratings": 3,
    # 4 figures: every matplotlib drawing of the runtime
    "figures": 4,
    # 5 listening: rounds, blind order, levels, the round store (no gradio)
    "listening": 5, "study": 5,
    # 6 offline jobs: never imported by the runtime
    "jobs": 6,
    # 7 entry points: argparse front, the Gradio page and app
    "cli": 7, "__main__": 7, "__init__": 7, "ui": 7, "app": 7,
}
RUNTIME_MAX = 5
JOBS = LAYER["jobs"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def project_files() -> list[Path]:
    return sorted([*(ROOT / "ensemble").rglob("*.py"), *(ROOT / "ui").rglob("*.py"), ROOT / "app.py"])


def layer_of(path: Path) -> int:
    """The layer of a project file: ``ui/*`` and ``app.py`` are entry points; else by its top-level name."""
    rel = path.relative_to(ROOT).parts
    if rel[0] in ("ui", "app.py"):
        return LAYER[rel[0].removesuffix(".py")]
    return LAYER[rel[1].removesuffix(".py")]


def layer_of_module(name: str) -> int | None:
    parts = name.split(".")
    if parts[0] == "ensemble":
        return LAYER[parts[1]] if len(parts) > 1 else None  # bare ``import ensemble``: the package
    if parts[0] in ("ui", "app"):
        return LAYER[parts[0]]
    return None  # not ours


def test_every_file_has_a_layer():
    missing = []
    for path in project_files():
        try:
            layer_of(path)
        except KeyError:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"files without a layer in LAYER: {missing}"


def test_layers_import_one_way():
    wrong = []
    for path in project_files():
        own = layer_of(path)
        for mod in imported_modules(path):
            other = layer_of_module(mod)
            if other is not None and other > own:
                wrong.append(f"{path.relative_to(ROOT)} (layer {own}) imports {mod} (layer {other})")
    assert not wrong, "\n".join(wrong)


def test_the_runtime_never_imports_a_job():
    wrong = []
    for path in project_files():
        if layer_of(path) > RUNTIME_MAX:
            continue
        for mod in imported_modules(path):
            if layer_of_module(mod) == JOBS:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_the_layer_test_sees_a_violation(tmp_path):
    """The check above can fail: a runtime module that imports a job is reported."""
    fake = tmp_path / "ensemble" / "rag.py"
    fake.parent.mkdir()
    fake.write_text("from ensemble.jobs.training import train_decoder\n")
    mods = imported_modules(fake)
    assert any(layer_of_module(m) == JOBS for m in mods) and LAYER["rag"] <= RUNTIME_MAX


def test_nothing_under_ensemble_imports_gradio():
    for path in (ROOT / "ensemble").rglob("*.py"):
        mods = imported_modules(path)
        assert not any(m == "gradio" or m.startswith("gradio.") for m in mods), path


def test_files_module_is_standard_library_only():
    """The ground floor's file helpers import nothing but the standard library."""
    mods = imported_modules(ROOT / "ensemble" / "files.py")
    assert all(m.split(".")[0] in sys.stdlib_module_names or m == "__future__" for m in mods), mods


def test_core_imports_without_gradio():
    code = ("import sys, ensemble.audio, ensemble.dsp, ensemble.features; "
            "assert 'gradio' not in sys.modules, 'gradio was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_runtime_entry_points_load_no_jobs_module():
    """``import app``, loading the engine, building the page and the CLI parser load no offline job."""
    code = (
        "import os, sys\n"
        "os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'\n"
        "import app\n"
        "from ensemble.engine import Engine, EngineConfig\n"
        "from ensemble.cli import build_parser\n"
        "from ensemble.listening.store import RoundStore\n"
        "engine = Engine.load(EngineConfig())\n"
        "store = RoundStore()\n"
        "try:\n"
        "    app.build_demo(engine, store=store)\n"
        "finally:\n"
        "    store.close()\n"
        "build_parser()\n"
        "jobs = sorted(m for m in sys.modules if m == 'ensemble.jobs' or m.startswith('ensemble.jobs.'))\n"
        "assert not jobs, f'the runtime loaded offline jobs: {jobs}'\n"
        "assert 'ensemble.extend' in sys.modules and 'ensemble.listening.round' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


def test_scripts_and_benchmarks_run_as_modules_without_path_edits():
    """Every script and benchmark runs as ``python -m`` from a checkout, with no ``sys.path`` edits."""
    mods = [f"{p.parent.name}.{p.stem}" for folder in ("scripts", "benchmarks")
            for p in sorted((ROOT / folder).glob("*.py")) if p.stem != "__init__"]
    assert len(mods) >= 8
    for mod in mods:
        path = ROOT / Path(*mod.split(".")).with_suffix(".py")
        assert "sys.path" not in path.read_text(), f"{path} edits sys.path"
        done = subprocess.run([sys.executable, "-m", mod, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage" in done.stdout.lower(), (mod, done.stderr[-2000:])
