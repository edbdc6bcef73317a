"""Turn a stored event into `CustomerChange`s: the channel's table names who does it. The API's
identify and ping, and imports, are internal channels; every other channel is a webhook connector's
name, normalized through the connector registry (workers/connector_changes.py). Runs in the
worker, never in the web process."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tributary.connectors import safe_json
from tributary.connectors.base import EventIgnored
from tributary.connectors.changes import CustomerChange
from tributary.connectors.identify import CHANNELS, identify_change
from tributary.workers.connector_changes import (
    NormalizeError,
    WorkerContext,
    connector_changes,
    normalized_email,
    storable_change,
)
from tributary.workers.importers.channel import import_changes
from tributary.workers.importers.items import IMPORT_CHANNEL

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tributary.models import Event

API_CHANNELS = CHANNELS

__all__ = [
    "API_CHANNELS",
    "INTERNAL_CHANNELS",
    "EventIgnored",
    "NormalizeError",
    "WorkerContext",
    "changes_for_event",
    "normalized_email",
    "storable_change",
]

ChannelNormalizer = Callable[["Session", "Event"], list[CustomerChange]]


def api_changes(_session: Session, event: Event) -> list[CustomerChange]:
    """An identify or ping message stored by the API."""
    # The API refuses unstorable values at the door; an event stored before it did fails alone,
    # with the reason, instead of failing every batch that holds it.
    try:
        data: dict[str, Any] = safe_json.loads(event.body)
    except (ValueError, RecursionError) as exc:
        raise NormalizeError(
            f"the stored {event.channel} message is not strict JSON: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise NormalizeError(f"the stored {event.channel} message is not a JSON object")
    if (found := safe_json.problem(data)) is not None:
        raise NormalizeError(f"the stored {event.channel} message cannot be applied: {found}")
    # Validated when it was received; the `standard` connector builds its changes the same way.
    return [identify_change(event.channel, event.occurred_at, event.email, data)]


# Channels that are not webhook connectors -> how their events become changes. An entry here
# shadows a connector of the same name.
INTERNAL_CHANNELS: dict[str, ChannelNormalizer] = {
    **{channel: api_changes for channel in API_CHANNELS},
    IMPORT_CHANNEL: import_changes,
}


def changes_for_event(session: Session, event: Event) -> list[CustomerChange]:
    if (internal := INTERNAL_CHANNELS.get(event.channel)) is not None:
        changes = internal(session, event)
    else:
        changes = connector_changes(session, event)
    for change in changes:
        _refuse_non_finite(change)
    return changes


def _refuse_non_finite(change: CustomerChange) -> None:
    """Fail the event whose change carries NaN or an infinity in its params, whatever produced it
    (a connector's arithmetic, an import, a channel that does not validate). No database stores
    one, and the bulk writes' encoder (workers/batch/write_back_pg.py) would write it as `null`:
    every channel is held to this here, on every backend. The API refuses such numbers at the door
    and connectors drop them from provider data, so this names what slipped past both."""
    for name in ("params", "params_once"):
        if (where := safe_json.non_finite(getattr(change, name))) is not None:
            raise NormalizeError(f"the change cannot be stored: {name}{where} is not a finite number")
