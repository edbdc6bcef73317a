"""The one builder of `events` rows for every door of the web process: the identify/ping API,
`/v1/batch` and provider webhooks. Whatever the door, a row has the same columns, the same
pending state and the same event-time rule (connectors/event_rules.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tributary.app.errors import APIError
from tributary.connectors.event_rules import FUTURE_TOLERANCE_SECONDS, seconds_ahead
from tributary.models.base import sortable_id

__all__ = ["KEY_PARAM", "ROW_COLUMNS", "event_row", "refuse_future"]

# The bind parameter (and JSON field) naming the API key whose request stores a row, checked by the
# INSERT itself (None for a webhook's row).
KEY_PARAM = "api_key_id"

# Every column `event_row` can name, in the order the shared writes list them (app/event_store.py on
# PostgreSQL, app/sqlite_event_writes.py): a row without a payload leaves that one out.
ROW_COLUMNS = (
    "id",
    "account_id",
    "project_id",
    "source_id",
    "channel",
    "type",
    "provider_event_id",
    "dedup_key",
    "email",
    "occurred_at",
    "received_at",
    "body",
    "headers",
    "payload",
    "status",
    "attempts",
)


def refuse_future(occurred_at: datetime, received_at: datetime, what: str) -> datetime:
    """`occurred_at`, unless it is more than the tolerance ahead of `received_at`: then a 400
    `timestamp_in_future` naming `what`. A future event time would pin every field it writes
    against all real updates."""
    if seconds_ahead(occurred_at, received_at) is not None:
        minutes = FUTURE_TOLERANCE_SECONDS // 60
        raise APIError(400, "timestamp_in_future", f"{what} is more than {minutes} minutes in the future")
    return occurred_at


def event_row(
    *,
    account_id: str,
    project_id: str,
    channel: str,
    type: str,
    occurred_at: datetime,
    received_at: datetime,
    body: bytes,
    email: str | None,
    dedup_key: str | None,
    provider_event_id: str | None,
    source_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A pending event's row; `occurred_at` has passed `refuse_future`."""
    row: dict[str, Any] = {
        "id": sortable_id("evt"),
        "account_id": account_id,
        "project_id": project_id,
        "source_id": source_id,
        "channel": channel,
        "type": type,
        "provider_event_id": provider_event_id,
        "dedup_key": dedup_key,
        "email": email,
        "occurred_at": occurred_at,
        "received_at": received_at,
        "body": body,
        "headers": dict(headers or {}),
        "status": "pending",
        "attempts": 0,
    }
    if payload is not None:
        # Only when there is one: the JSON column would store Python's None as JSON `null`.
        row["payload"] = payload
    return row
