"""The overview's figures, each one grouped query: customers per project and status, the last
24 hours of events per source and hour, and the pending backlog.

Event ids are time-ordered (a millisecond clock then random bits, see `tributary.models.base.sortable_id`)
and minted when a delivery is received, so "received in the last 24 hours" is a range on the
primary key: no extra index, and the cost follows the window, not the table.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from tributary.models import Customer, CustomerProject, Event, Project, Source
from tributary.models.base import utcnow
from tributary.models.sql import sqlite_unindexed

HOURS = 24
COUNT_CAP = 1_000
CACHE_SECONDS = 15.0
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
API_SOURCE = "api"


def id_floor(prefix: str, moment: datetime) -> str:
    """The smallest `sortable_id` minted at or after `moment`."""
    value = int(moment.timestamp() * 1000) << 80
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


@dataclass(slots=True)
class SourceSeries:
    key: str
    label: str
    received: list[int] = field(default_factory=lambda: [0] * HOURS)
    processed: list[int] = field(default_factory=lambda: [0] * HOURS)
    failed: list[int] = field(default_factory=lambda: [0] * HOURS)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.received)

    def chart(self, hours: list[int]) -> dict[str, Any]:
        return {
            "label": self.label,
            "x": hours,
            "received": self.received,
            "processed": self.processed,
            "failed": self.failed,
        }


@dataclass(slots=True)
class Overview:
    computed_at: datetime
    start: datetime
    hours: list[int]
    customers: int
    by_project: list[tuple[str, list[tuple[str | None, int]], int]]
    sources: list[SourceSeries]
    pending: int
    oldest_pending: datetime | None
    failed: int
    deferred: int


def _hour_bucket(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.date_trunc("hour", Event.received_at)
    # SQLite keeps naive UTC text; the hour prefix is the bucket.
    return func.strftime("%Y-%m-%d %H", Event.received_at)


def _bucket_index(value: Any, start: datetime) -> int:
    if isinstance(value, str):
        moment = datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=UTC)
    else:
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return int((moment - start).total_seconds() // 3600)


def customer_counts(
    session: Session, account_id: str, project_id: str | None
) -> list[tuple[str, list[tuple[str | None, int]], int]]:
    projects = select(Project.id, Project.slug).where(Project.account_id == account_id)
    if project_id is not None:
        projects = projects.where(Project.id == project_id)
    slugs = {pid: slug for pid, slug in session.execute(projects)}
    # One pass over the project rows, grouped without a join or an IN list: with either, SQLite walks
    # an index and fetches every row out of order, two to three times slower. Other accounts' groups
    # (one account per install today) are dropped below.
    stmt = select(CustomerProject.project_id, CustomerProject.status, func.count()).group_by(
        CustomerProject.project_id, CustomerProject.status
    )
    if project_id is not None:
        stmt = stmt.where(CustomerProject.project_id == project_id)
    grouped: dict[str, list[tuple[str | None, int]]] = {}
    for pid, status, count in session.execute(stmt):
        if pid in slugs:
            grouped.setdefault(slugs[pid], []).append((status, count))
    return [
        (slug, sorted(rows, key=lambda r: -r[1]), sum(n for _, n in rows))
        for slug, rows in sorted(grouped.items())
    ]


_source_name = func.coalesce(func.nullif(Source.name, ""), Source.id)


def event_series(
    session: Session, account_id: str, project_id: str | None, start: datetime
) -> list[SourceSeries]:
    dialect = session.get_bind().dialect.name
    bucket = _hour_bucket(dialect)
    # Grouping by an expression, not the column, keeps SQLite from walking the whole source_id index
    # to group; the id range (the window) is then what it reads. The account is tested on the rows
    # of that range: as a term of its own, SQLite served it from an account index, reading every
    # event the account ever had (`sqlite_unindexed`).
    source = func.coalesce(Event.source_id, "")
    account = sqlite_unindexed(Event.account_id) if dialect == "sqlite" else Event.account_id
    stmt = (
        select(source, bucket, Event.status, func.count())
        .where(account == account_id, Event.id >= id_floor("evt", start))
        .group_by(source, bucket, Event.status)
    )
    if project_id is not None:
        stmt = stmt.where(Event.project_id == project_id)
    series: dict[str, SourceSeries] = {}
    for source_id, hour, status, count in session.execute(stmt):
        index = _bucket_index(hour, start)
        if not 0 <= index < HOURS:
            continue  # an id minted by a clock that disagrees with received_at: outside the window
        key = source_id or API_SOURCE
        entry = series.setdefault(key, SourceSeries(key, key))
        entry.received[index] += count
        if status == "processed":
            entry.processed[index] += count
        elif status == "failed":
            entry.failed[index] += count
        entry.totals[status] = entry.totals.get(status, 0) + count
    names = session.execute(
        select(Source.id, Source.connector + " · " + _source_name).where(
            Source.id.in_([k for k in series if k != API_SOURCE])
        )
    )
    labels = {source_id: label for source_id, label in names}
    for key, entry in series.items():
        entry.label = "API (identify, ping)" if key == API_SOURCE else labels.get(key, key)
    return sorted(series.values(), key=lambda s: (-s.total, s.label))


def _capped_count(session: Session, account_id: str, project_id: str | None, status: str) -> int:
    """How many events have `status`, counted up to COUNT_CAP + 1 (shown as "1,000+"): past that
    the exact number changes nothing, and counting it would cost a row read per event."""
    stmt = select(Event.id).where(Event.account_id == account_id, Event.status == status)
    if project_id is not None:
        stmt = stmt.where(Event.project_id == project_id)
    return int(session.scalar(select(func.count()).select_from(stmt.limit(COUNT_CAP + 1).subquery())) or 0)


class OverviewCache:
    """The overview per (account, project) for a few seconds: it is a glance, and on a big install
    its grouped counts cost a few hundred milliseconds, so reloads and many viewers share one."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str | None], tuple[float, Overview]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, account_id: str, project_id: str | None) -> Overview:
        key = (account_id, project_id)
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        fresh = overview(session, account_id, project_id)
        with self._lock:
            self._entries[key] = (now + self.ttl, fresh)
        return fresh


def overview(
    session: Session, account_id: str, project_id: str | None, now: datetime | None = None
) -> Overview:
    now = now or utcnow()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    pending = _capped_count(session, account_id, project_id, "pending")
    oldest_stmt = select(Event.received_at).where(Event.account_id == account_id, Event.status == "pending")
    if project_id is not None:
        oldest_stmt = oldest_stmt.where(Event.project_id == project_id)
    # The oldest pending event is the first by id (ids follow arrival): the pending index answers it.
    oldest = session.scalar(oldest_stmt.order_by(Event.id).limit(1))
    by_project = customer_counts(session, account_id, project_id)
    if project_id is None:
        # People, not memberships: one person in two products counts once.
        customers = int(session.scalar(select(func.count()).where(Customer.account_id == account_id)) or 0)
    else:
        customers = sum(total for _, _, total in by_project)
    return Overview(
        computed_at=now,
        start=start,
        hours=[int((start + timedelta(hours=h)).timestamp()) for h in range(HOURS)],
        customers=customers,
        by_project=by_project,
        sources=event_series(session, account_id, project_id, start),
        pending=pending,
        oldest_pending=oldest,
        failed=_capped_count(session, account_id, project_id, "failed"),
        deferred=_capped_count(session, account_id, project_id, "deferred"),
    )
