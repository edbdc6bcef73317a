"""Defensive readers for provider payloads: JSON bodies, times, emails and names.

Provider payloads are signed but not trusted to be well-formed: every reader here either returns
a clean value (or None) or raises `MalformedPayload` with a message an operator can act on. None
of them raise anything else on bad input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tributary.connectors import safe_json
from tributary.connectors.base import MalformedPayload
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.event_rules import FUTURE_TOLERANCE_SECONDS, email_or_none

__all__ = [
    "check_event_time",
    "clean_email",
    "full_name",
    "load_json",
    "load_object",
    "mapping_at",
    "parse_time",
    "person_change",
    "text_at",
]

# Unix times above this are milliseconds (in seconds it would be the year 5138).
_MILLIS_THRESHOLD = 1e11


def load_json(body: bytes | str, *, scrub: bool = True) -> Any:
    """Strict JSON (connectors/safe_json.py): `NaN`, `Infinity` and numbers that overflow a double
    are a `MalformedPayload` (no provider's encoder writes them, and they cannot be stored).
    NUL and lone surrogates are removed from every string unless `scrub` is false (then the
    caller refuses them, as the `standard` connector does)."""
    try:
        data = safe_json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from None
    return safe_json.scrub(data) if scrub and _may_hold_unstorable_text(body) else data


def _may_hold_unstorable_text(body: bytes | str) -> bool:
    """Whether decoding `body` can have produced a string holding NUL or a lone surrogate. In
    UTF-8 (a body without a zero byte: `json` reads one with zero bytes as UTF-16 or UTF-32), only
    through a `\\u` escape or an encoded surrogate (ED A0..BF xx, which `json` decodes with
    surrogatepass): raw control characters are invalid JSON, and non-finite numbers were refused
    by the load. Otherwise scrubbing would rebuild the whole document unchanged, a walk of every
    value of every webhook (a tenth of a Stripe delivery's CPU)."""
    if isinstance(body, str):
        return True
    return b"\x00" in body or b"\\u" in body or b"\xed" in body


def load_object(body: bytes, *, scrub: bool = True) -> dict[str, Any]:
    data = load_json(body, scrub=scrub)
    if not isinstance(data, dict):
        raise MalformedPayload(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_time(value: Any, what: str = "timestamp") -> datetime:
    """ISO 8601 text (no offset means UTC), or Unix seconds / milliseconds as a number or digits."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 16:
        value = int(value.strip())
    if isinstance(value, bool):
        raise MalformedPayload(f"{what} must be a time, got a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise MalformedPayload(f"{what} is not a valid Unix time: {value!r}")
        seconds = value / 1000 if value > _MILLIS_THRESHOLD else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise MalformedPayload(f"{what} is out of range: {value!r}") from None
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.strip())
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except ValueError:
            pass
        except OverflowError:
            # `0001-01-01T00:00:00+01:00` is valid ISO 8601 but before year 1 in UTC.
            raise MalformedPayload(f"{what} is outside the years 1 to 9999 in UTC: {value[:80]!r}") from None
    raise MalformedPayload(f"{what} is not an ISO 8601 time or a Unix time: {str(value)[:80]!r}")


def check_event_time(moment: datetime, now: float | None = None) -> datetime:
    """An event time more than the tolerance ahead of now is refused, as the identify API does:
    it would pin every field it writes against all real updates (workers/batch/merge_rules.py clocks)."""
    ahead = moment.timestamp() - (time.time() if now is None else now)
    if ahead > FUTURE_TOLERANCE_SECONDS:
        raise MalformedPayload(f"the event time {moment.isoformat()} is {int(ahead)} s in the future")
    return moment


# The address as the customer merge key, or None when the value is not an address
# (connectors/event_rules.py: the one email rule of every path).
clean_email = email_or_none


def full_name(*parts: Any) -> str | None:
    """Join the non-empty string parts ("Ada", None, "Lovelace" -> "Ada Lovelace")."""
    words = [p.strip() for p in parts if isinstance(p, str) and p.strip()]
    return " ".join(words)[:400] or None


def mapping_at(data: Any, *path: str) -> Mapping[str, Any]:
    """The object at `path` inside `data`, or an empty mapping when any step is missing."""
    for key in path:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def text_at(data: Any, *path: str) -> str | None:
    """The non-empty string at `path` inside `data`, or None."""
    for key in path:
        data = data.get(key) if isinstance(data, Mapping) else None
    return data.strip() if isinstance(data, str) and data.strip() else None


def person_change(
    occurred_at: datetime,
    *,
    email: str | None,
    identity: IdentityRef | None,
    **fields: Any,
) -> CustomerChange:
    """A change about a provider user. When it carries both an email and the provider's user id,
    the email is what the provider says that user's primary address was at `occurred_at`, so it is
    flagged `email_change`: the worker resolves the person through the identity first and renames
    (or merges) instead of creating a second customer when the address differs. See
    workers/batch/identity_resolution.py and docs/connectors.md ("Email changes")."""
    return CustomerChange(
        occurred_at=occurred_at,
        email=email,
        identity=identity,
        email_change=bool(email and identity),
        **fields,
    )
