"""Identify and ping, Tributary's own two messages, as an internal connector would own them: the
models that validate them and the one function that turns one into a `CustomerChange`.

The identify/ping API (app/api/ingest.py, batch.py) validates requests with these models (and
/openapi.json describes them); the `standard` connector validates its `data` with them; the worker
turns a stored API message into its change with `identify_change`, as `standard` does for a
webhook, so the two paths cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    model_validator,
)

from tributary.connectors.changes import CustomerChange
from tributary.connectors.event_rules import FUTURE_TOLERANCE_SECONDS, MAX_EMAIL_CHARS, normalize_email
from tributary.connectors.safe_json import problem, storable_text

__all__ = [
    "CHANNELS",
    "MAX_PARAMS",
    "NO_NUL",
    "PARAM_KEY",
    "PROJECT_SLUG",
    "SLUG",
    "IdentifyRequest",
    "PingRequest",
    "StrictModel",
    "identify_change",
    "parse_timestamp",
    "validate_message",
]

CHANNELS = ("identify", "ping")

SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"
PROJECT_SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"
# Param keys appear in query strings (`params.<key>=`) and JSON paths: printable, no quotes.
PARAM_KEY = re.compile(r"^[^\"\\\x00-\x1f\x7f]{1,128}$")
MAX_PARAMS = 200
# Free text may hold anything but NUL (PostgreSQL cannot store it); stated in /openapi.json too.
NO_NUL = r"^[^\x00]*$"


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
    Field(max_length=MAX_EMAIL_CHARS, examples=["ada@example.com"], json_schema_extra={"format": "email"}),
    AfterValidator(normalize_email),
]
Timestamp = Annotated[
    str,
    Field(
        description="ISO 8601 event time; orders writes. Default: time of receipt. At most "
        f"{FUTURE_TOLERANCE_SECONDS // 60} minutes ahead of the server's clock.",
        max_length=64,
        json_schema_extra={"format": "date-time"},
    ),
]
# JSON values of any shape; numbers must be finite and text free of NUL (checked by `StrictModel`).
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
    def _storable(cls, data: Any, info: ValidationInfo) -> Any:
        # pydantic's JSON parser reads NaN, Infinity and 1e400 (as inf) even into JsonValue, and
        # NUL inside any text; none of them can be stored (connectors/safe_json.py). Skipped when
        # `validate_message` found none of their spellings in the JSON text.
        if info.context is not None and info.context.get(_TEXT_CHECKED):
            return data
        if (found := problem(data)) is not None:
            raise ValueError(found)
        return data


StrictModel = _Strict
# `model_validate_json`'s context when the JSON text was checked (`validate_message`).
_TEXT_CHECKED = "storable_text_checked"
_Message = TypeVar("_Message", bound=BaseModel)


def validate_message(model: type[_Message], body: bytes, *, storable: bool | None = None) -> _Message:
    """`model.model_validate_json(body)`, without walking the decoded message for unstorable
    values when its text shows none can be there (`storable_text`): a tenth of identify's
    validation for the plain bodies nearly every client sends. `storable`: whether that is
    already known from how the text was written (None: scan it)."""
    if storable is None:
        storable = storable_text(body)
    context = {_TEXT_CHECKED: True} if storable else None
    return model.model_validate_json(body, context=context)


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
        if not self.params_once and not self.params_unset:  # nearly every message: nothing to clash
            return self
        sets, once, unset = set(self.params), set(self.params_once), set(self.params_unset)
        if clash := (sets & once) | (sets & unset) | (once & unset):
            raise ValueError(
                f"a key may appear in only one of params, params_once, params_unset: {sorted(clash)}"
            )
        return self


def identify_change(
    kind: str, occurred_at: datetime, email: str | None, fields: Mapping[str, Any]
) -> CustomerChange:
    """The change one identify or ping message makes. `fields` are the message's validated fields
    (a model's dump or the JSON the API stored after validating it); `email` is already normalized.
    Either message means the person is using the product right now: activity."""
    if kind == "ping":
        return CustomerChange(occurred_at=occurred_at, email=email, activity=True)
    return CustomerChange(
        occurred_at=occurred_at,
        email=email,
        name=fields.get("name"),
        status=fields.get("status"),
        params=fields.get("params") or {},
        params_once=fields.get("params_once") or {},
        params_unset=tuple(fields.get("params_unset") or ()),
        activity=True,
    )
