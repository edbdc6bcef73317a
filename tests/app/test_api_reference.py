"""docs/api.md is the API reference carried in the repository: it must match /openapi.json."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tributary.app.apidoc import REGENERATE, markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_docs_api_md_matches_the_app() -> None:
    assert DOC.read_text() == markdown(), f"docs/api.md is stale: regenerate it with `{REGENERATE}`"


def test_the_cli_prints_the_same_reference_anywhere(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIBUTARY_", "DATABASE_", "REDIS_"))}
    env["PYTHONPATH"] = str(DOC.parents[1])
    result = subprocess.run(
        [sys.executable, "-P", "-m", "tributary.app.cli", "openapi", "--markdown"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == DOC.read_text()
    assert list(tmp_path.iterdir()) == []
