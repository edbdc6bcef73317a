"""Provenance: for each status, param and name a customer holds, the event that set it and when.

Derived from the timeline (`customer_changes`): every applied write is recorded there as
`changed: {field: [old, new]}` under its event time, and a write only applies when it is newer
than the one before (stale writes are recorded apart, as `stale`). So the newest row by event time
that changed a field is the write that set its current value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app.customer_query import Reader
from tributary.models import Event, Project, TimelineEntry

# Enough for any real customer's history; a pathological one shows "unknown" for old writes.
MAX_ROWS = 5000
SKIPPED = {"last_activity_at"}


@dataclass(frozen=True, slots=True)
class Origin:
    event_id: str | None
    event_type: str
    occurred_at: datetime
    value: Any


# (project slug, field) -> origin; the customer-level `name` is under project None.
Provenance = dict[tuple[str | None, str], Origin]


def provenance(session: Session, reader: Reader, customer_id: str) -> Provenance:
    stmt = (
        select(
            Project.slug, TimelineEntry.data, TimelineEntry.occurred_at, TimelineEntry.event_id, Event.type
        )
        .outerjoin(Project, Project.id == TimelineEntry.project_id)
        .outerjoin(Event, Event.id == TimelineEntry.event_id)
        .where(TimelineEntry.customer_id == customer_id)
        .order_by(TimelineEntry.occurred_at.desc(), TimelineEntry.id.desc())
        .limit(MAX_ROWS)
    )
    if reader.project_id is not None:
        stmt = stmt.where(TimelineEntry.project_id == reader.project_id)
    found: Provenance = {}
    for slug, data, occurred_at, event_id, event_type in session.execute(stmt):
        changed = (data or {}).get("changed") or {}
        for field, values in changed.items():
            if field in SKIPPED:
                continue
            key = (None, field) if field == "name" else (slug, field)
            if key not in found:
                new = values[1] if isinstance(values, list) and len(values) == 2 else values
                found[key] = Origin(event_id, event_type or "event (erased)", occurred_at, new)
    return found
