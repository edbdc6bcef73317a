"""The event store's shared write on SQLite (app/event_store.py), straight to the driver.

In `tributary serve` the web processes are bound by CPU, and around a shared write of a few rows
SQLAlchemy's own work (the transaction's events, a compiled-cache lookup and an execution context
per statement, the result's wrapping) cost more than SQLite's. This stores event rows through
the sqlite3 connection, in ONE statement that is its own transaction: `INSERT … SELECT … FROM
(VALUES …) WHERE <the row's key is not revoked> ON CONFLICT (account_id, dedup_key) DO NOTHING`,
each row with the key its request came with. Every value is bound as SQLAlchemy binds it, by the
processor of its column type on this dialect (`models.sql.bind_processor`), so the stored row is
the same.

SQLite has one write lock for every process (the other web processes and the worker wait for it),
so the write holds it as briefly as it can: the values are bound before, and the INSERT is one call
into SQLite from its first write to its commit (`models.session.write_when_free`). A lookup of the
keys, then the INSERT, between a BEGIN IMMEDIATE and a COMMIT, held the lock across statements that
each had to win the GIL back from the process's other threads. Without RETURNING, an INSERT that
changed as many rows as it was given stored them all; only when it stored fewer (a dedup key
stored before, a revoked key) are the stored ids read back: ours are new, so an id found is a row
this write stored.

`/v1/batch` and a webhook delivery of several events write the same way (`insert_rows`): their
rows are one statement too, all or none. Rows beyond what one statement may bind (SQLite's
variable limit, read from the connection: 32,766 in SQLite's default build, more in some) go in
several statements inside one BEGIN IMMEDIATE, still all or none.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Dialect, Table
from sqlalchemy.exc import DBAPIError

from tributary.app.event_rows import ROW_COLUMNS
from tributary.models import Event
from tributary.models.event import DEDUP_KEY
from tributary.models.session import SQLITE_BUSY_TIMEOUT_S, begin_immediate, write_when_free
from tributary.models.sql import bind_processor

__all__ = ["SqliteEventWrites"]

# A row's values, then the key to check (NULL for a webhook's row); a row without a payload binds
# SQL NULL for it. SQLite names a VALUES list's columns column1, column2, ...
_ROW = f"({', '.join('?' for _ in ROW_COLUMNS)}, ?)"
_VALUES = ", ".join(f"column{n}" for n in range(1, len(ROW_COLUMNS) + 1))
_KEY = f"column{len(ROW_COLUMNS) + 1}"
_PER_ROW = len(ROW_COLUMNS) + 1
# Takes the write lock and changes nothing: tried while waiting for it (`write_when_free`).
_PROBE = "INSERT INTO events SELECT * FROM events WHERE 0"


class SqliteEventWrites:
    """Writes of event rows on SQLite through the driver, values bound as `dialect` binds them."""

    def __init__(self, dialect: Dialect) -> None:
        table = Event.__table__
        assert isinstance(table, Table)
        self._binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, bind_processor(table.c[name].type, dialect)) for name in ROW_COLUMNS
        ]
        # One writer of the process at a time waits for SQLite's lock; the others wait here, for
        # free. The group commit's writes take turns already; a request stored alone after a
        # failed shared write does not. When every `/v1/batch` request wrote on its own, each
        # waiter polling SQLite bound all its values again at every try and kept a read snapshot
        # open nearly all the time: serve's web went from 0.47 to 1.14 CPUs with no more batches
        # stored, and the WAL, never free of readers long enough to start over, grew to 680 MB.
        self._turn = threading.Lock()

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> SqliteEventWrites:
        found = _writes.get(dialect)
        if found is None:
            found = _writes[dialect] = cls(dialect)
        return found

    def insert(
        self, driver: sqlite3.Connection, rows: Sequence[dict[str, Any]], keys: Sequence[str | None]
    ) -> set[str]:
        """Store the rows whose key (when given) is not revoked, all or none, on `driver` (a
        connection in autocommit, held by the caller); the ids of those stored (the others had
        their dedup key stored before, or their key is revoked)."""
        if driver.in_transaction:
            # Each write commits itself (or its BEGIN IMMEDIATE); inside a caller's transaction it
            # would commit that too.
            raise RuntimeError("event rows are written on a connection in autocommit")
        params: list[Any] = []
        for row, key in zip(rows, keys, strict=True):
            for name, bind in self._binds:
                value = row.get(name)
                params.append(value if value is None or bind is None else bind(value))
            params.append(key)
        ids = [str(row["id"]) for row in rows]
        most = _most_rows(driver)
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        if not self._turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
            locked = sqlite3.OperationalError("database is locked")
            raise DBAPIError.instance("INSERT INTO events", None, locked, sqlite3.Error)
        try:
            remaining = max(0.0, deadline - time.monotonic())
            if len(rows) <= most:
                changed = write_when_free(driver, _insert_sql(len(rows)), params, remaining, probe=_PROBE)
            else:
                changed = _insert_in_chunks(driver, params, most, remaining)
        finally:
            self._turn.release()
        if changed == len(rows):
            return set(ids)
        stored: set[str] = set()
        for start in range(0, len(ids), most):
            chunk = ids[start : start + most]
            sql = f"SELECT id FROM events WHERE id IN ({', '.join('?' for _ in chunk)})"  # noqa: S608
            stored.update(str(found) for (found,) in driver.execute(sql, chunk))
        return stored


_writes: weakref.WeakKeyDictionary[Dialect, SqliteEventWrites] = weakref.WeakKeyDictionary()


def _most_rows(driver: sqlite3.Connection) -> int:
    """The most rows one statement can bind on this connection."""
    return max(1, driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _PER_ROW)


def _insert_in_chunks(driver: sqlite3.Connection, params: list[Any], most: int, timeout: float) -> int:
    """More rows than one statement binds: statements of `most` rows in one transaction."""
    begin_immediate(driver, timeout)
    sql = ""
    try:
        changed = 0
        for start in range(0, len(params), most * _PER_ROW):
            chunk = params[start : start + most * _PER_ROW]
            sql = _insert_sql(len(chunk) // _PER_ROW)
            changed += driver.execute(sql, chunk).rowcount
        sql = "COMMIT"
        driver.execute(sql)
    except BaseException as exc:
        driver.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):  # as SQLAlchemy would have raised it
            raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
        raise
    return changed


@functools.lru_cache(maxsize=64)
def _insert_sql(count: int) -> str:
    """The INSERT of `count` rows. One text per row count: the group commit's writes have up to
    256 rows (`EventStore.MAX_ROWS`), a batch up to 500; the counts met most are kept."""
    # Built from the constants above only. The WHERE also tells SQLite that ON CONFLICT belongs to
    # the INSERT (its documented parsing ambiguity of an INSERT's SELECT with an upsert).
    return (
        f"INSERT INTO events ({', '.join(ROW_COLUMNS)}) SELECT {_VALUES} "  # noqa: S608
        f"FROM (VALUES {', '.join(_ROW for _ in range(count))}) "
        f"WHERE {_KEY} IS NULL OR EXISTS "
        f"(SELECT 1 FROM api_keys WHERE id = {_KEY} AND revoked_at IS NULL) "
        f"ON CONFLICT ({', '.join(DEDUP_KEY)}) DO NOTHING"
    )
