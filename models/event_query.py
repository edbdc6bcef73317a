"""Which stored events an operator means: validated filters and the statement selecting them.

Shared by the event list (app), bulk replay (the API's dry run and the worker's background job)
and metrics-free tools, so the list and a replay started from the same filters select the same
events. Validation of raw query strings happens in `app/events_query.py`; this module trusts its input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, union

from tributary.models.base import isoformat
from tributary.models.customer import Customer, TimelineEntry
from tributary.models.event import Event
from tributary.models.sql import sqlite_unindexed


@dataclass(frozen=True, slots=True)
class EventFilters:
    account_id: str
    # A project-bound key's project, or the project the operator named.
    project_id: str | None = None
    status: str | None = None
    source_id: str | None = None
    connector: str | None = None
    type: str | None = None
    email: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"], data["until"] = isoformat(self.since), isoformat(self.until)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventFilters:
        values = dict(data)
        for name in ("since", "until"):
            if values.get(name):
                values[name] = datetime.fromisoformat(values[name].replace("Z", "+00:00"))
        return cls(**values)


def event_statement(filters: EventFilters, *columns: Any, dialect: str) -> Select[Any]:
    """SELECT `columns` (default: the Event) of the events `filters` select, on `dialect`."""
    f = filters
    in_account = Event.account_id == f.account_id
    if dialect == "sqlite" and f.email is not None:
        # A person's events are few: found through the address's index and the customer's
        # timeline, and the account tested on them. As a term of its own, SQLite served the account
        # from an account index and walked every event the account had (`sqlite_unindexed`).
        in_account = sqlite_unindexed(Event.account_id) == f.account_id
    stmt = select(*(columns or (Event,))).where(in_account)
    if f.project_id is not None:
        stmt = stmt.where(Event.project_id == f.project_id)
    if f.status is not None:
        stmt = stmt.where(Event.status == f.status)
    if f.source_id is not None:
        stmt = stmt.where(Event.source_id == f.source_id)
    if f.connector is not None:
        stmt = stmt.where(Event.channel == f.connector)
    if f.type is not None:
        stmt = stmt.where(Event.type == f.type)
    if f.email is not None:
        # Events whose payload named the address, and events that touched the customer holding it:
        # one set of ids, each half found through its own index. As `email = … OR id IN (…)`,
        # PostgreSQL could use neither and read every event of the account (0.35 s a page at a
        # million events; bench/README.md).
        touched = (
            select(TimelineEntry.event_id)
            .join(Customer, Customer.id == TimelineEntry.customer_id)
            .where(Customer.account_id == f.account_id, Customer.email == f.email)
        )
        named = select(Event.id).where(Event.email == f.email)
        stmt = stmt.where(Event.id.in_(union(touched, named)))
    if f.since is not None:
        stmt = stmt.where(Event.received_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(Event.received_at < f.until)
    return stmt
