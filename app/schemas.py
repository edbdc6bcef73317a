"""Request and response schemas. They validate input and describe the API: /openapi.json is
generated from these models, so the document cannot drift from what the server accepts. The
identify/ping messages are connectors/identify.py's, shared with the `standard` connector."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, model_validator

from tributary.connectors.event_rules import normalize_email
from tributary.connectors.identify import (
    NO_NUL,
    PARAM_KEY,
    PROJECT_SLUG,
    SLUG,
    IdentifyRequest,
    PingRequest,
    ProjectSlug,
    StrictModel,
    parse_timestamp,
)
from tributary.models.account import SCOPES

__all__ = [
    "NO_NUL",
    "PARAM_KEY",
    "PROJECT_SLUG",
    "SLUG",
    "IdentifyRequest",
    "PingRequest",
    "StrictModel",
    "normalize_email",
    "parse_timestamp",
]


class EventAccepted(BaseModel):
    event_id: str
    duplicate: bool = False


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ProjectCreate(StrictModel):
    slug: ProjectSlug
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] | None = None


class ProjectOut(BaseModel):
    id: str
    slug: str
    name: str
    created_at: str


class ProjectList(BaseModel):
    data: list[ProjectOut]


class KeyCreate(StrictModel):
    scopes: Annotated[
        list[Annotated[str, Field(json_schema_extra={"enum": list(SCOPES)})]],
        Field(min_length=1, examples=[["ingest"]]),
    ]
    project: ProjectSlug | None = None
    name: Annotated[str, Field(max_length=200, pattern=NO_NUL)] = ""

    @model_validator(mode="after")
    def _known_scopes(self) -> KeyCreate:
        if unknown := sorted(set(self.scopes) - set(SCOPES)):
            raise ValueError(f"unknown scopes {unknown}; choose among {list(SCOPES)}")
        return self


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    project: str | None
    created_at: str
    revoked_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


class KeyList(BaseModel):
    data: list[KeyOut]


class ProjectState(BaseModel):
    status: str | None
    params: dict[str, Any]
    first_seen_at: str
    last_activity_at: str | None


class IdentityOut(BaseModel):
    source: str
    external_id: str


class CustomerOut(BaseModel):
    id: str
    email: str
    name: str | None
    created_at: str
    updated_at: str
    last_activity_at: str | None
    past_emails: list[str]
    projects: dict[str, ProjectState]
    identities: list[IdentityOut]


class CustomerList(BaseModel):
    """A page of customers"""

    data: list[CustomerOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class TimelineEvent(BaseModel):
    id: str
    type: str
    channel: str = Field(description="`identify`/`ping` for the API, the connector's name for webhooks.")
    source: str | None = Field(description="The webhook source id (`src_…`); null for API events.")
    occurred_at: str
    received_at: str


class TimelineEntry(BaseModel):
    id: int
    kind: str = Field(description="The event type that caused the change.")
    project: str | None
    occurred_at: str
    recorded_at: str
    data: dict[str, Any] = Field(
        description="What happened: `changed` (field -> [old, new]), `stale` (ignored older writes), "
        "`created`, `joined_project`, `identity_linked`, `identity_removed`."
    )
    event: TimelineEvent | None = Field(description="The event behind the change; null if it was deleted.")


class Timeline(BaseModel):
    """A page of a customer's timeline, newest first"""

    data: list[TimelineEntry]
    next_cursor: str | None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
