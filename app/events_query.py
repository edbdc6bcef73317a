"""Reading stored events for operators: parse the list's filters, page through them, and render
one event with its raw body, masked headers, attempts and the changes it produced.

Shared by `GET /v1/events…` and `tributary events …`. Every query is limited to the reader's
account and, for a project-bound key, its project; an event out of reach is a 404.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app.customer_args import (
    Problems,
    email_arg,
    parse_limit,
    parse_since,
    reject_unknown,
    single_arg,
)
from tributary.app.customer_query import Reader, resolve_project
from tributary.app.domain_errors import NotFound
from tributary.app.pagination import CursorCodec, SortSpec, fetch_page, fingerprint
from tributary.app.schemas import PROJECT_SLUG
from tributary.models import EVENT_STATUSES, Customer, Event, EventAttempt, Project, TimelineEntry
from tributary.models.base import isoformat
from tributary.models.event_query import EventFilters, event_statement

# `deferred` (waiting for an identity) is a status the worker may set; filtering on it is valid.
STATUSES = EVENT_STATUSES
FILTER_ARGS = ("status", "source", "connector", "type", "email", "project", "since", "until")
LIST_ARGS = (*FILTER_ARGS, "limit", "cursor")
SOURCE_ID = re.compile(r"^src_[0-9A-Za-z]{1,36}$")
CONNECTOR = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_TYPE_CHARS = 200
# Newest first by receipt; the id (time-ordered, unique) breaks ties.
SORT = SortSpec(Event.received_at, Event.id, descending=True, nullable=False)
# Stored headers that authenticate a delivery are never shown back, even to admins.
SENSITIVE_HEADER = re.compile(r"signature|secret|authorization|token|api[-_]?key|cookie", re.IGNORECASE)
MAX_CHANGES_SHOWN = 500
MAX_ATTEMPTS_SHOWN = 200


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Validated filters as given (the project as a slug); `bind` resolves them for a reader."""

    status: str | None = None
    source: str | None = None
    connector: str | None = None
    type: str | None = None
    email: str | None = None
    project: str | None = None
    since: str | None = None
    until: str | None = None

    def bind(self, session: Session, reader: Reader) -> EventFilters:
        return EventFilters(
            account_id=reader.account_id,
            project_id=resolve_project(session, reader, self.project),
            status=self.status,
            source_id=self.source,
            connector=self.connector,
            type=self.type,
            email=self.email,
            since=parse_since(self.since) if self.since else None,
            until=parse_since(self.until) if self.until else None,
        )


def parse_filters(args: Mapping[str, list[str]], allowed: tuple[str, ...] = LIST_ARGS) -> EventQuery:
    """Validate filter arguments (name -> values), reporting every problem at once as a 400."""
    problems = Problems()
    reject_unknown(args, allowed, problems, params=False)
    text = {name: single_arg(args, name, problems) for name in FILTER_ARGS}
    query = _check(text, problems)
    problems.raise_any()
    return query


def parse_filter_body(data: Mapping[str, Any], problems: Problems) -> EventQuery:
    """The same filters from a JSON body (bulk replay); strings only."""
    text: dict[str, str | None] = {}
    for name in FILTER_ARGS:
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.add(name, "must be a non-empty string")
            value = None
        text[name] = value
    return _check(text, problems)


def _check(text: Mapping[str, str | None], problems: Problems) -> EventQuery:
    status = text.get("status")
    if status is not None and status not in STATUSES:
        problems.add("status", f"choose among {', '.join(STATUSES)}")
    source = text.get("source")
    if source is not None and not SOURCE_ID.match(source):
        problems.add("source", "a source id (`src_…`)")
    connector = text.get("connector")
    if connector is not None and not CONNECTOR.match(connector):
        problems.add("connector", "a connector name (lower-case letters, digits, `-` and `_`)")
    kind = text.get("type")
    if kind is not None and len(kind) > MAX_TYPE_CHARS:
        problems.add("type", f"at most {MAX_TYPE_CHARS} characters")
    email = email_arg(text.get("email"), problems)
    project = text.get("project")
    if project is not None and not re.match(PROJECT_SLUG, project):
        problems.add("project", "not a project slug (lower-case letters, digits, dashes)")
    moments = {}
    for name in ("since", "until"):
        raw = text.get(name)
        if raw is None:
            continue
        try:
            moments[name] = parse_since(raw)
        except ValueError as exc:
            problems.add(name, str(exc))
    if len(moments) == 2 and moments["since"] >= moments["until"]:
        problems.add("until", "must be later than `since`")
    return EventQuery(status, source, connector, kind, email, project, text.get("since"), text.get("until"))


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[dict[str, Any]]
    next_cursor: str | None


