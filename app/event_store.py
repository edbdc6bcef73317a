"""Storing pending events: the INSERT statements of every door, and group commit for all of them.

An identify, a ping, a `/v1/batch` or a webhook delivery is answered only after its events are
committed. Done one by one, each request paid a pool checkout, a statement, a commit and a return;
under load the web process spent most of its time there. `EventStore.store` (one row) and
`store_rows` (a request's rows, never split) let the concurrent requests of one process share that
work: the first request to arrive while no write is in flight writes every row queued at that
moment in ONE statement and ONE commit (the leader); requests arriving meanwhile queue up, and the
next free one writes them all when the leader is done. Nobody is answered before the commit that
holds their rows, so acknowledgement stays durable; a request alone pays what it paid before (a
batch of one), and under load each commit carries as many rows as arrived during the previous one.

If a shared write fails, no row of it is answered from it: every request of the batch runs its own
INSERT instead (`store` and `store_rows` return `None`; `store_all` does it for its caller), so one
bad row or a database hiccup fails that request alone, with the error it would have had on its own.

On PostgreSQL the batch is one fixed statement fed by one JSON parameter, tried first without its
conflict clause (app/pg_event_writes.py); on SQLite one multi-row INSERT that checks the rows' keys
and commits itself (app/sqlite_event_writes.py). Both go straight to the driver, and so do
`insert_rows`' statements for `/v1/batch` and deliveries of several events.
"""

from __future__ import annotations

import logging
import threading
import weakref
from _thread import LockType
from collections import deque
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, exists, select

from tributary.app import pg_event_writes
from tributary.app.event_rows import KEY_PARAM
from tributary.app.sqlite_event_writes import SqliteEventWrites
from tributary.models import ApiKey, Event
from tributary.models.event import DEDUP_KEY
from tributary.models.session import Database, driver_connection
from tributary.models.sql import insert_for
from tributary.runtime.doorbell import coalescer, stored
from tributary.runtime.process import Runtime

__all__ = [
    "EventStore",
    "conditional_insert",
    "insert_one",
    "insert_rows",
    "insert_statement",
    "key_active",
]

log = logging.getLogger(__name__)

_insert_statements: dict[str, Any] = {}
_conditional_inserts: dict[tuple[str, tuple[str, ...]], Any] = {}


def insert_statement(dialect: str) -> Any:
    """`INSERT … ON CONFLICT (account_id, dedup_key) DO NOTHING RETURNING id`, built once per
    dialect and executed with the row(s) as parameters. Building it per request with `.values(row)`
    made SQLAlchemy coerce and hash every literal for its cache key: a third of the endpoint's CPU
    (bench/README.md)."""
    stmt = _insert_statements.get(dialect)
    if stmt is None:
        stmt = _insert_statements[dialect] = (
            insert_for(dialect, Event).on_conflict_do_nothing(index_elements=DEDUP_KEY).returning(Event.id)
        )
    return stmt


def conditional_insert(dialect: str, columns: tuple[str, ...]) -> Any:
    """`INSERT … SELECT <the row> WHERE <the request's key is not revoked> ON CONFLICT
    (account_id, dedup_key) DO NOTHING RETURNING id`: the revocation check rides on the INSERT
    itself, so identify needs neither a Redis read of the revocation stamp nor a second statement,
    and a key revoked anywhere stops storing events with the next request. Built once per dialect
    and column set."""
    stmt = _conditional_inserts.get((dialect, columns))
    if stmt is None:
        table = Event.__table__
        row = select(*(bindparam(name, type_=table.c[name].type) for name in columns)).where(
            exists().where(ApiKey.id == bindparam(KEY_PARAM), ApiKey.revoked_at.is_(None))
        )
        stmt = _conditional_inserts[(dialect, columns)] = (
            insert_for(dialect, Event)
            .from_select(list(columns), row)
            .on_conflict_do_nothing(index_elements=DEDUP_KEY)
            .returning(Event.id)
        )
    return stmt


def insert_one(conn: Connection, row: dict[str, Any], key_id: str | None) -> str | None:
    """Insert one row on `conn` (the key checked when there is one); its id, or None when the
    database already had its dedup key (or the key is revoked)."""
    dialect = conn.dialect.name
    if key_id is None:
        found = conn.scalar(insert_statement(dialect), row)
    else:
        found = conn.scalar(conditional_insert(dialect, tuple(row)), {**row, KEY_PARAM: key_id})
    return None if found is None else str(found)


