"""Signers for every scheme Tributary verifies: the headers a provider would send with a body.

Part of the public connector test kit (`tributary.connectors.testkit`). Standard Webhooks and Svix
signatures come from the `standardwebhooks` library, the same code that verifies them
(connectors/verification.py); the other schemes have no library of their own here, so their HMACs
are written out as each provider documents them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

__all__ = [
    "lemonsqueezy_headers",
    "new_standard_secret",
    "paddle_headers",
    "paddle_signature",
    "standard_webhook_headers",
    "static_secret_headers",
    "stripe_headers",
    "stripe_signature",
    "svix_headers",
    "workos_headers",
    "workos_signature",
]


def _now() -> int:
    return int(time.time())


def stripe_signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """`Stripe-Signature`: `t=<s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    t = _now() if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def stripe_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": stripe_signature(body, secret, timestamp)}


def new_standard_secret() -> str:
    """A fresh Svix / Standard Webhooks secret: `whsec_` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def standard_webhook_headers(
    body: bytes, secret: str, *, msg_id: str, timestamp: int | None = None, prefix: str = "webhook"
) -> dict[str, str]:
    """Standard Webhooks (`prefix="webhook"`) or Svix (`prefix="svix"`) headers, signed by
    `standardwebhooks`: base64 HMAC-SHA256 over `<id>.<timestamp>.<body>`, keyed with the
    base64-decoded `whsec_` secret."""
    t = _now() if timestamp is None else timestamp
    # The library signs text. A body that is not UTF-8 (a malformed-body test) still gets headers:
    # its undecodable bytes are replaced, which is harmless because verification refuses such a
    # body before any HMAC is compared.
    text = body.decode("utf-8", errors="replace")
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(t, UTC), text)
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(t), f"{prefix}-signature": signature}


def svix_headers(body: bytes, secret: str, *, msg_id: str, timestamp: int | None = None) -> dict[str, str]:
    return standard_webhook_headers(body, secret, msg_id=msg_id, timestamp=timestamp, prefix="svix")


def workos_signature(body: bytes, secret: str, timestamp_ms: int | None = None) -> str:
    """`WorkOS-Signature`: `t=<ms>, v1=<hex HMAC-SHA256(secret as UTF-8, "<t>.<body>")>`."""
    t = _now() * 1000 if timestamp_ms is None else timestamp_ms
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t}, v1={digest}"


def workos_headers(body: bytes, secret: str, timestamp_ms: int | None = None) -> dict[str, str]:
    return {"WorkOS-Signature": workos_signature(body, secret, timestamp_ms)}


def paddle_signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """`Paddle-Signature`: `ts=<s>;h1=<hex HMAC-SHA256(secret as UTF-8, "<ts>:<body>")>`."""
    t = _now() if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}:".encode() + body, hashlib.sha256).hexdigest()
    return f"ts={t};h1={digest}"


def paddle_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return {"Paddle-Signature": paddle_signature(body, secret, timestamp)}


def lemonsqueezy_headers(body: bytes, secret: str, event_name: str | None = None) -> dict[str, str]:
    """`X-Signature`: hex HMAC-SHA256 of the raw body, keyed with the signing secret as UTF-8
    (Lemon Squeezy signs no timestamp); `X-Event-Name` as Lemon Squeezy sends it."""
    headers = {"X-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}
    if event_name:
        headers["X-Event-Name"] = event_name
    return headers


def static_secret_headers(
    secret: str, header: str = "Authorization", scheme: str | None = None
) -> dict[str, str]:
    """A shared secret sent as a header value (Okta, Auth0 log streams, Supabase database webhooks)."""
    return {header: f"{scheme} {secret}" if scheme else secret}
