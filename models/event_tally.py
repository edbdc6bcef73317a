"""Running tallies of the events table for `/metrics`, kept by the database itself (PostgreSQL).

`/metrics` reports how many events there are by source, connector and status, and a histogram of
received → applied latency. Counting them at scrape time reads every event: 1.5 s a scrape at a
million events, every 15-30 s, for as long as Prometheus runs. Counting them in the processes that
write events would miss writers (retries, replays, erasure, source and account deletion, a manual
UPDATE) and double count on retries of a failed commit.

So PostgreSQL counts: statement-level triggers on `events` (migration 0013; the update trigger's
body as of migration 0018, which reads its old and new rows without joining them) append one row
per (source, connector, status) that a statement changed, with the change in count, to
`event_counts`, and one row per latency bucket to `event_latency`; in the writer's own
transaction, so the tallies are exactly what the table holds, whoever wrote it. Appending (never
updating one row per key) keeps concurrent writers from queueing on a counter's row lock. A scrape
sums the rows; `compact` folds them into one row per key now and then (the sweeper does, every
sweep), so the sum stays a few thousand rows whatever the table's size.

Pending events are the exception (migration 0019): they are counted live, by `pending_counts`,
through the partial index on pending events that a scrape reads anyway for the backlog's size and
age. Tallying them cost every ingest statement a second INSERT, a sixth of PostgreSQL's CPU for a
one-event statement; the backlog is the one part of the table a scrape can afford to count, and
counting it live cannot drift. So the triggers count only the other statuses: an event moving out
of pending is counted into its new status, one moving back is counted out of its old one. Since
every writer of the product inserts events pending, the insert is counted by a row trigger whose
WHEN clause leaves pending events out (migration 0021): an ingest statement then runs no trigger of
the tallies at all, where the statement trigger kept a copy of each inserted row for its EXISTS to
read back (0-4 % of PostgreSQL's CPU for a 4-row insert, 1 % at 100 rows: bench/event_insert.py).
An event inserted in another status (by hand) appends its own rows.

SQLite (the embedded default: one machine, small tables) has no statement-level triggers; there
the scrape counts the events table, and these tables stay empty. `scan_counts` and `scan_latency`
are that count, and the reference the tallies are tested against.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Numeric,
    SmallInteger,
    String,
    case,
    cast,
    func,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from tributary.models.base import Base, BigIntPK
from tributary.models.event import Event
from tributary.models.sql import is_postgres

__all__ = [
    "APPLIED",
    "LATENCY_BOUNDS",
    "EventCount",
    "EventLatency",
    "compact",
    "latency_seconds",
    "pending_counts",
    "scan_counts",
    "scan_latency",
    "tallied",
    "tally_counts",
    "tally_latency",
]

# Upper bounds (seconds) of the latency histogram's buckets; a last bucket holds everything above.
# Migration 0013's trigger functions bucket with the same bounds (a migration keeps its own copy):
# changing them takes a migration that replaces those functions and rebuilds `event_latency`.
LATENCY_BOUNDS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0)
# Events counted in the latency histogram: applied, with the time they were applied.
APPLIED = ("processed", "ignored")

# (source id or None, connector/channel, status) -> events
Counts = dict[tuple[str | None, str, str], int]
# one (events, seconds) per bucket of LATENCY_BOUNDS, and one above the last bound
Latency = list[tuple[int, float]]


class EventCount(Base):
    """A change in the number of events with one (source, channel, status): the sum of a key's rows
    is how many there are."""

    __tablename__ = "event_counts"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source_id: Mapped[str | None] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    events: Mapped[int] = mapped_column(BigInteger)


class EventLatency(Base):
    """A change in the applied events whose latency falls in one bucket (index into LATENCY_BOUNDS,
    `len(LATENCY_BOUNDS)` above the last), and in the sum of their latencies in seconds."""

    __tablename__ = "event_latency"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    bucket: Mapped[int] = mapped_column(SmallInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    # Exact decimal seconds, so additions and later subtractions cancel exactly.
    seconds: Mapped[Decimal] = mapped_column(Numeric)


def tallied(session: Session) -> bool:
    """Whether this database keeps the tallies: PostgreSQL, whose triggers (migration 0013) do."""
    return is_postgres(session)


def _per_bucket(sums: dict[int, tuple[int, float]]) -> Latency:
    """(events, seconds) for every bucket in order, empty buckets included."""
    return [sums.get(bucket, (0, 0.0)) for bucket in range(len(LATENCY_BOUNDS) + 1)]


def _tallied_counts(session: Session) -> Counts:
    """The tallies' sums: every status but pending (`pending_counts` has those)."""
    rows = session.execute(
        select(EventCount.source_id, EventCount.channel, EventCount.status, func.sum(EventCount.events))
        .group_by(EventCount.source_id, EventCount.channel, EventCount.status)
        .having(func.sum(EventCount.events) != 0)
    )
    return {(source, channel, status): int(n) for source, channel, status, n in rows}