def key_active(conn: Connection, key_id: str) -> bool:
    """Whether the key still exists unrevoked (asked when a write conditioned on it stored nothing,
    to tell a revoked key from duplicates)."""
    found = conn.scalar(select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)))
    return found is not None


def insert_rows(conn: Connection, rows: Sequence[dict[str, Any]], key_id: str | None = None) -> set[str]:
    """Insert `rows` (`/v1/batch`, a webhook delivery of several events) and return the ids of
    those stored; the others had their dedup key stored before, or `key_id` (when given) is
    revoked: then nothing is stored (`key_active` tells which).

    PostgreSQL: one fixed statement, the key checked by the statement itself, in the caller's
    transaction (app/pg_event_writes.py `insert`). SQLite: the shared write's one statement, which
    commits itself (app/sqlite_event_writes.py), so `conn` must be in autocommit there."""
    if conn.dialect.name == "postgresql":
        # Straight to the driver, on the caller's connection and so in its transaction: a
        # SQLAlchemy result fetched row by row cost a twentieth of `/v1/batch`'s CPU for 100 ids.
        return pg_event_writes.insert(driver_connection(conn), rows, [key_id] * len(rows))
    writes = SqliteEventWrites.for_dialect(conn.dialect)
    return writes.insert(driver_connection(conn), rows, [key_id] * len(rows))


class _Pending:
    __slots__ = ("key_id", "rows")

    def __init__(self, rows: Sequence[dict[str, Any]], key_id: str | None) -> None:
        self.rows = rows
        self.key_id = key_id


class _Batch:
    """Rows that will share one statement and commit. Its first request is its leader: it writes
    the batch when the write before it is done (`started`); the others wait until it has.

    Waiting is a lock per waiting request, held for it and released by whoever lets it go (a
    `threading.Event` per batch for each side cost a fifth of the group commit's own CPU: each
    wait allocates a lock anyway, and a Condition around it). Every field is changed under the
    store's lock; a waiter reads the outcome after its lock is released."""

    __slots__ = ("failed", "inserted", "items", "size", "started", "turn", "waiting")

    def __init__(self) -> None:
        self.items: list[_Pending] = []
        self.size = 0  # rows in all its items
        self.started = False  # its leader may write it
        self.turn: LockType | None = None  # held for the leader while an earlier write is in flight
        self.waiting: list[LockType] = []  # held for the others until the write is done
        self.failed = True  # until its write commits
        self.inserted: set[str] = set()


def _held() -> LockType:
    """A lock already acquired: the caller blocks on it until someone releases it."""
    lock = threading.Lock()
    lock.acquire()
    return lock


