"""Response and request schemas of the operator's API (events, replays, failed jobs, rejections).
They describe the routes in /openapi.json; the views build plain dicts of the same shape."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventItem(BaseModel):
    """A stored event"""

    id: str
    source: str | None = Field(description="Source id; null for identify/ping.")
    connector: str = Field(description="Connector name, or `identify`/`ping` for the API.")
    project: str | None
    provider_event_id: str | None
    type: str
    email: str | None
    status: str = Field(description="pending, processed, ignored, failed or deferred (waiting for a person).")
    attempts: int
    last_error: str | None
    occurred_at: str
    received_at: str
    processed_at: str | None
    purged_at: str | None = Field(description="When retention removed the raw body.")
    awaiting: str | None = Field(
        default=None, description="A deferred event's awaited identity, `<source>:<external id>`."
    )


class EventList(BaseModel):
    """A page of events, newest first"""

    data: list[EventItem]
    next_cursor: str | None


class Attempt(BaseModel):
    number: int
    at: str
    outcome: str
    error: str | None


class EventChange(BaseModel):
    customer: dict[str, Any] = Field(description="`id` and current `email` of the customer touched.")
    project: str | None
    kind: str
    occurred_at: str
    recorded_at: str
    data: dict[str, Any]


class EventDetail(EventItem):
    """An event with its raw body, masked headers, attempts and changes"""

    body: Any = Field(description="The raw body: parsed JSON, or base64 text (see body_encoding).")
    body_encoding: str | None = Field(description="`json`, `base64`, or null once purged.")
    headers: dict[str, Any] = Field(description="Stored headers; signatures and secrets masked.")
    ignore_reason: str | None
    attempt_history: list[Attempt]
    changes: list[EventChange]


class FieldDiff(BaseModel):
    customer_id: str
    email: str | None
    field: str = Field(description="`name`, `projects.<slug>.status`, `projects.<slug>.params.<key>`, ...")
    before: Any
    after: Any


class EventReplayOut(BaseModel):
    """What replaying an event did (or, in a dry run, would do)"""

    event_id: str
    dry_run: bool
    status_before: str
    status: str
    error: str | None
    diff: list[FieldDiff]


class ReplayRequest(BaseModel):
    """Which events to replay: the list's filters (at least one) and `dry_run`"""

    model_config = ConfigDict(extra="forbid")

    status: str | None = None
    source: str | None = None
    connector: str | None = None
    type: str | None = None
    email: str | None = None
    project: str | None = None
    since: str | None = None
    until: str | None = None
    dry_run: bool = False


class ReplayPlan(BaseModel):
    """A dry run of a bulk replay: how many events, and the diffs of a sample"""

    dry_run: bool
    count: int
    sample: list[EventReplayOut]


class ReplayOut(BaseModel):
    """A background replay and its progress"""

    id: str
    state: str = Field(description="queued, running, completed, cancelled or failed.")
    total: int
    done: int
    failed: int
    filters: dict[str, Any]
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class FailedJob(BaseModel):
    """A job in RQ's failed registry"""

    id: str
    event_id: str | None
    exception_type: str | None
    exception: str | None
    failed_at: str | None
    attempts: int | None = Field(description="The event's attempts so far (null for non-event jobs).")
    event_status: str | None


class FailedJobList(BaseModel):
    """Failed jobs, most recent first"""

    data: list[FailedJob]


class RetryAllOut(BaseModel):
    """Failed jobs requeued"""

    requeued: int
    job_ids: list[str]


class Rejection(BaseModel):
    at: str
    reason: str
    status: int
    remote_addr: str | None
    user_agent: str | None
    body_bytes: int | None
    body_sha256: str | None


class RejectionsOut(BaseModel):
    """Refused deliveries of a source: counts per reason and the last 100"""

    source: str
    counts: dict[str, int]
    recent: list[Rejection]
