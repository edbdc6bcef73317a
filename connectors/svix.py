"""Deliveries in the Svix / Standard Webhooks style: signed headers `<prefix>-id`,
`<prefix>-timestamp` and `<prefix>-signature`, and a JSON body `{"type", "timestamp", "data"}`.

Svix names its headers `svix-*` (Clerk); Standard Webhooks tooling `webhook-*` (the `standard`
connector, Supabase's Auth Hooks). Both carry the same signature, checked with the
`standardwebhooks` library by `tributary.connectors.verification.verify_standard_webhook`. This module adds
what such connectors share around it: which header set a delivery uses, and the envelope's id,
type, time and data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tributary.connectors.base import InboundRequest, MalformedPayload
from tributary.connectors.fields import check_event_time, parse_time
from tributary.connectors.verification import verify_standard_webhook

__all__ = ["SvixMessage", "read_message", "verify_svix"]


@dataclass(frozen=True, slots=True)
class SvixMessage:
    """The parts of a delivery an `Envelope` is built from."""

    message_id: str
    type: str
    occurred_at: datetime
    data: Mapping[str, Any]


def _first_header(headers: Mapping[str, str], prefixes: Sequence[str], suffix: str) -> str | None:
    for prefix in prefixes:
        if value := headers.get(f"{prefix}-{suffix}"):
            return value
    return None


def verify_svix(
    request: InboundRequest, secrets: Iterable[str], prefixes: Sequence[str] = ("webhook",)
) -> None:
    """Verify with the first header set of `prefixes` that carries a signature (else the last, so
    the error names the headers a sender is most likely to be missing)."""
    prefix = next((p for p in prefixes if f"{p}-signature" in request.headers), prefixes[-1])
    verify_standard_webhook(request.body, request.headers, secrets, prefix=prefix)


def read_message(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    prefixes: Sequence[str] = ("webhook",),
    shape: str,
) -> SvixMessage:
    """The message of an already parsed body: a string `type` and an object `data` (else
    `MalformedPayload(shape)`), the delivery id from the first `<prefix>-id` header present, and the
    time from the body's `timestamp`, else from the signed `<prefix>-timestamp` header."""
    kind = body.get("type")
    data = body.get("data")
    if not isinstance(kind, str) or not kind or not isinstance(data, dict):
        raise MalformedPayload(shape)
    message_id = _first_header(headers, prefixes, "id")
    if not message_id:
        raise MalformedPayload(f"missing {prefixes[0]}-id header")
    stamp = body.get("timestamp")
    if stamp is None:  # a body's time may be in milliseconds; the signed header's is close enough
        stamp = _first_header(headers, prefixes, "timestamp")
    return SvixMessage(message_id, kind, check_event_time(parse_time(stamp, "timestamp")), data)
