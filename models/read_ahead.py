"""A worker batch's reads before SQLite's write lock, and the count that says they still hold.

SQLite has one write lock for every process. A worker's batch used to take it first (BEGIN
IMMEDIATE) and keep it while it claimed, normalized, loaded and merged, all of it CPU in Python,
and in `tributary serve` every web request in flight soon waits for its commit behind that lock:
the scheduler's record showed a CPU idle beside the worker for 59 % of its running time, 44 % of
the machine's idle time (bench/README.md, 2026-12-06 12:00). So on SQLite a batch first reads in
an ordinary read transaction and takes the write lock only for its write-back
(`ReadAhead.take_lock`).

What it read may have changed by then. Every write to a table the batch reads adds one to
`write_generation.n`, through triggers (SQLite only, migration 0023): customers and their project
rows, identities and tombstones, accounts, projects and sources, and events deleted or changed in
what they hold (`EVENT_CONTENT`: an erasure, a purge, a repair by hand). New events do not count:
the web stores them all the time, and a batch never reads one it did not claim. Triggers, not the
application, so that no writer can forget: the CLI's, the API's, a hand-run `sqlite3`. `take_lock`
reads the count again under the lock, and checks that every event the batch claimed is still
pending (not applied by another worker meanwhile); if not, the batch is stale (`StaleReadAhead`)
and the caller applies it again the old way, reading under the lock. So is a batch that wrote
before its write-back (a merge's new customer row, rare; SQLite's count of the connection's
changes says so): the read transaction is rolled back, never committed, so nothing a batch did
before it held the lock can stay.

PostgreSQL locks rows, not the database: its batches never wait this way, and the table holds its
one row unused there.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from sqlalchemy import CheckConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base
from tributary.models.session import begin_immediate

__all__ = ["EVENT_CONTENT", "WATCHED", "ReadAhead", "StaleReadAhead", "WriteGeneration", "trigger_name"]

# What an event holds that a batch reads and its own write-back never sets: a change to any of it
# (an erasure, a purge, a repair by hand) counts. The columns of the event's outcome (status,
# attempts, errors, report) do not: an UPDATE trigger that fired for every event a batch applies
# cost its drain 5 % on SQLite (bench/README.md, 2026-12-06 12:00); that its claimed events are
# all still pending is checked under the lock instead (`ReadAhead.take_lock`).
EVENT_CONTENT = (
    "account_id, project_id, source_id, channel, type, provider_event_id, dedup_key, body_hash, "
    "email, occurred_at, received_at, body, headers, payload, purged_at"
)
# The tables a batch reads and the writes to each that change what it read: (table, the trigger's
# event). Migration 0023 keeps its own copy, as migrations do.
WATCHED: tuple[tuple[str, str], ...] = (
    *(
        (table, write)
        for table in (
            "accounts",
            "projects",
            "sources",
            "customers",
            "customer_projects",
            "identities",
            "identity_tombstones",
        )
        for write in ("INSERT", "UPDATE", "DELETE")
    ),
    ("events", f"UPDATE OF {EVENT_CONTENT}"),
    ("events", "DELETE"),
)


def trigger_name(table: str, write: str) -> str:
    """The name of the trigger that counts `write` (a trigger's event: `UPDATE OF …` too) to `table`."""
    return f"tr_write_generation_{table}_{write.split(maxsplit=1)[0].lower()}"


class WriteGeneration(Base):
    """One row: how many writes the watched tables have seen (SQLite; see the module)."""

    __tablename__ = "write_generation"
    __table_args__ = (CheckConstraint("id = 1", name="ck_write_generation_one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(default=0)


class StaleReadAhead(Exception):
    """What the batch read may not hold under the write lock: a watched table changed, an event it
    claimed is no longer pending, or it wrote before its write-back."""


_GENERATION = "SELECT n FROM write_generation WHERE id = 1"
# One parameter whatever the batch's size (SQLite caps a statement's parameters).
_STILL_PENDING = (
    "SELECT count(*) FROM events WHERE status = 'pending' AND id IN (SELECT value FROM json_each(?))"
)


class ReadAhead:
    """The read phase of one batch on `driver`, a SQLite connection inside a deferred transaction
    that has read nothing yet: `start` pins the snapshot, `take_lock` ends it and holds the write
    lock."""

    def __init__(self, driver: sqlite3.Connection) -> None:
        self._driver = driver
        self._generation = self._changes = -1

    def start(self) -> None:
        self._changes = self._driver.total_changes
        self._generation = self._read()  # the transaction's first read: its snapshot

    def take_lock(self, claimed: Sequence[str]) -> None:
        """Trade the read snapshot for the write lock; StaleReadAhead if the batch wrote already, a
        watched table changed meanwhile or an event of `claimed` (the batch's, pending when read)
        is pending no more: applied by another worker, erased (the caller rolls back)."""
        if self._driver.total_changes != self._changes:
            raise StaleReadAhead("the batch wrote before its write-back")
        self._driver.execute("ROLLBACK")  # a read transaction: nothing to keep
        begin_immediate(self._driver)
        if self._read() != self._generation:
            raise StaleReadAhead("a table the batch read was written before it took the lock")
        (pending,) = self._driver.execute(_STILL_PENDING, (json.dumps(list(claimed)),)).fetchone()
        if pending != len(claimed):
            raise StaleReadAhead("an event the batch claimed was no longer pending when it took the lock")

    def _read(self) -> int:
        row = self._driver.execute(_GENERATION).fetchone()
        if row is None:
            raise StaleReadAhead("write_generation has no row")
        return int(row[0])