def _slugs(session: Session, project_ids: set[str]) -> dict[str, str]:
    if not project_ids:
        return {}
    rows = session.execute(select(Project.id, Project.slug).where(Project.id.in_(project_ids)))
    return {pid: slug for pid, slug in rows}


def event_item(event: Event, project: str | None) -> dict[str, Any]:
    return {
        "id": event.id,
        "source": event.source_id,
        "connector": event.channel,
        "project": project,
        "provider_event_id": event.provider_event_id,
        "type": event.type,
        "email": event.email,
        "status": event.status,
        "attempts": event.attempts,
        "last_error": event.last_error,
        "occurred_at": isoformat(event.occurred_at),
        "received_at": isoformat(event.received_at),
        "processed_at": isoformat(event.processed_at),
        "purged_at": isoformat(event.purged_at),
        # A deferred event waits for this identity (`<source>:<external id>`) to become known.
        "awaiting": event.awaiting,
    }


def list_events(
    session: Session, reader: Reader, query: EventQuery, *, limit: int, cursor: str | None, secret_key: str
) -> EventPage:
    filters = query.bind(session, reader)
    codec = CursorCodec(secret_key, "events")
    binding = fingerprint(reader.account_id, reader.project_id, filters.to_json())
    after = codec.decode(cursor, binding, SORT) if cursor is not None else None
    stmt = event_statement(filters, dialect=session.get_bind().dialect.name)
    rows, position = fetch_page(session, stmt, SORT, limit, after)
    events: list[Event] = [row[0] for row in rows]
    slugs = _slugs(session, {e.project_id for e in events})
    return EventPage(
        [event_item(e, slugs.get(e.project_id)) for e in events],
        codec.encode(position, binding) if position is not None else None,
    )


def parse_page(args: Mapping[str, list[str]]) -> tuple[EventQuery, int, str | None]:
    query = parse_filters(args)
    problems = Problems()
    limit = parse_limit(single_arg(args, "limit", problems), problems)
    cursor = single_arg(args, "cursor", problems)
    problems.raise_any()
    return query, limit, cursor


def find_event(session: Session, reader: Reader, event_id: str, *, lock: bool = False) -> Event:
    """An event the reader may see, else 404 (the same answer whether or not it exists)."""
    if not re.fullmatch(r"evt_[0-9a-z]{26}", event_id):
        raise NotFound("event_not_found", "no such event")
    stmt = select(Event).where(Event.id == event_id, Event.account_id == reader.account_id)
    if reader.project_id is not None:
        stmt = stmt.where(Event.project_id == reader.project_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    event = session.scalar(stmt)
    if event is None:
        raise NotFound("event_not_found", "no such event")
    return event


def body_json(body: bytes) -> dict[str, Any]:
    """The raw body as JSON when it is JSON (what providers send), else base64."""
    try:
        return {"body": json.loads(body), "body_encoding": "json"}
    except (ValueError, UnicodeDecodeError):
        return {"body": base64.b64encode(body).decode(), "body_encoding": "base64"}


def masked_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {name: "[masked]" if SENSITIVE_HEADER.search(name) else value for name, value in headers.items()}


def event_detail(session: Session, event: Event) -> dict[str, Any]:
    project = session.scalar(select(Project.slug).where(Project.id == event.project_id))
    data = event_item(event, project)
    if event.purged_at is not None:
        data.update(body=None, body_encoding=None)
    else:
        data.update(body_json(event.body))
    data["headers"] = masked_headers(event.headers or {})
    data["ignore_reason"] = event.last_error if event.status == "ignored" else None
    attempts = session.scalars(
        select(EventAttempt)
        .where(EventAttempt.event_id == event.id)
        .order_by(EventAttempt.id)
        .limit(MAX_ATTEMPTS_SHOWN)
    )
    data["attempt_history"] = [
        {"number": a.number, "at": isoformat(a.attempted_at), "outcome": a.outcome, "error": a.error}
        for a in attempts
    ]
    rows = session.execute(
        select(TimelineEntry, Customer.email, Project.slug)
        .outerjoin(Customer, Customer.id == TimelineEntry.customer_id)
        .outerjoin(Project, Project.id == TimelineEntry.project_id)
        .where(TimelineEntry.event_id == event.id)
        .order_by(TimelineEntry.id)
        .limit(MAX_CHANGES_SHOWN)
    )
    data["changes"] = [
        {
            "customer": {"id": change.customer_id, "email": email},
            "project": slug,
            "kind": change.kind,
            "occurred_at": isoformat(change.occurred_at),
            "recorded_at": isoformat(change.recorded_at),
            "data": change.data,
        }
        for change, email, slug in rows
    ]
    return data
