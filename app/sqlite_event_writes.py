"""The event store's shared write on SQLite (app/event_store.py), straight to the driver.

In `tributary serve` the web processes are bound by CPU, and around a shared write of a few rows
SQLAlchemy's own work (the transaction's events, a compiled-cache lookup and an execution context
per statement, the result's wrapping) cost more than SQLite's. This sends what `insert_rows` sends,
through the sqlite3 connection: the lookup of the rows' keys, then one `INSERT … ON CONFLICT DO
NOTHING` of the rows whose key stands, as a transaction of its own. Every value is bound as
SQLAlchemy binds it, by the processor of its column type on this dialect (`models.sql.bind_processor`),
so the stored row is the same.

SQLite has one write lock for every process (the other web processes and the worker wait for it),
so the write holds it as briefly as it can: the keys are read and the values bound before, and the
INSERT is one call into SQLite from its first write to its commit (`models.session.write_when_free`:
no statement between a BEGIN and a COMMIT that has to win the GIL back while the lock is held).
Without RETURNING, an INSERT that changed as many rows as it was given stored them all; only when
some dedup key was stored before are the stored ids read back (ours are new, so an id found is a
row this write stored). A key revoked between its lookup and the INSERT stores that request's
event, as a request answered just before the revocation would have.
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

# A row without a payload binds SQL NULL for it.
_ROW = f"({', '.join('?' for _ in ROW_COLUMNS)})"


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
        dedup key stored before)."""
        named = sorted({key for key in keys if key is not None})
        live = self._live_keys(driver, named) if named else set()
        kept = [row for row, key in zip(rows, keys, strict=True) if key is None or key in live]
        if not kept:
            return set()
        ids = [str(row["id"]) for row in kept]
        if write_when_free(driver, self._statement(len(kept)), self._parameters(kept)) == len(kept):
            return set(ids)
        return self._stored(driver, ids)

    @staticmethod
    def _live_keys(driver: sqlite3.Connection, named: list[str]) -> set[str]:
        marks = ", ".join("?" for _ in named)
        sql = f"SELECT id FROM api_keys WHERE revoked_at IS NULL AND id IN ({marks})"  # noqa: S608 - marks only
        return {found for (found,) in driver.execute(sql, named)}

    @staticmethod
    def _stored(driver: sqlite3.Connection, ids: list[str]) -> set[str]:
        marks = ", ".join("?" for _ in ids)
        sql = f"SELECT id FROM events WHERE id IN ({marks})"  # noqa: S608 - marks only
        return {str(found) for (found,) in driver.execute(sql, ids)}

    def _parameters(self, rows: list[dict[str, Any]]) -> list[Any]:
        params: list[Any] = []
        for row in rows:
            for name, bind in self._binds:
                value = row.get(name)
                params.append(value if value is None or bind is None else bind(value))
        return params

    def _statement(self, count: int) -> str:
        sql = self._inserts.get(count)
        if sql is None:
            # Built from the constants above only; one text per row count (at most MAX_ROWS).
            sql = self._inserts[count] = (
                f"INSERT INTO events ({', '.join(ROW_COLUMNS)}) VALUES "  # noqa: S608
                f"{', '.join(_ROW for _ in range(count))} ON CONFLICT DO NOTHING"
            )
        return sql
