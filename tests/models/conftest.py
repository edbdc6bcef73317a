"""Fixtures shared by the schema tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.helpers import temporary_database


@pytest.fixture
def scratch_url(tmp_path: Path, database_url: str) -> Iterator[str]:
    """An empty database of this run's backend, so the session's own schema stays intact."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path}/scratch.db"
        return
    with temporary_database(database_url, f"{make_url(database_url).database}_scratch") as url:
        yield url