def pending_counts(session: Session) -> tuple[Counts, datetime | None]:
    """The pending events by (source, connector, "pending"), and when the oldest was received
    (None when there is none): one read of the pending events' partial index and their rows."""
    rows = session.execute(
        select(Event.source_id, Event.channel, func.count(), func.min(Event.received_at))
        .where(Event.status == "pending")
        .group_by(Event.source_id, Event.channel)
    ).all()
    counts = {(source, channel, "pending"): int(n) for source, channel, n, _ in rows}
    return counts, min((oldest for *_, oldest in rows), default=None)


def tally_counts(session: Session, pending: Counts | None = None) -> Counts:
    """Every status's count as the tallies and the live pending count give it (the same as
    `scan_counts` without its zeros); `pending`: `pending_counts`'s, when the caller has read it."""
    if pending is None:
        pending = pending_counts(session)[0]
    return {**_tallied_counts(session), **pending}


def tally_latency(session: Session) -> Latency:
    sums = {
        bucket: (int(n), float(seconds))
        for bucket, n, seconds in session.execute(
            select(
                EventLatency.bucket, func.sum(EventLatency.events), func.sum(EventLatency.seconds)
            ).group_by(EventLatency.bucket)
        )
    }
    return _per_bucket(sums)


def scan_counts(session: Session) -> Counts:
    """The same as `tally_counts`, counted from the events table."""
    rows = session.execute(
        select(Event.source_id, Event.channel, Event.status, func.count()).group_by(
            Event.source_id, Event.channel, Event.status
        )
    )
    return {(source, channel, status): int(n) for source, channel, status, n in rows}


def latency_seconds(dialect: str) -> ColumnElement[Any]:
    """An event's received → processed time in seconds, as the scan and the triggers compute it."""
    if dialect == "postgresql":
        return type_coerce(func.extract("epoch", Event.processed_at - Event.received_at), Numeric())
    return cast(
        (func.julianday(Event.processed_at) - func.julianday(Event.received_at)) * literal(86400.0), Float
    )


def scan_latency(session: Session) -> Latency:
    """The same as `tally_latency`, counted from the events table."""
    seconds = latency_seconds(session.get_bind().dialect.name)
    whens = [(seconds <= bound, index) for index, bound in enumerate(LATENCY_BOUNDS)]
    bucket = case(*whens, else_=len(LATENCY_BOUNDS))
    rows = session.execute(
        select(bucket, func.count(), func.sum(seconds))
        .where(Event.status.in_(APPLIED), Event.processed_at.is_not(None))
        .group_by(bucket)
    )
    return _per_bucket({int(b): (int(n), float(s)) for b, n, s in rows})


def compact(session: Session) -> int:
    """Fold each key's rows into one (PostgreSQL; nothing to do elsewhere); returns how many rows
    were folded. Exact beside concurrent writers and compactions: the DELETE takes the rows its
    snapshot sees and the INSERT puts back their sums in the same statement; rows committed
    meanwhile stay as they are, and a second compaction skips rows the first deleted."""
    if not tallied(session):
        return 0
    counts = session.execute(
        text(
            """
            WITH gone AS (DELETE FROM event_counts RETURNING source_id, channel, status, events),
                 kept AS (INSERT INTO event_counts (source_id, channel, status, events)
                          SELECT source_id, channel, status, sum(events) FROM gone
                          GROUP BY source_id, channel, status HAVING sum(events) <> 0)
            SELECT count(*) FROM gone
            """
        )
    ).scalar_one()
    latency = session.execute(
        text(
            """
            WITH gone AS (DELETE FROM event_latency RETURNING bucket, events, seconds),
                 kept AS (INSERT INTO event_latency (bucket, events, seconds)
                          SELECT bucket, sum(events), sum(seconds) FROM gone
                          GROUP BY bucket HAVING sum(events) <> 0 OR sum(seconds) <> 0)
            SELECT count(*) FROM gone
            """
        )
    ).scalar_one()
    return int(counts) + int(latency)
