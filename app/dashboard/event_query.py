"""A minimal, read-only view of stored events for the dashboard.

Interim: the ops API (events list/detail, replay, failed jobs) is being built separately. When it
lands, the dashboard's events pages should call its query module instead of this one.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.customer_query import Reader
from models import EVENT_STATUSES, CustomerChange, Event, Project, Source

PAGE = 50
MAX_BODY_CHARS = 64 * 1024
EVENT_ID = re.compile(r"^evt_[0-9a-z]{26}$")
_SENSITIVE = re.compile(r"authorization|signature|secret|token|cookie|api[-_]?key|password", re.I)
LIST_COLUMNS = (
    Event.id,
    Event.type,
    Event.channel,
    Event.status,
    Event.email,
    Event.source_id,
    Event.occurred_at,
    Event.received_at,
    Event.attempts,
)


@dataclass(frozen=True, slots=True)
class EventFilters:
    status: str | None = None
    source: str | None = None
    email: str | None = None
    before: str | None = None


def clean_filters(args: dict[str, str]) -> EventFilters:
    """Unknown or malformed values are dropped: this page has nothing to reject."""
    status = args.get("status") if args.get("status") in EVENT_STATUSES else None
    source = args.get("source") or None
    before = args.get("before") if EVENT_ID.match(args.get("before") or "") else None
    email = (args.get("email") or "").strip().lower() or None
    return EventFilters(
        status,
        source if source and len(source) <= 40 else None,
        email if email and len(email) <= 320 else None,
        before,
    )


def list_events(session: Session, reader: Reader, filters: EventFilters) -> tuple[list[Any], str | None]:
    stmt = select(*LIST_COLUMNS, Project.slug).join(Project, Project.id == Event.project_id)
    stmt = stmt.where(Event.account_id == reader.account_id)
    if reader.project_id is not None:
        stmt = stmt.where(Event.project_id == reader.project_id)
    if filters.status is not None:
        stmt = stmt.where(Event.status == filters.status)
    if filters.source is not None:
        stmt = stmt.where(Event.source_id == filters.source)
    if filters.email is not None:
        stmt = stmt.where(Event.email == filters.email)
    if filters.before is not None:
        stmt = stmt.where(Event.id < filters.before)
    rows = list(session.execute(stmt.order_by(Event.id.desc()).limit(PAGE + 1)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return rows, (rows[-1].id if more else None)


def mask_headers(headers: dict[str, Any]) -> list[tuple[str, str]]:
    masked = []
    for name, value in sorted(headers.items()):
        text = str(value)
        if _SENSITIVE.search(name):
            text = f"•••• ({len(text)} characters)"
        masked.append((name, text))
    return masked


def body_text(body: bytes) -> tuple[str, bool]:
    """The raw body, pretty-printed when it is JSON; and whether it was cut."""
    text = body.decode("utf-8", errors="replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return text[:MAX_BODY_CHARS], len(text) > MAX_BODY_CHARS


@dataclass(frozen=True, slots=True)
class EventDetail:
    event: Event
    project: str
    source: Source | None
    customers: list[str]


def find_event(session: Session, reader: Reader, event_id: str) -> EventDetail | None:
    if not EVENT_ID.match(event_id):
        return None
    stmt = select(Event, Project.slug).join(Project, Project.id == Event.project_id)
    stmt = stmt.where(Event.id == event_id, Event.account_id == reader.account_id)
    if reader.project_id is not None:
        stmt = stmt.where(Event.project_id == reader.project_id)
    row = session.execute(stmt).first()
    if row is None:
        return None
    event, slug = row
    source = session.get(Source, event.source_id) if event.source_id else None
    touched = session.scalars(
        select(CustomerChange.customer_id).where(CustomerChange.event_id == event.id).distinct()
    )
    return EventDetail(event, slug, source, sorted(touched))
