"""The event store's shared write on SQLite (app/event_store.py), straight to the driver.

In `tributary serve` the web processes are bound by CPU, and around a shared write of a few rows
SQLAlchemy's own work (the transaction's events, a compiled-cache lookup and an execution context
per statement, the result's wrapping) cost more than SQLite's. This stores what `insert_rows`
stores, through the sqlite3 connection, in ONE statement that is its own transaction: `INSERT …
SELECT … FROM (VALUES …) WHERE <the row's key is not revoked> ON CONFLICT DO NOTHING`, each row
with the key its request came with. Every value is bound as SQLAlchemy binds it, by the processor
of its column type on this dialect (`models.sql.bind_processor`), so the stored row is the same.

SQLite has one write lock for every process (the other web processes and the worker wait for it),
so the write holds it as briefly as it can: the values are bound before, and the INSERT is one call
into SQLite from its first write to its commit (`models.session.write_when_free`). A lookup of the
keys, then the INSERT, between a BEGIN IMMEDIATE and a COMMIT, held the lock across statements that
each had to win the GIL back from the process's other threads. Without RETURNING, an INSERT that
changed as many rows as it was given stored them all; only when it stored fewer (a dedup key
stored before, a revoked key) are the stored ids read back: ours are new, so an id found is a row
this write stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table

from tributary.app.event_rows import ROW_COLUMNS
from tributary.models import Event
from tributary.models.session import Database, write_when_free
from tributary.models.sql import bind_processor

__all__ = ["SqliteEventWrites"]

# A row's values, then the key to check (NULL for a webhook's row); a row without a payload binds
# SQL NULL for it. SQLite names a VALUES list's columns column1, column2, ...
_ROW = f"({', '.join('?' for _ in ROW_COLUMNS)}, ?)"
_VALUES = ", ".join(f"column{n}" for n in range(1, len(ROW_COLUMNS) + 1))
_KEY = f"column{len(ROW_COLUMNS) + 1}"


class SqliteEventWrites:
    """Shared writes of event rows on one SQLite database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        table = Event.__table__
        assert isinstance(table, Table)
        dialect = db.engine.dialect
        self._binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, bind_processor(table.c[name].type, dialect)) for name in ROW_COLUMNS
        ]
        self._inserts: dict[int, str] = {}

    def insert(
        self, driver: sqlite3.Connection, rows: Sequence[dict[str, Any]], keys: Sequence[str | None]
    ) -> set[str]:
        """Store the rows whose key (when given) is not revoked, on `driver` (a connection of
        `db` in autocommit, held by the caller); the ids of those stored (the others had their
        dedup key stored before, or their key is revoked)."""
        params: list[Any] = []
        for row, key in zip(rows, keys, strict=True):
            for name, bind in self._binds:
                value = row.get(name)
                params.append(value if value is None or bind is None else bind(value))
            params.append(key)
        ids = [str(row["id"]) for row in rows]
        if write_when_free(driver, self._statement(len(rows)), params) == len(rows):
            return set(ids)
        marks = ", ".join("?" for _ in ids)
        sql = f"SELECT id FROM events WHERE id IN ({marks})"  # noqa: S608 - marks only
        return {str(found) for (found,) in driver.execute(sql, ids)}

    def _statement(self, count: int) -> str:
        sql = self._inserts.get(count)
        if sql is None:
            # Built from the constants above only; one text per row count (at most MAX_ROWS).
            # The WHERE also tells SQLite that ON CONFLICT belongs to the INSERT (its documented
            # parsing ambiguity of an INSERT's SELECT with an upsert).
            sql = self._inserts[count] = (
                f"INSERT INTO events ({', '.join(ROW_COLUMNS)}) SELECT {_VALUES} "  # noqa: S608
                f"FROM (VALUES {', '.join(_ROW for _ in range(count))}) "
                f"WHERE {_KEY} IS NULL OR EXISTS "
                f"(SELECT 1 FROM api_keys WHERE id = {_KEY} AND revoked_at IS NULL) "
                "ON CONFLICT DO NOTHING"
            )
        return sql
