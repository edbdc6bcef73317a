"""The event store's shared write on SQLite (app/event_store.py), straight to the driver.

In `tributary serve` the web processes are bound by CPU, and around a shared write of a few rows
SQLAlchemy's own work (the transaction's events, a compiled-cache lookup and an execution context
per statement, the result's wrapping) cost more than SQLite's. This sends what `insert_rows` sends,
through the sqlite3 connection: in one BEGIN IMMEDIATE transaction, the lookup of the rows' keys,
then one `INSERT … ON CONFLICT DO NOTHING RETURNING id` of the rows whose key stands. Every value is
bound as SQLAlchemy binds it, by the processor of its column type on this dialect
(`models.sql.bind_processor`), so the stored row is the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table

from tributary.app.event_rows import ROW_COLUMNS
from tributary.models import Event
from tributary.models.session import Database, begin_immediate
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
        begin_immediate(driver)
        try:
            named = sorted({key for key in keys if key is not None})
            live = self._live_keys(driver, named) if named else set()
            kept = [row for row, key in zip(rows, keys, strict=True) if key is None or key in live]
            stored = self._insert(driver, kept) if kept else set()
            driver.execute("COMMIT")
        except BaseException:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        return stored

    @staticmethod
    def _live_keys(driver: sqlite3.Connection, named: list[str]) -> set[str]:
        marks = ", ".join("?" for _ in named)
        sql = f"SELECT id FROM api_keys WHERE revoked_at IS NULL AND id IN ({marks})"  # noqa: S608 - marks only
        return {found for (found,) in driver.execute(sql, named)}

    def _insert(self, driver: sqlite3.Connection, rows: list[dict[str, Any]]) -> set[str]:
        params: list[Any] = []
        for row in rows:
            for name, bind in self._binds:
                value = row.get(name)
                params.append(value if value is None or bind is None else bind(value))
        return {str(found) for (found,) in driver.execute(self._statement(len(rows)), params)}

    def _statement(self, count: int) -> str:
        sql = self._inserts.get(count)
        if sql is None:
            # Built from the constants above only; one text per row count (at most MAX_ROWS).
            sql = self._inserts[count] = (
                f"INSERT INTO events ({', '.join(ROW_COLUMNS)}) VALUES "  # noqa: S608
                f"{', '.join(_ROW for _ in range(count))} ON CONFLICT DO NOTHING RETURNING id"
            )
        return sql
