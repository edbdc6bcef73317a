"""The one email rule and the one event-time rule every ingest path uses (connectors/event_rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tributary.connectors.event_rules import (
    FUTURE_TOLERANCE_SECONDS,
    MAX_EMAIL_CHARS,
    InvalidEmail,
    email_or_none,
    normalize_email,
    seconds_ahead,
)
from tributary.connectors.fields import clean_email
from tributary.connectors.identify import IdentifyRequest


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace@Example.COM\n", "ada.lovelace@example.com"),  # trimmed, all of it lower-cased
        ("ADA+news@example.com", "ada+news@example.com"),  # sub-addresses are kept
        ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example"),
    ],
)
def test_an_address_has_one_spelling(given: str, expected: str) -> None:
    assert normalize_email(given) == expected
    assert email_or_none(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "",
        "   ",
        "ada",
        "ada@",
        "@example.com",
        "ada@@example.com",
        "ada lovelace@example.com",
        "ada@example",  # no DNS lookups, but a domain needs a dot
        "ada@" + "b" * 250 + ".com",  # over 254 characters
        "ada\x00@example.com",
    ],
)
def test_what_is_not_an_address(given: str) -> None:
    with pytest.raises(InvalidEmail, match=r"^not a valid email address: "):
        normalize_email(given)
    assert email_or_none(given) is None


@pytest.mark.parametrize("given", [None, 42, ["ada@example.com"], "a@b.co" + " " * MAX_EMAIL_CHARS])
def test_provider_values_that_are_not_text_or_too_long_are_no_address(given: object) -> None:
    assert email_or_none(given) is None


def test_every_path_uses_the_same_rule() -> None:
    # Connectors (their `clean_email`) and the API's schema normalize alike.
    assert clean_email is email_or_none
    assert IdentifyRequest(email="  Ada@Example.com ").email == "ada@example.com"


def test_an_event_time_may_be_at_most_five_minutes_ahead() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert FUTURE_TOLERANCE_SECONDS == 300
    assert seconds_ahead(now + timedelta(seconds=300), now) is None
    assert seconds_ahead(now - timedelta(days=3650), now) is None
    assert seconds_ahead(now + timedelta(seconds=300.5), now) == 300.5
