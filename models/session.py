"""Engines and sessions: one `Database` per process, portable between SQLite and PostgreSQL."""

from __future__ import annotations

import select
import sqlite3
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from tributary.models.sql import dumps_json

SQLITE_BUSY_TIMEOUT_S = 30
# Every connection's wait for a lock held elsewhere, set at connect and again after `begin_immediate`.
_BUSY_TIMEOUT_PRAGMA = f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}"
# How often a writer waiting for SQLite's write lock tries again (`begin_immediate`).
WRITE_LOCK_POLL_S = 0.0005
# SQLite writes the WAL from its start again after a checkpoint, but never shrinks the file: a burst
# of ingest left `tributary serve`'s at 116-226 MB for good (bench/README.md, 2026-12-05). It is
# cut back to this size when SQLite starts it over.
SQLITE_WAL_LIMIT_BYTES = 64 * 1024 * 1024


def normalize_url(url: str) -> str:
    """Accept the URLs hosting platforms hand out (`postgres://`, `postgresql://`) and use psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling issues a deferred BEGIN lazily and cannot upgrade a read
    # lock to a write lock without failing under contention. Take over BEGIN so writers can ask for
    # BEGIN IMMEDIATE (wait for the write lock up front: `begin_immediate`).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_LIMIT_BYTES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(_BUSY_TIMEOUT_PRAGMA)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # each statement commits itself; an explicit BEGIN here would never be committed
        if options.get("sqlite_immediate"):
            begin_immediate(driver_connection(conn))
        else:
            conn.exec_driver_sql("BEGIN")


def driver_connection(conn: Connection) -> Any:
    """The DBAPI connection under `conn` (sqlite3's or psycopg's)."""
    driver = conn.connection.driver_connection
    if driver is None:  # never for a checked-out connection; SQLAlchemy types it optional
        raise RuntimeError("the connection has no driver connection")
    return driver


def begin_immediate(dbapi_connection: sqlite3.Connection, timeout: float = SQLITE_BUSY_TIMEOUT_S) -> None:
    """BEGIN IMMEDIATE, waiting up to `timeout` for the write lock by trying again every
    `WRITE_LOCK_POLL_S`. SQLite's own busy handler backs off to sleeps of 25-100 ms, so a writer
    waiting for another process (the web's group commit behind a worker's batch, or the other way
    round) took the lock some 5-30 ms after it was free, with every request of its batch waiting too
    (`tributary serve`: p99 290 -> 70 ms at 16 connections, bench/README.md). Errors are raised as
    SQLAlchemy's, as a BEGIN it had executed would have raised them."""
    _when_free(dbapi_connection, "BEGIN IMMEDIATE", (), timeout, None)


def write_when_free(
    dbapi_connection: sqlite3.Connection,
    sql: str,
    parameters: Sequence[Any],
    timeout: float = SQLITE_BUSY_TIMEOUT_S,
    *,
    probe: str | None = None,
) -> int:
    """Run one write statement as its own transaction (the connection in autocommit), waiting for
    the write lock as `begin_immediate` does; the number of rows it changed. `probe`: a write
    statement that changes nothing (`INSERT INTO t SELECT * FROM t WHERE 0`), tried while waiting
    instead of `sql` itself: a try binds every value again, 140 us for a statement of 100 rows
    against 1.3 us for the probe, and a writer may wait through a whole batch of the worker's.

    The lock is then held for one call into SQLite, which runs without the GIL, from its first
    write to its commit. Between a BEGIN IMMEDIATE and its COMMIT each statement hands the GIL back
    and must win it again from the process's other threads: in `tributary serve` a web process's
    write of 1.6-4.3 rows on average held the lock 0.55-0.91 ms, of which its own CPU was
    0.21-0.34, while the other processes waited for it (bench/README.md, 2026-12-05). A statement
    refused for the lock wrote nothing, so trying it again is safe."""
    return _when_free(dbapi_connection, sql, parameters, timeout, probe)


