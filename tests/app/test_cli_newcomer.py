"""The CLI as a newcomer meets it: run anywhere, it says which data it uses and never shows a
traceback; `--version` and `--help` are Tributary's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tributary.app import __version__

pytestmark = pytest.mark.slow

DATA_COMMANDS = [
    ["projects", "list"],
    ["keys", "list"],
    ["keys", "revoke", "key_x"],
    ["sources", "list"],
    ["customers", "list"],
    ["sweep"],
]


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBUTARY_", "DATABASE_", "REDIS_"))}
    clean["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-P", "-m", "tributary.app.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_data_commands_in_an_empty_directory_say_where_they_looked(tmp_path: Path) -> None:
    for args in DATA_COMMANDS:
        result = _run(args, tmp_path)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert f"no Tributary data in {tmp_path / 'var'}" in result.stderr, (args, result.stderr)
        assert "TRIBUTARY_HOME" in result.stderr
    assert list(tmp_path.iterdir()) == [], "a command without data created files"


def test_commands_that_need_no_data_work_anywhere(tmp_path: Path) -> None:
    result = _run(["connectors", "list"], tmp_path)
    assert result.returncode == 0 and "stripe" in result.stdout, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_or_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "tributary.db").touch()  # a data directory whose database was never migrated
    result = _run(["projects", "list"], tmp_path, TRIBUTARY_HOME=str(home))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is empty (no Tributary tables)" in result.stderr and "db upgrade" in result.stderr
    down = _run(
        ["keys", "list"],
        tmp_path,
        DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none",
        TRIBUTARY_SECRET_KEY="x",
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert down.stderr.startswith("Error: the database is unavailable"), down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_version_and_help_are_tributarys(tmp_path: Path) -> None:
    version = _run(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"Tributary {__version__}"
    shown = _run(["--help"], tmp_path).stdout
    for flask_only in ("--app", "-A", "--debug", "--env-file", "-e,"):
        assert flask_only not in shown, flask_only
    commands = [line.split()[0] for line in shown.split("Commands:")[1].splitlines() if line.startswith("  ")]
    assert {"serve", "projects", "keys", "sources", "customers", "connectors"} <= set(commands)
    assert not {"run", "shell", "routes"} & set(commands)
    assert list(tmp_path.iterdir()) == []
