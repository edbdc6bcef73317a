"""Typed results. Each keeps the server's JSON in `raw`, so a field added by a newer server is
never out of reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    # `fromisoformat` only understands a trailing `Z` from Python 3.11 on.
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _time(value: str) -> datetime:
    moment = parse_time(value)
    assert moment is not None
    return moment


@dataclass(frozen=True)
class EventAccepted:
    """A stored identify/ping: `duplicate` is True when the message id had been stored before."""

    event_id: str
    duplicate: bool = False


@dataclass(frozen=True)
class ProjectState:
    status: str | None
    params: dict[str, Any]
    first_seen_at: datetime
    last_activity_at: datetime | None


@dataclass(frozen=True)
class Identity:
    source: str
    external_id: str


@dataclass(frozen=True)
class Customer:
    id: str
    email: str
    name: str | None
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime | None
    past_emails: list[str]
    projects: dict[str, ProjectState]
    identities: list[Identity]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Customer:
        return cls(
            id=data["id"],
            email=data["email"],
            name=data.get("name"),
            created_at=_time(data["created_at"]),
            updated_at=_time(data["updated_at"]),
            last_activity_at=parse_time(data.get("last_activity_at")),
            past_emails=list(data.get("past_emails") or []),
            projects={
                slug: ProjectState(
                    status=state.get("status"),
                    params=dict(state.get("params") or {}),
                    first_seen_at=_time(state["first_seen_at"]),
                    last_activity_at=parse_time(state.get("last_activity_at")),
                )
                for slug, state in (data.get("projects") or {}).items()
            },
            identities=[Identity(i["source"], i["external_id"]) for i in data.get("identities") or []],
            raw=data,
        )


@dataclass(frozen=True)
class TimelineEntry:
    """One change to a customer, with the event behind it (`event` is the raw event summary)."""

    id: int
    kind: str
    project: str | None
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    event: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimelineEntry:
        return cls(
            id=data["id"],
            kind=data["kind"],
            project=data.get("project"),
            occurred_at=_time(data["occurred_at"]),
            recorded_at=_time(data["recorded_at"]),
            data=dict(data.get("data") or {}),
            event=data.get("event"),
            raw=data,
        )
