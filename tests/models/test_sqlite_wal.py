"""SQLite's WAL file gives back what a burst took (models/session.py `SQLITE_WAL_LIMIT_BYTES`): it is
cut back to the limit once SQLite starts writing it from its start again. Runs on a SQLite file
of its own, whichever backend the suite uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from tributary.models import session as session_module
from tributary.models.session import Database

LIMIT = 256 * 1024


def test_the_wal_is_cut_back_to_its_limit_after_a_burst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "SQLITE_WAL_LIMIT_BYTES", LIMIT)
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    wal = tmp_path / "wal.db-wal"
    try:
        with db.write_connection() as conn:
            conn.execute(text("CREATE TABLE t (b BLOB)"))
        # A burst: one transaction of 5 MB, past SQLite's automatic checkpoint (1,000 pages).
        with db.write_connection() as conn:
            for _ in range(500):
                conn.execute(text("INSERT INTO t VALUES (:b)"), {"b": os.urandom(10_000)})
        burst = wal.stat().st_size
        assert burst > 16 * LIMIT
        for n in range(2):  # the checkpoint after the burst let the next write start over
            with db.write_connection() as conn:
                conn.execute(text("INSERT INTO t VALUES (:b)"), {"b": n})
        assert wal.stat().st_size <= LIMIT
    finally:
        db.dispose()
