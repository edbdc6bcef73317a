"""Every inbound delivery, stored raw before it is acknowledged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tributary.models.base import Base, sortable_id, utcnow

# `deferred`: waiting for an event that makes its person known (workers/deferred.py).
EVENT_STATUSES = ("pending", "processed", "ignored", "failed", "deferred")

# The unique key every insert of events names as its ON CONFLICT target (app/event_store.py,
# workers/importers/pipeline.py): a row whose key was stored before is a duplicate and is skipped.
# Only this one: without a target, every unique index is an arbiter, so an INSERT also probed the
# primary key before each row (9 % of PostgreSQL's time in a 100-row batch), and a new event id
# that collided with a stored one would have been skipped as a duplicate; named, that is an error.
DEDUP_KEY = ("account_id", "dedup_key")
# Its unique constraint, as the metadata's naming convention names it: the ingest's shared write
# tells a duplicate from any other error by it (app/pg_event_writes.py; tests/app/test_group_commit.py).
DEDUP_CONSTRAINT = "uq_events_account_id_dedup_key"

# Events whose raw body the retention purge empties once old enough (workers/retention.py): applied,
# and not emptied yet. Written out, not bound: the purge's query names this very predicate, so a
# planner can prove it implies the partial index's (SQLite does not look into bound values).
PURGEABLE = ("processed", "ignored")
PURGEABLE_ROWS = f"status IN ({', '.join(repr(status) for status in PURGEABLE)}) AND purged_at IS NULL"


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # Exactly-once intake: (source, provider event id) for webhooks, (project, message id) for the
        # API, folded into one key so a single unique index covers both and NULL means "no key".
        UniqueConstraint(*DEDUP_KEY),
        # The project, and the account through it, in one key (migration 0020): the database checks a
        # foreign key once per row written, and one check instead of two (the account, the project)
        # takes about 7 % off PostgreSQL's CPU for a 100-row insert. It is stricter too: an event's project
        # must belong to its account. Deleting an account deletes its projects, and so its events.
        ForeignKeyConstraint(
            ["project_id", "account_id"], ["projects.id", "projects.account_id"], ondelete="CASCADE"
        ),
        # The worker's claim query reads only pending rows in arrival order.
        Index(
            "ix_events_pending",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The event list by email and an erasure's events: equality only, so on PostgreSQL a hash
        # index (migration 0022), whose insert hashes the address once where the B-tree compared it
        # in the collation at each level of a random descent: 8 % of the ingest's INSERT.
        Index("ix_events_email", "email", postgresql_using="hash"),
        # The retention purge, oldest first: partial (migration 0022), so an event gets its entry
        # when applied, none while pending (every ingest), and loses it to the purge.
        Index(
            "ix_events_purgeable",
            "received_at",
            "id",
            postgresql_where=text(PURGEABLE_ROWS),
            sqlite_where=text(PURGEABLE_ROWS),
        ),
        # The operator's event list (newest first, since/until).
        Index("ix_events_account_received", "account_id", "received_at", "id"),
        # The event list filtered by status and the overview's backlog counts: a rare status is a
        # seek here, not a walk over every event of the account.
        Index("ix_events_account_status_received", "account_id", "status", "received_at", "id"),
        # Deferred events by the identity they wait for; partial (migration 0014): the lookup always
        # asks for deferred events, and the others (nearly all) then add no entry on every write.
        Index(
            "ix_events_awaiting",
            "account_id",
            "awaiting_source",
            "awaiting_id",
            postgresql_where=text("status = 'deferred'"),
            sqlite_where=text("status = 'deferred'"),
        ),
        # The event list by source and the foreign key's SET NULL ask for one source: events from
        # the API, which have none, add no entry (migration 0014).
        Index(
            "ix_events_source_id",
            "source_id",
            postgresql_where=text("source_id IS NOT NULL"),
            sqlite_where=text("source_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: sortable_id("evt"))
    account_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    source_id: Mapped[str | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    # "identify" / "ping" for the API, the connector's name for webhooks.
    channel: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(200))
    provider_event_id: Mapped[str | None] = mapped_column(String(255))
    dedup_key: Mapped[str | None] = mapped_column(String(320))
    # SHA-256 of the canonical validated message, written by versions before 2026-12-03 for API
    # events with a message id and still read for them; newer events leave it empty and a retry is
    # compared with the stored body (docs/input-rules.md).
    body_hash: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    occurred_at: Mapped[datetime] = mapped_column()
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The connector's split of the delivery (one webhook may carry several events).
    payload: Mapped[dict[str, Any] | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[list[Any] | None] = mapped_column()
    processed_at: Mapped[datetime | None] = mapped_column()
    # Set when retention removed the raw body and payload (the row, changes and timeline stay).
    purged_at: Mapped[datetime | None] = mapped_column()
    # A deferred event's awaited identity (workers/deferred.py).
    awaiting_source: Mapped[str | None] = mapped_column(String(64))
    awaiting_id: Mapped[str | None] = mapped_column(String(255))

    @property
    def awaiting(self) -> str | None:
        """The awaited identity as `<source>:<external id>`, for people reading events."""
        if self.awaiting_source is None or self.awaiting_id is None:
            return None
        return f"{self.awaiting_source}:{self.awaiting_id}"
