"""Waiting for SQLite's write lock (models/session.py `begin_immediate`, and `write_when_free` for
one statement that is its own transaction): a writer behind another process's transaction tries
again every `WRITE_LOCK_POLL_S` instead of SQLite's backoff to sleeps of 25-100 ms, gets the lock
once it is free, and still gives up after its timeout with the error SQLAlchemy raised before. These
run on a SQLite file of their own, whichever backend the suite uses."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tributary.models import session as session_module
from tributary.models.session import (
    SQLITE_BUSY_TIMEOUT_S,
    WRITE_LOCK_POLL_S,
    Database,
    begin_immediate,
    write_when_free,
)

HOLD_S = 0.15


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'lock.db'}")
    with database.write_connection() as conn:
        conn.execute(text("CREATE TABLE t (writer TEXT)"))
    yield database
    database.dispose()


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another writer of the same file, as a worker or another web process is."""
    conn = sqlite3.connect(tmp_path / "lock.db", isolation_level=None, check_same_thread=False)
    yield conn
    conn.close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits `begin_immediate` asks for (and still makes)."""
    asked: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(session_module, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return asked


def _hold_write_lock(conn: sqlite3.Connection, seconds: float) -> threading.Timer:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES ('other')")
    release = threading.Timer(seconds, lambda: conn.execute("COMMIT"))
    release.start()
    return release


def _busy_timeout_ms(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())


def test_a_writer_waits_for_the_lock_in_short_steps_and_then_writes(
    db: Database, other_process: sqlite3.Connection, sleeps: list[float]
) -> None:
    release = _hold_write_lock(other_process, HOLD_S)
    with db.write_connection() as conn:
        conn.execute(text("INSERT INTO t VALUES ('waiter')"))
    release.join()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT writer FROM t ORDER BY rowid")).scalars().all() == [
            "other",
            "waiter",
        ]
    # It waited (the lock was held for HOLD_S), in steps of WRITE_LOCK_POLL_S only.
    assert sleeps and set(sleeps) == {WRITE_LOCK_POLL_S}
    # Statements outside BEGIN IMMEDIATE keep SQLite's own wait.
    assert _busy_timeout_ms(db) == SQLITE_BUSY_TIMEOUT_S * 1000


def test_an_uncontended_begin_does_not_wait(db: Database, sleeps: list[float]) -> None:
    with db.write_connection() as conn:
        conn.execute(text("INSERT INTO t VALUES ('alone')"))
    assert sleeps == []


def test_past_its_timeout_it_gives_up_with_sqlalchemys_error(
    db: Database, other_process: sqlite3.Connection
) -> None:
    release = _hold_write_lock(other_process, 2.0)
    raw = sqlite3.connect(db.engine.url.database or "", isolation_level=None)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked") as caught:
            begin_immediate(raw, timeout=0.03)
        assert time.monotonic() - started < 1.5  # it gave up instead of waiting for the holder
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
        assert not raw.in_transaction
        assert raw.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_S * 1000,)
    finally:
        release.join()
        raw.close()


def test_an_error_other_than_busy_is_raised_at_once(db: Database, sleeps: list[float]) -> None:
    raw = sqlite3.connect(db.engine.url.database or "", isolation_level=None)
    try:
        raw.execute("BEGIN")
        with pytest.raises(OperationalError, match="within a transaction"):
            begin_immediate(raw)
        assert sleeps == []
    finally:
        raw.close()


@pytest.fixture
def raw(db: Database) -> Iterator[sqlite3.Connection]:
    """A connection of the database in autocommit, as the event store's held one is."""
    conn = sqlite3.connect(db.engine.url.database or "", isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    yield conn
    conn.close()


def _writers(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(text("SELECT writer FROM t ORDER BY rowid")).scalars())


def test_one_statement_waits_for_the_lock_in_short_steps_and_commits_itself(
    db: Database, raw: sqlite3.Connection, other_process: sqlite3.Connection, sleeps: list[float]
) -> None:
    release = _hold_write_lock(other_process, HOLD_S)
    changed = write_when_free(raw, "INSERT INTO t VALUES (?), (?)", ["waiter 1", "waiter 2"])
    release.join()
    assert changed == 2
    assert not raw.in_transaction  # committed by the statement itself
    assert _writers(db) == ["other", "waiter 1", "waiter 2"]
    assert sleeps and set(sleeps) == {WRITE_LOCK_POLL_S}
    assert raw.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_S * 1000,)


def test_a_probe_fills_the_wait_and_the_statement_is_tried_again_once_the_lock_is_free(
    db: Database, raw: sqlite3.Connection, other_process: sqlite3.Connection, sleeps: list[float]
) -> None:
    """A statement of many rows binds them all at every try: while the lock is held only the
    probe, which changes nothing, is tried."""
    sent: list[str] = []
    raw.set_trace_callback(sent.append)
    release = _hold_write_lock(other_process, HOLD_S)
    probe = "INSERT INTO t SELECT * FROM t WHERE 0"
    changed = write_when_free(raw, "INSERT INTO t VALUES (?), (?)", ["waiter 1", "waiter 2"], probe=probe)
    release.join()
    raw.set_trace_callback(None)
    assert changed == 2
    assert _writers(db) == ["other", "waiter 1", "waiter 2"]
    tries = [sql for sql in sent if not sql.startswith("PRAGMA")]
    statement = "INSERT INTO t VALUES ('waiter 1'), ('waiter 2')"
    # Refused once, then probes until the holder commits (HOLD_S is many polls), then written.
    assert tries[0] == statement and tries[-1] == statement
    assert tries[1:-1] and set(tries[1:-1]) == {probe}
    # A sleep after every refusal: the statement's and each probe's but the last.
    assert len(sleeps) == len(tries) - 2 and set(sleeps) == {WRITE_LOCK_POLL_S}


def test_one_statement_past_its_timeout_gives_up_having_written_nothing(
    db: Database, raw: sqlite3.Connection, other_process: sqlite3.Connection
) -> None:
    release = _hold_write_lock(other_process, 2.0)
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked") as caught:
            write_when_free(raw, "INSERT INTO t VALUES (?)", ["late"], timeout=0.03)
        assert time.monotonic() - started < 1.5
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
        assert not raw.in_transaction
        assert raw.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_S * 1000,)
    finally:
        release.join()
    assert _writers(db) == ["other"]


def test_one_statement_refused_for_another_reason_is_raised_at_once(
    raw: sqlite3.Connection, sleeps: list[float]
) -> None:
    with pytest.raises(OperationalError, match="no such table"):
        write_when_free(raw, "INSERT INTO missing VALUES (?)", [1])
    assert sleeps == []
    assert raw.execute("PRAGMA busy_timeout").fetchone() == (SQLITE_BUSY_TIMEOUT_S * 1000,)