class EventStore:
    """Per web process and database: group commit of event stores, single rows and the rows of
    one request (module docstring).
    One per runtime (`for_runtime`): apps built on one runtime share it, and its connection."""

    # Rows per shared statement; a request arriving at a full batch starts the next one. A request
    # of many rows (`store_rows`) is never split, so one may take a batch beyond this.
    MAX_ROWS = 256

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = threading.Lock()
        self._open = _Batch()  # the batch new rows join
        self._full: deque[_Batch] = deque()  # batches closed at MAX_ROWS, waiting their turn
        self._writing = False  # a batch's write is in flight
        self._conn: Connection | None = None  # the writes' connection
        self._conn_db: Database | None = None  # the database it is a connection to
        self.batches = 0  # shared writes made, for tests
        self.rows = 0  # rows they carried

    def store(self, row: dict[str, Any], key_id: str | None = None) -> bool | None:
        """Insert one pending event (checking `key_id` is not revoked when given) and commit.
        True: stored by this call. False: not stored, because its dedup key was stored before or
        the key is revoked. None: the shared write failed, so nothing was stored for this call:
        the caller stores the row on its own (`insert_one`), meeting its own error if any."""
        batch = self._join([row], key_id)
        if batch.failed:
            return None
        return row["id"] in batch.inserted

    def store_rows(self, rows: Sequence[dict[str, Any]], key_id: str | None = None) -> set[str] | None:
        """`store` for the rows of one request (`/v1/batch`, a delivery of several events), all in
        the same shared write, so all or none of them: the ids stored by this call, or None when
        the shared write failed and the caller stores them on its own (`insert_rows`)."""
        batch = self._join(rows, key_id)
        if batch.failed:
            return None
        return {str(row["id"]) for row in rows} & batch.inserted

    def store_all(self, rows: Sequence[dict[str, Any]], key_id: str | None = None) -> set[str]:
        """`store_rows`, and when the shared write failed, the rows stored alone (`insert_rows`:
        all or none, meeting their own error): the ids stored by this call."""
        inserted = self.store_rows(rows, key_id)
        if inserted is not None:
            return inserted
        with stored(self.runtime) as store, self.runtime.db.autocommit() as conn:
            inserted = insert_rows(conn, rows, key_id)
            store.committed = bool(inserted)
        return inserted

    def _join(self, rows: Sequence[dict[str, Any]], key_id: str | None) -> _Batch:
        """Queue `rows` in the open batch and return it once its write is done (or failed)."""
        with self._lock:
            batch = self._open
            batch.items.append(_Pending(rows, key_id))
            batch.size += len(rows)
            leader = len(batch.items) == 1
            if batch.size >= self.MAX_ROWS:
                self._open = _Batch()
                self._full.append(batch)
            if not self._writing:
                self._start_next()
            # A batch starts only under this lock, so the leader sees whether it must wait, and
            # every other request joins its batch before it can start, let alone finish.
            wait = None
            if not leader:
                wait = _held()
                batch.waiting.append(wait)
            elif not batch.started:
                wait = batch.turn = _held()
        if wait is not None:
            wait.acquire()  # released by `_start_next` (the leader) or `_finish` (the others)
        if leader:
            try:
                self._write(batch)
            finally:
                self._finish(batch)
        return batch

    def _start_next(self) -> None:
        """Under the lock, with no write in flight: let the next batch's leader write it (full
        batches first, in order), and start a new batch for the rows that come meanwhile."""
        if self._full:
            batch = self._full.popleft()
        elif self._open.items:
            batch, self._open = self._open, _Batch()
        else:
            return
        self._writing = True
        batch.started = True
        if batch.turn is not None:
            batch.turn.release()

    def _finish(self, batch: _Batch) -> None:
        """After a write: its other requests go on, and the batch that filled up meanwhile goes
        next, if any."""
        with self._lock:
            self._writing = False
            self._start_next()
        for waiting in batch.waiting:
            waiting.release()

    def _write(self, batch: _Batch) -> None:
        try:
            batch.inserted = self._insert(batch.items)
        except Exception as exc:  # each request then meets its own error, alone
            log.info("a shared write of %d events failed, each request stores alone: %s", batch.size, exc)
            return
        batch.failed = False
        self.batches += 1
        self.rows += batch.size
        if batch.inserted:
            # One ring owed for the whole batch, after its commit (runtime/doorbell.py).
            coalescer(self.runtime).owe()

    def _insert(self, batch: Sequence[_Pending]) -> set[str]:
        db = self.runtime.db
        rows = [row for pending in batch for row in pending.rows]
        keys = [pending.key_id for pending in batch for _ in pending.rows]
        # Writes take turns (one in flight per process), so they share one connection kept checked
        # out: a pool checkout and return per write (on PostgreSQL also setting and resetting
        # autocommit) cost more CPU than the statement itself. After any failure it is discarded,
        # and the next write connects afresh (a database restart costs one failed shared write,
        # whose requests then store alone through the pool, which reconnects).
        if self._conn is not None and (self._conn_db is not db or self._conn.closed):
            self._conn.close()  # closed by `Database.dispose`, or the runtime has another database
            self._conn = None
        if self._conn is None:
            self._conn, self._conn_db = db.autocommit_connection(), db
        try:
            # Straight to the driver: SQLAlchemy's execution context around one statement cost
            # about 100 us of CPU per write, as much as the driver's own work for it. Nothing is
            # lost: this connection is ours alone, autocommit, and any error discards it.
            driver = driver_connection(self._conn)
            if not db.is_postgres:
                return SqliteEventWrites.for_dialect(db.engine.dialect).insert(driver, rows, keys)
            return pg_event_writes.insert_new_first(driver, rows, keys)
        except Exception:
            self._conn.invalidate()
            self._conn.close()
            self._conn = None
            raise

    def close(self) -> None:
        """Give back the writes' connection (the next write opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> EventStore:
        with _stores_lock:
            found = _stores.get(runtime)
            if found is None:
                found = _stores[runtime] = cls(runtime)
            return found


_stores: weakref.WeakKeyDictionary[Runtime, EventStore] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()
