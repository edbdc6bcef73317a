"""Request authentication shared by the auth-provider and custom-app connectors.

Three schemes cover them:

- **Standard Webhooks / Svix** (Clerk, Supabase Auth Hooks, the `standard` connector): the HMAC is
  computed by the `standardwebhooks` library; this module only reads the headers, enforces the
  ±300 s window of SPEC §7 against an injectable `now` (so published test vectors can be checked
  with frozen time) and compares every offered `v1` signature in constant time.
- **A shared secret in a header** (Auth0 Log Streams, Okta Event Hooks, Supabase Database
  Webhooks, `mapping`): the header value must equal a source secret, optionally as `Bearer <secret>`.
- **Plain HMAC** (WorkOS, `mapping`): `hmac_digest` + `any_matches`.

Everything here is pure: bytes and headers in, `VerificationFailed` out. No network, no clock
other than the one passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from tributary.connectors.base import VerificationFailed, check_timestamp

__all__ = [
    "HMAC_ALGORITHMS",
    "any_matches",
    "hmac_digest",
    "keyed_signature_header",
    "standard_secrets",
    "verify_shared_secret",
    "verify_standard_webhook",
]

HMAC_ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}

# A header with more signatures than this is not a rotation, it is an attempt to make us work.
MAX_SIGNATURES = 16


def standard_secrets(secrets: Iterable[str]) -> list[str]:
    """Source secrets in the form `standardwebhooks` accepts (`whsec_<base64>`).

    Supabase shows its hook secret as `v1,whsec_<base64>` and plans a `secret1|secret2` form for
    rotation; both are unwrapped here so users can paste what the dashboard shows.
    """
    found: list[str] = []
    for secret in secrets:
        for part in secret.split("|"):
            if key := part.strip().removeprefix("v1,"):
                found.append(key)
    return found


def _offered_signatures(header: str) -> list[bytes]:
    """The decoded `v1` entries of a `webhook-signature` header (space-separated `v1,<base64>`).
    Other versions (`v1a` asymmetric) and undecodable entries are skipped, not fatal: a valid
    signature may sit next to them during a rotation."""
    offered: list[bytes] = []
    for entry in header.split()[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return offered


def verify_standard_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Iterable[str],
    *,
    prefix: str = "webhook",
    now: float | None = None,
) -> str:
    """Check a Standard Webhooks signature (`prefix="svix"` for Svix's header names) and return
    the message id. `now` (Unix seconds) replaces the wall clock, for fixed test vectors."""
    msg_id = (headers.get(f"{prefix}-id") or "").strip()
    raw_timestamp = (headers.get(f"{prefix}-timestamp") or "").strip()
    signature_header = headers.get(f"{prefix}-signature") or ""
    if not (msg_id and raw_timestamp and signature_header.strip()):
        raise VerificationFailed(
            f"missing signature headers: {prefix}-id, {prefix}-timestamp and {prefix}-signature are required"
        )
    if not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
        raise VerificationFailed(f"{prefix}-timestamp must be integer Unix seconds")
    timestamp = int(raw_timestamp)
    check_timestamp(timestamp, now=now)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed("the body is not UTF-8, so its signature cannot be checked") from None
    offered = _offered_signatures(signature_header)
    if not offered:
        raise VerificationFailed(f"{prefix}-signature carries no v1 signature")
    keys = standard_secrets(secrets)
    if not keys:
        raise VerificationFailed("the source has no signing secret configured")
    signed_at = datetime.fromtimestamp(timestamp, UTC)
    for key in keys:
        try:
            webhook = Webhook(key)
        except Exception:  # noqa: S112 - a malformed stored secret simply never matches
            continue
        # The library computes the HMAC; its own verify() reads the wall clock, which we must not.
        expected = base64.b64decode(webhook.sign(msg_id, signed_at, text).partition(",")[2])
        if any_matches(expected, offered):
            return msg_id
    raise VerificationFailed(f"{prefix}-signature does not match the source's secret")


def verify_shared_secret(headers: Mapping[str, str], header: str, secrets: Iterable[str]) -> None:
    """The header must carry one of the source's secrets, verbatim or as `Bearer <secret>`
    (providers differ in whether they add the scheme, and users in whether they paste it)."""
    keys = [s for s in secrets if s]
    if not keys:
        raise VerificationFailed("the source has no secret configured")
    value = (headers.get(header) or "").strip()
    if not value:
        raise VerificationFailed(f"missing {header} header")
    presented = [value.encode()]
    if value[:7].lower() == "bearer ":
        presented.append(value[7:].strip().encode())
    matched = False
    for key in keys:
        for candidate in presented:
            # No early exit: every comparison runs whatever matched before it.
            matched |= hmac.compare_digest(candidate, key.encode())
    if not matched:
        raise VerificationFailed(f"the {header} header does not match the source's secret")


def keyed_signature_header(
    header: str, separator: str, time_key: str, signature_key: str
) -> tuple[str, list[str]]:
    """A `<time_key>=<t><sep><signature_key>=<sig>[<sep><signature_key>=<sig>…]` header (Paddle's
    `ts=…;h1=…`, WorkOS's `t=…, v1=…`) -> (t, [sig…]); several signatures during key rotation."""
    timestamp = ""
    signatures: list[str] = []
    for part in header.split(separator)[:MAX_SIGNATURES]:
        key, _, value = part.strip().partition("=")
        if key == time_key:
            timestamp = value.strip()
        elif key == signature_key and value.strip():
            signatures.append(value.strip())
    return timestamp, signatures


def hmac_digest(algorithm: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, HMAC_ALGORITHMS[algorithm]).digest()


def any_matches(expected: bytes, offered: Iterable[bytes]) -> bool:
    """Constant-time comparison of `expected` with every offered signature."""
    matched = False
    for candidate in offered:
        matched |= hmac.compare_digest(expected, candidate)
    return matched
