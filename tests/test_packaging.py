"""The installed distribution is one top-level package, `tributary`: nothing of it may land in
site-packages as `app`, `models` or `workers`, where it would collide with another distribution's
modules of those common names. The source tree keeps its fixed top-level folders; `tributary/`
links them, and every import goes through `tributary.` so that a module is never loaded twice
under two names (two `tributary.models.base` would mean two SQLAlchemy metadata)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("app", "connectors", "workers", "models", "migrations", "runtime")
SOURCES = (*FOLDERS, "tests", "bench", "sdk/python/tests")


def _python_files() -> list[Path]:
    files: list[Path] = []
    for folder in SOURCES:
        files += [p for p in (ROOT / folder).rglob("*.py") if "node_modules" not in p.parts]
    return files


def test_every_folder_is_linked_into_the_namespace() -> None:
    for folder in FOLDERS:
        link = ROOT / "tributary" / folder
        assert link.is_symlink(), f"tributary/{folder} must link ../{folder}"
        assert link.resolve() == (ROOT / folder).resolve()


def test_no_module_imports_a_top_level_folder_by_its_bare_name() -> None:
    offenders: list[str] = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in FOLDERS
            ]
    assert not offenders, "import through tributary.:\n" + "\n".join(offenders)


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    source = tmp_path / "src"
    # Only what the build reads: a copy keeps build/ and *.egg-info out of the checkout.
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "tributary", *FOLDERS):
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "node_modules"),
            )
        elif origin.exists():
            shutil.copy2(origin, source / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("tributary-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        tops = {name.split("/")[0] for name in names}
        assert {top for top in tops if not top.endswith(".dist-info")} == {"tributary"}
        # data files ride along: the dashboard's templates and vendored scripts, alembic's template
        assert "tributary/app/dashboard/templates/base.html" in names
        assert "tributary/migrations/script.py.mako" in names
        assert any(name.startswith("tributary/migrations/versions/0001_") for name in names)
        site = tmp_path / "site"
        archive.extractall(site)
    # The installed package imports and runs from outside the source tree.
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = (
        "import importlib.util, tributary.app.wsgi, tributary.runtime.migrate as m;"
        "print(m.__file__);"
        "print([n for n in ('app', 'models', 'workers', 'connectors') if importlib.util.find_spec(n)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()[-2:]
    assert first.startswith(str(site))
    assert second == "[]"
