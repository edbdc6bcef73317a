"""A process keeps its PostgreSQL connections across a burst (models/session.py POOL_SIZE): ten
requests at once reuse ten connections afterwards instead of opening new ones."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from sqlalchemy import text

from tributary.models.session import Database

# What a web process may run at once against the database besides group commit's own connection.
BURST = 10


@pytest.fixture
def db(database_url: str) -> Database:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no connections to keep")
    return Database(database_url)


def _backend_pids(db: Database, at_once: int) -> set[int]:
    """The server process behind each of `at_once` connections checked out together."""
    with ExitStack() as stack:
        conns = [stack.enter_context(db.engine.connect()) for _ in range(at_once)]
        return {int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()) for conn in conns}


def test_a_burst_of_ten_reuses_its_connections(db: Database) -> None:
    try:
        first = _backend_pids(db, BURST)
        again = _backend_pids(db, BURST)
    finally:
        db.engine.dispose()
    assert len(first) == BURST
    # The same server processes: nothing was closed on return and opened again.
    assert again == first
