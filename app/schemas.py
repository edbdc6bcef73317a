"""Request and response schemas. They validate input and describe the API: /openapi.json is
generated from these models, so the document cannot drift from what the server accepts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from connectors.safe_json import problem
from models.account import SCOPES

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PROJECT_SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"
# Param keys appear in query strings (`params.<key>=`) and JSON paths: printable, no quotes.
PARAM_KEY = re.compile(r"^[^\"\\\x00-\x1f\x7f]{1,128}$")
MAX_PARAMS = 200
# Free text may hold anything but NUL (PostgreSQL cannot store it); stated in /openapi.json too.
NO_NUL = r"^[^\x00]*$"


def normalize_email(value: str) -> str:
    """Trim and lower-case, after checking the address is sane (syntax only, no DNS)."""
    candidate = value.strip()
    try:
        validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return candidate.lower()


def parse_timestamp(value: str) -> datetime:
    """ISO 8601; a value without an offset is taken as UTC. Its UTC instant must exist:
    `0001-01-01T00:00:00+01:00` is a year-0 time, which Python cannot represent."""
    try:
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (TypeError, ValueError):
        raise ValueError("expected an ISO 8601 timestamp such as 2026-11-21T09:30:00Z") from None
    except OverflowError:
        raise ValueError("the timestamp is outside the years 1 to 9999 in UTC") from None


def _check_params(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_PARAMS:
        raise ValueError(f"at most {MAX_PARAMS} params per request")
    for key, item in value.items():
        if not PARAM_KEY.match(key):
            raise ValueError(f"param key {key!r} must be 1-128 printable characters without quotes")
        if item is None:
            raise ValueError(f"param {key!r} is null; use params_unset to remove a param")
    return value


def _check_keys(value: list[str]) -> list[str]:
    for key in value:
        if not PARAM_KEY.match(key):
            raise ValueError(f"param key {key!r} must be 1-128 printable characters without quotes")
    return value


Email = Annotated[
    str,
    Field(max_length=320, examples=["ada@example.com"], json_schema_extra={"format": "email"}),
    AfterValidator(normalize_email),
]
Timestamp = Annotated[
    str,
    Field(
        description="ISO 8601 event time; orders writes. Default: time of receipt. At most 5 minutes "
        "ahead of the server's clock.",
        max_length=64,
        json_schema_extra={"format": "date-time"},
    ),
]
# JSON values of any shape; numbers must be finite and text free of NUL (checked by `_Strict`).
Params = Annotated[
    dict[str, JsonValue],
    Field(max_length=MAX_PARAMS, json_schema_extra={"propertyNames": {"pattern": PARAM_KEY.pattern}}),
    AfterValidator(_check_params),
]
ParamKeys = Annotated[
    list[Annotated[str, Field(pattern=PARAM_KEY.pattern)]],
    Field(max_length=MAX_PARAMS),
    AfterValidator(_check_keys),
]
MessageId = Annotated[
    str, Field(min_length=1, max_length=255, pattern=NO_NUL, description="Deduplicates retries.")
]
ProjectSlug = Annotated[str, Field(pattern=PROJECT_SLUG, examples=["acme-app"])]


class _Strict(BaseModel):
    # Unknown fields are an error, so a typo (`paramz`) is a 400 rather than silently dropped.
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # pydantic's JSON parser reads NaN, Infinity and 1e400 (as inf) even into JsonValue, and
        # NUL inside any text; none of them can be stored (connectors/safe_json.py).
        if (found := problem(data)) is not None:
            raise ValueError(found)
        return data


StrictModel = _Strict


class PingRequest(_Strict):
    email: Email
    project: ProjectSlug | None = None
    timestamp: Timestamp | None = None
    message_id: MessageId | None = None

    @model_validator(mode="after")
    def _timestamp_parses(self) -> PingRequest:
        if self.timestamp is not None:
            parse_timestamp(self.timestamp)
        return self

    @property
    def occurred_at(self) -> datetime | None:
        return parse_timestamp(self.timestamp) if self.timestamp is not None else None


class IdentifyRequest(PingRequest):
    name: Annotated[str, Field(max_length=400, pattern=NO_NUL)] | None = None
    status: Annotated[str, Field(pattern=SLUG, examples=["paid"])] | None = None
    params: Params = Field(default_factory=dict)
    params_once: Params = Field(default_factory=dict)
    params_unset: ParamKeys = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_conflicting_keys(self) -> IdentifyRequest:
        sets, once, unset = set(self.params), set(self.params_once), set(self.params_unset)
        if clash := (sets & once) | (sets & unset) | (once & unset):
            raise ValueError(
                f"a key may appear in only one of params, params_once, params_unset: {sorted(clash)}"
            )
        return self


class EventAccepted(BaseModel):
    event_id: str
    duplicate: bool = False


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ProjectCreate(_Strict):
    slug: ProjectSlug
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] | None = None


class ProjectOut(BaseModel):
    id: str
    slug: str
    name: str
    created_at: str


class ProjectList(BaseModel):
    data: list[ProjectOut]


class KeyCreate(_Strict):
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
