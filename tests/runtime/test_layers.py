"""The layers, checked from the source: nothing below imports from above, and the web process does
not load the worker's graph to ingest."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package -> the first-party packages it must never import (at module level or inside a function).
FORBIDDEN = {
    "models": {"app", "workers", "connectors", "runtime", "migrations"},
    "connectors": {"app", "workers", "runtime"},
    "runtime": {"app", "workers", "connectors"},
    "workers": {"app"},
}


def _package(module: str) -> str:
    """`tributary.workers.jobs` -> `workers`: the layer a first-party import names."""
    return module.removeprefix("tributary.").split(".")[0]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(_package(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(_package(node.module))
    return names


def test_no_package_imports_from_a_layer_above_it() -> None:
    upward = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            upward += [f"{relative} -> {name}" for name in sorted(_imported(path) & forbidden)]
    assert upward == []


def test_the_web_app_loads_no_worker_module_at_import(tmp_path: Path) -> None:
    # A fresh interpreter: this test process has long imported the workers.
    code = (
        "import sys, tributary.app.wsgi;"
        "print(sorted(m for m in sys.modules if m.startswith('tributary.workers')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "TRIBUTARY_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "[]"
