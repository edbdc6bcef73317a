"""A customer's timeline: its `customer_changes` rows with the events that caused them, newest
(by event time) first, in keyset pages with the same signed cursors as the customer list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app.customer_query import Reader
from tributary.app.pagination import CursorCodec, SortSpec, fetch_page, fingerprint
from tributary.models import Event, Project, TimelineEntry
from tributary.models.base import isoformat

# Event time orders the timeline, so a late delivery lands where it happened; the change id breaks ties.
SORT = SortSpec(TimelineEntry.occurred_at, TimelineEntry.id, descending=True, nullable=False)


@dataclass(frozen=True, slots=True)
class TimelinePage:
    entries: list[dict[str, Any]]
    next_cursor: str | None


EVENT_COLUMNS = (Event.id, Event.type, Event.channel, Event.source_id, Event.occurred_at, Event.received_at)


def _event_json(columns: tuple[Any, ...]) -> dict[str, Any] | None:
    event_id, kind, channel, source_id, occurred_at, received_at = columns
    if event_id is None:
        return None  # the event row is gone (customer_changes.event_id is SET NULL)
    return {
        "id": event_id,
        "type": kind,
        "channel": channel,
        "source": source_id,
        "occurred_at": isoformat(occurred_at),
        "received_at": isoformat(received_at),
    }


def customer_timeline(
    session: Session, reader: Reader, customer_id: str, *, limit: int, cursor: str | None, secret_key: str
) -> TimelinePage:
    """`customer_id` must already be known visible to `reader`. A project-bound reader sees only its
    project's rows: customer-level rows (no project) may describe other projects."""
    codec = CursorCodec(secret_key, "timeline")
    binding = fingerprint(reader.account_id, reader.project_id, customer_id)
    after = codec.decode(cursor, binding, SORT) if cursor is not None else None
    # The event's descriptive columns only: its raw body and headers stay out of this query.
    stmt = (
        select(TimelineEntry, Project.slug, *EVENT_COLUMNS)
        .outerjoin(Project, Project.id == TimelineEntry.project_id)
        .outerjoin(Event, Event.id == TimelineEntry.event_id)
        .where(TimelineEntry.customer_id == customer_id)
    )
    if reader.project_id is not None:
        stmt = stmt.where(TimelineEntry.project_id == reader.project_id)
    rows, position = fetch_page(session, stmt, SORT, limit, after)
    entries = []
    for row in rows:
        change, slug = row[0], row[1]
        entries.append(
            {
                "id": change.id,
                "kind": change.kind,
                "project": slug,
                "occurred_at": isoformat(change.occurred_at),
                "recorded_at": isoformat(change.recorded_at),
                "data": change.data,
                "event": _event_json(tuple(row[2 : 2 + len(EVENT_COLUMNS)])),
            }
        )
    return TimelinePage(entries, codec.encode(position, binding) if position is not None else None)
