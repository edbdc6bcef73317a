"""Turn a stored event into `CustomerChange`s: the identify/ping API directly, webhooks through their
connector. Runs in the worker, never in the web process."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from connectors.base import EventIgnored
from connectors.changes import CustomerChange

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from models import Event

API_CHANNELS = ("identify", "ping")

__all__ = ["API_CHANNELS", "EventIgnored", "NormalizeError", "changes_for_event", "register_channel"]


class NormalizeError(Exception):
    """The event cannot be turned into changes; the message is shown to operators."""


# Webhook connectors plug in here (see connectors/registry.py); keyed by Event.channel.
ConnectorNormalizer = Callable[["Session", "Event"], list[CustomerChange]]
_connector_normalizers: dict[str, ConnectorNormalizer] = {}


def register_channel(channel: str, normalizer: ConnectorNormalizer) -> None:
    _connector_normalizers[channel] = normalizer


def _api_change(event: Event) -> CustomerChange:
    data: dict[str, Any] = json.loads(event.body)
    if event.channel == "ping":
        return CustomerChange(occurred_at=event.occurred_at, email=event.email, activity=True)
    return CustomerChange(
        occurred_at=event.occurred_at,
        email=event.email,
        name=data.get("name"),
        status=data.get("status"),
        params=data.get("params") or {},
        params_once=data.get("params_once") or {},
        params_unset=tuple(data.get("params_unset") or ()),
        # An identify call means the person is using the product right now.
        activity=True,
    )


def changes_for_event(session: Session, event: Event) -> list[CustomerChange]:
    if event.channel in API_CHANNELS:
        return [_api_change(event)]
    normalizer = _connector_normalizers.get(event.channel)
    if normalizer is None:
        raise NormalizeError(f"no connector named {event.channel!r} is installed")
    return normalizer(session, event)
