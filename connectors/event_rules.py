"""The two rules every event obeys whichever door it came in by (the identify API, `/v1/batch`, a
webhook, an import): how an email address is normalized (the customer merge key) and how far
ahead of the server's clock an event time may be.

Both are here, beside the connectors and below the web app and the worker, so that every path
imports one definition instead of restating it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

__all__ = [
    "FUTURE_TOLERANCE_SECONDS",
    "MAX_EMAIL_CHARS",
    "InvalidEmail",
    "email_or_none",
    "normalize_email",
    "seconds_ahead",
]

# The `email` columns' width; longer text is not looked at (email-validator's own limit is 254).
MAX_EMAIL_CHARS = 320

# An event time may be at most this far ahead of the server's clock. A future event time would pin
# every field it writes against all real updates (workers/merge.py clocks); five minutes absorbs
# ordinary clock skew between a sender and us. The same value as the signature timestamp tolerance
# (connectors/base.py `TIMESTAMP_TOLERANCE_SECONDS`, SPEC §7), which is a different rule.
FUTURE_TOLERANCE_SECONDS = 300


class InvalidEmail(ValueError):
    """Not an email address; the message says why."""


# The plain ASCII shape nearly every address has: dot-separated atoms of letters, digits and
# `_+-` before the @; hostname labels (no `--` at all, which sidesteps Punycode) ending in a
# letters-only top-level domain after it. email-validator accepts every such address within the
# lengths `_plain` checks (tests/connectors/test_email_fast_path.py generates them to prove it), so
# those skip its Unicode and IDNA work: 26 us of the 50 us that validating an identify body takes.
# Anything else, valid or not, goes through email-validator as before.
_PLAIN = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@((?:[a-z0-9](?:-?[a-z0-9])*\.)+[a-z]+)",
    re.ASCII | re.IGNORECASE,
)
# The domain checks as two scans in C: a generator per address (a label's length, each special-use
# name) was a tenth of `/v1/batch`'s samples.
_SPECIAL_USE = re.compile(r"(?:\A|\.)(?:" + "|".join(map(re.escape, SPECIAL_USE_DOMAIN_NAMES)) + r")\Z")
_LONG_LABEL = re.compile(r"[^.]{64}")


def _plain(candidate: str) -> bool:
    """True for an address of the shape `_PLAIN` describes within email-validator's lengths."""
    match = _PLAIN.fullmatch(candidate) if len(candidate) <= 254 else None
    if match is None:
        return False
    domain = match.group(1).lower()
    return (
        candidate.index("@") <= 64
        and len(domain) <= 253
        and _LONG_LABEL.search(domain) is None
        and _SPECIAL_USE.search(domain) is None
    )


def normalize_email(value: str) -> str:
    """The one spelling of an address: surrounding whitespace trimmed, then valid syntax
    (email-validator, no DNS lookup; it also refuses addresses over 254 characters), then the
    whole address lower-cased (local part included: providers treat `Ada@x` and `ada@x` as one
    person, and so do we)."""
    candidate = value.strip()
    if not _plain(candidate):
        try:
            validate_email(candidate, check_deliverability=False)
        except EmailNotValidError as exc:
            raise InvalidEmail(f"not a valid email address: {exc}") from None
    return candidate.lower()


def email_or_none(value: Any) -> str | None:
    """`normalize_email` for provider data, where a field that should hold an address may hold
    something else (Auth0's `user_name` may be a phone number, Okta's `alternateId` a login
    name): None for anything that is not a string holding a valid address."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_EMAIL_CHARS:
        return None
    try:
        return normalize_email(value)
    except InvalidEmail:
        return None


def seconds_ahead(occurred_at: datetime, now: datetime) -> float | None:
    """How far `occurred_at` is ahead of `now` when that is beyond the tolerance, else None."""
    ahead = (occurred_at - now).total_seconds()
    return ahead if ahead > FUTURE_TOLERANCE_SECONDS else None