def _when_free(
    dbapi_connection: sqlite3.Connection,
    sql: str,
    parameters: Sequence[Any],
    timeout: float,
    probe: str | None,
) -> int:
    deadline = time.monotonic() + timeout

    def refused(exc: sqlite3.OperationalError) -> None:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
            raise exc

    try:
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        try:
            while True:
                try:
                    return dbapi_connection.execute(sql, parameters).rowcount
                except sqlite3.OperationalError as exc:
                    refused(exc)
                time.sleep(WRITE_LOCK_POLL_S)
                while probe is not None:
                    try:
                        dbapi_connection.execute(probe)  # took the lock and let it go: free
                        break
                    except sqlite3.OperationalError as exc:
                        refused(exc)
                    time.sleep(WRITE_LOCK_POLL_S)
        finally:
            # Other statements (autocommit writes, deferred transactions) keep SQLite's own wait.
            dbapi_connection.execute(_BUSY_TIMEOUT_PRAGMA)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


def _server_closed(dbapi_connection: Any) -> bool:
    """Whether the server has closed this idle connection (restart, `pg_terminate_backend`, an idle
    timeout): it then sent its last words and EOF, so the socket is readable, where a live idle
    connection has nothing to say. One poll syscall, no round trip."""
    try:
        fd = dbapi_connection.fileno()
    except Exception:
        return True  # the driver already knows it is gone
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


# PostgreSQL connections a process keeps open, and how many more it may open at a peak (closed
# again when returned). A web process has 16 threads and its group commit holds one connection
# for good; with 5 kept, four `/v1/batch` requests at once opened and closed a connection per
# request beyond them, and those short-lived backends cost PostgreSQL more CPU than the inserts
# (bench/README.md). The ceiling stays 15 per process, as it was (5 + 10).
POOL_SIZE = 10
POOL_OVERFLOW = 5


def _replace_closed_connections(engine: Engine) -> None:
    # Instead of `pool_pre_ping` (a SELECT 1 round trip on every checkout, the ingest path's second
    # round trip): look at the socket. A connection the server closed is replaced at checkout (the
    # pool reconnects once), so the first request after a database restart succeeds. One that
    # dies silently (a network partition) fails its statement as with pre-ping, and the pool is
    # then invalidated so the next checkout reconnects.
    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if _server_closed(dbapi_connection):
            raise DisconnectionError("the server closed this pooled connection")


class Database:
    """Owns the engine and the session factories.

    `session()` is for reads; `write_session()` for every transaction that writes (the worker's
    batches, the API's and the CLI's changes): BEGIN IMMEDIATE on SQLite, which waits for the write
    lock up front, where a deferred transaction that has read cannot wait for it and fails at once
    ("database is locked") if another process committed meanwhile: revoking a key while serve's
    worker drained failed so, 3 times in 12. `write_connection()` is the same for Core statements;
    `autocommit()` gives one-statement transactions for the ingest path, which needs exactly one
    round trip.
    """

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, echo: bool = False) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
            kwargs["json_serializer"] = dumps_json
        else:
            kwargs.update(pool_size=pool_size, max_overflow=POOL_OVERFLOW, pool_recycle=1800)
        self.engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        else:
            _replace_closed_connections(self.engine)
        self._write_engine = self.engine.execution_options(sqlite_immediate=True)
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.WriteSession = sessionmaker(self._write_engine, expire_on_commit=False)
        # Connections handed out to be held (`autocommit_connection`), closed by `dispose`.
        self._held: weakref.WeakSet[Connection] = weakref.WeakSet()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.Session() as session:
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        with self.WriteSession() as session:
            yield session

    @contextmanager
    def read_ahead_session(self) -> Iterator[Session]:
        """A write session that begins as a reader (a deferred BEGIN on SQLite): the worker's batch
        that reads before it takes the write lock (models/read_ahead.py)."""
        with self.WriteSession(bind=self.engine) as session:
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection in one write transaction (BEGIN IMMEDIATE on SQLite), committed when the
        block ends and rolled back if it raises: several statements, one commit."""
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        with self._autocommit_engine.connect() as conn:
            yield conn

    def autocommit_connection(self) -> Connection:
        """A connection like `autocommit()`'s that stays checked out until the caller closes it
        (or `dispose()` does): for a writer that sends statement after statement (the web
        process's group commit)."""
        conn = self._autocommit_engine.connect()
        self._held.add(conn)
        return conn

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        """Close every connection: the pool's, and those handed out to be held."""
        for conn in list(self._held):
            conn.close()
        self.engine.dispose()
