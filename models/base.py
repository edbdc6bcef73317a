"""Declarative base, portable column types, identifiers and clocks shared by every table."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

# Constraint names are spelled out so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, containment operators), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")

# SQLite only autoincrements INTEGER PRIMARY KEY, so big integer keys are plain INTEGER there.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


_SQLITE_TEXT_LENGTH = len("2026-01-01 00:00:00.000000")


def _sqlite_text(value: datetime | None) -> str | None:
    """A UTC moment as SQLite stores it: the text of SQLAlchemy's SQLite DATETIME,
    `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, always with its microseconds, so text order is time order."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:_SQLITE_TEXT_LENGTH]  # without the "+00:00"


def _sqlite_moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    if len(value) == _SQLITE_TEXT_LENGTH:
        # Naming the zone in the text: `replace(tzinfo=…)` would cost six times the parse.
        return datetime.fromisoformat(value + "+00:00")
    moment = datetime.fromisoformat(value)  # written by SQL (no microseconds) or another tool
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, as text).

    On SQLite the text is made and read in one step (`_sqlite_text`, `_sqlite_moment`) instead of
    this decorator's conversion followed by SQLAlchemy's DATETIME formatting: 4.4 -> 1.7 us a value
    written, 2.0 -> 0.3 read, and a drain batch binds about ten per event. It is the same text. The
    decorator on its own (what a writer to a driver of its own took, app/sqlite_event_writes.py,
    before it asked `models.sql.bind_processor`) handed sqlite3 a naive datetime, whose default
    adapter drops zero microseconds (`12:00:03` sorts before `12:00:03.000000`, the same moment)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            return _sqlite_moment
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        datetime: UTCDateTime,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class _RandomBlock(threading.local):
    """The OS CSPRNG's bytes read a block at a time, per thread. `os.urandom` releases the GIL for
    its system call, and a thread of a busy web process that lets go of the GIL waits for another
    thread to give it back (up to the 5 ms switch interval): under load `/v1/batch`, one id per
    message, spent a third of its samples there. One read now serves 409 ids."""

    data: bytes = b""
    offset: int = 0


_RANDOM = _RandomBlock()
_RANDOM_BLOCK_BYTES = 4090


def _forget_random_block() -> None:
    # A forked child (gunicorn's workers, `serve`'s processes) must never hand out its parent's
    # bytes: it starts with an empty block. Only the forking thread exists in the child.
    _RANDOM.data, _RANDOM.offset = b"", 0


os.register_at_fork(after_in_child=_forget_random_block)


def _random_80_bits() -> int:
    block = _RANDOM
    start = block.offset
    if start + 10 > len(block.data):
        block.data, start = os.urandom(_RANDOM_BLOCK_BYTES), 0
    block.offset = start + 10
    return int.from_bytes(block.data[start : start + 10], "big")


class _LastId:
    """The last id this process made (as its 128-bit value), so that the next one sorts after it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = -1  # none yet: any clock is later


_LAST = _LastId()


def _forget_lock_in_child() -> None:
    # A fork while another thread held the lock would leave the child's copy held for good.
    _LAST.lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_lock_in_child)


def _next_value() -> int:
    """The clock's millisecond then 80 random bits; within a millisecond that already has an id
    (or a clock that stepped back), the last id plus a random step of at most 2**64 instead. So ids
    made by one process only grow, and the worker, which applies events in id order, applies an
    event sent after another was answered after it, even within one millisecond: of two writes
    with the same event time the later one wins (the SPEC's tie goes to the one applied last).
    The step keeps 64 random bits between neighbours, so an id still tells nothing usable about
    the next; a step past the 80 bits carries into the clock, a millisecond ahead of it at worst."""
    millis = int(time.time() * 1000)
    rand = _random_80_bits()
    with _LAST.lock:
        last = _LAST.value
        value = (millis << 80) | rand if millis > last >> 80 else last + 1 + (rand >> 16)
        _LAST.value = value
    return value


def sortable_id(prefix: str) -> str:
    """`prefix_` + 26 chars: 48-bit millisecond clock then 80 random bits (ULID layout, lower case).

    Time-ordered so keyset pagination and batch claims follow arrival order, and increasing within
    a process (`_next_value`); random enough to be unguessable for customers and events (the bits
    come from the OS CSPRNG, `_RandomBlock`).
    """
    v = _next_value()
    # 26 characters of 5 bits are 13 pairs of 10 bits (the top 2 of 130 always zero), each one
    # lookup, written out: a quarter of the cost of `base64.b32encode`, which is Python too and
    # loops (every event, customer and row pays it).
    t = _CROCKFORD_PAIRS
    return prefix + "_" + "".join(
        (
            t[v >> 120 & 1023], t[v >> 110 & 1023], t[v >> 100 & 1023], t[v >> 90 & 1023],
            t[v >> 80 & 1023], t[v >> 70 & 1023], t[v >> 60 & 1023], t[v >> 50 & 1023],
            t[v >> 40 & 1023], t[v >> 30 & 1023], t[v >> 20 & 1023], t[v >> 10 & 1023],
            t[v & 1023],
        )
    )  # fmt: skip


def random_token(length: int) -> str:
    """`length` base62 characters from the OS CSPRNG (about 5.95 bits each)."""
    return "".join(secrets.choice(_BASE62) for _ in range(length))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    """Event times as integer microseconds: exact, comparable, compact inside JSON clocks."""
    delta = moment.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def isoformat(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, the one time format the API speaks."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")
