"""A worker batch's reads before SQLite's write lock, and the count that says they still hold.

SQLite has one write lock for every process. A worker's batch used to take it first (BEGIN
IMMEDIATE) and keep it while it claimed, normalized, loaded and merged, all of it CPU in Python,
and in `tributary serve` every web request in flight soon waits for its commit behind that lock:
the scheduler's record showed a CPU idle beside the worker for 59 % of its running time, 44 % of
the machine's idle time (bench/README.md, 2026-12-06 12:00). So on SQLite a batch first reads in
an ordinary read transaction, with the connection made read-only (`PRAGMA query_only`), and takes
the write lock only for its write-back (`ReadAhead.take_lock`).

What it read may have changed by then. Every write to a table the batch reads adds one to
`write_generation.n`, through triggers (SQLite only, migration 0023): customers and their project
rows, identities and tombstones, accounts, projects and sources, and events updated or deleted (a
claim by another worker, a retry, an erasure). New events do not count: the web stores them all
the time, and a batch never reads one it did not claim. Triggers, not the application, so that no
writer can forget: the CLI's, the API's, a hand-run `sqlite3`. `take_lock` reads the count again
under the lock; if it moved, the batch is stale (`StaleReadAhead`) and the caller applies it again
the old way, reading under the lock. Anything the batch writes before its write-back (a merge's new
customer row, rare) fails against `query_only`, with the same outcome.

PostgreSQL locks rows, not the database: its batches never wait this way, and the table holds its
one row unused there.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import CheckConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base
from tributary.models.session import begin_immediate

__all__ = ["WATCHED", "ReadAhead", "StaleReadAhead", "WriteGeneration"]

# The tables a batch reads and the writes to each that change what it read (migration 0023 keeps
# its own copy, as migrations do).
WATCHED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("accounts", ("INSERT", "UPDATE", "DELETE")),
    ("projects", ("INSERT", "UPDATE", "DELETE")),
    ("sources", ("INSERT", "UPDATE", "DELETE")),
    ("customers", ("INSERT", "UPDATE", "DELETE")),
    ("customer_projects", ("INSERT", "UPDATE", "DELETE")),
    ("identities", ("INSERT", "UPDATE", "DELETE")),
    ("identity_tombstones", ("INSERT", "UPDATE", "DELETE")),
    ("events", ("UPDATE", "DELETE")),
)


class WriteGeneration(Base):
    """One row: how many writes the watched tables have seen (SQLite; see the module)."""

    __tablename__ = "write_generation"
    __table_args__ = (CheckConstraint("id = 1", name="ck_write_generation_one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(default=0)


class StaleReadAhead(Exception):
    """A watched table changed between the batch's reads and its write lock."""


_GENERATION = "SELECT n FROM write_generation WHERE id = 1"


class ReadAhead:
    """The read phase of one batch on `driver`, a SQLite connection inside a deferred transaction
    that has read nothing yet: `start` pins the snapshot and makes the connection read-only,
    `take_lock` ends the snapshot and holds the write lock, `close` (always) makes it writable."""

    def __init__(self, driver: sqlite3.Connection) -> None:
        self._driver = driver
        self._generation = -1

    def start(self) -> None:
        self._driver.execute("PRAGMA query_only=ON")
        self._generation = self._read()  # the transaction's first read: its snapshot

    def take_lock(self) -> None:
        """Trade the read snapshot for the write lock; StaleReadAhead if a watched table changed
        meanwhile (the caller rolls back)."""
        self._driver.execute("PRAGMA query_only=OFF")
        self._driver.execute("COMMIT")  # a read transaction: nothing to write
        begin_immediate(self._driver)
        if self._read() != self._generation:
            raise StaleReadAhead("a table the batch read was written before it took the lock")

    def close(self) -> None:
        self._driver.execute("PRAGMA query_only=OFF")

    def _read(self) -> int:
        row = self._driver.execute(_GENERATION).fetchone()
        if row is None:
            raise StaleReadAhead("write_generation has no row")
        return int(row[0])
