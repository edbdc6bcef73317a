"""normalize_email's fast path (connectors/event_rules.py `_plain`): every address it lets through
without email-validator is one email-validator accepts, so the fast path can never admit an
address the library would refuse; everything else still meets the library."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from tributary.connectors.event_rules import _PLAIN, InvalidEmail, _plain, normalize_email


def _library_accepts(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.from_regex(_PLAIN, fullmatch=True))
def test_every_plain_address_is_one_email_validator_accepts(address: str) -> None:
    if _plain(address):
        assert _library_accepts(address), address


# Addresses near every edge of the plain shape: built from pieces the fast path cares about.
_piece = st.sampled_from(["a", "Z", "0", "-", "_", "+", ".", "--", "xn--", "test", "local", "é", "@", " "])


@settings(max_examples=800, deadline=None)
@given(st.lists(_piece, min_size=1, max_size=12).map("".join), st.lists(_piece, max_size=12).map("".join))
def test_near_misses_pass_the_fast_path_only_if_the_library_accepts_them(local: str, domain: str) -> None:
    address = f"{local}@{domain}.com" if domain else local
    if _plain(address):
        assert _library_accepts(address), address


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "Ada.Lovelace+crm@Mail.Example.CO.UK",
        "a_b-c@sub-domain.example.io",
        "a@testing.com",  # a special-use name inside a label, or as a label before the last
        "a@mytest.org",
        "a@localhost.example.com",
        "x" * 64 + "@example.com",
        "a@" + "b" * 63 + ".com",
    ],
)
def test_plain_addresses_take_the_fast_path(address: str) -> None:
    assert _plain(address) and _library_accepts(address)
    assert normalize_email(f"  {address} ") == address.lower()


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("x" * 65 + "@example.com", True),  # local part over 64: the library's call (it allows it)
        ("a@" + "b" * 64 + ".com", False),  # label over 63
        ("a@" + ".".join(["b" * 60] * 5) + ".com", False),  # domain over 253
        ("a@example.test", False),  # special-use names
        ("a@mail.localhost", False),
        ("a@x.ONION", False),
        ("a@home.arpa", False),
        ("a@example", False),  # no period
        ("a@example.123", False),  # numeric top-level domain
        ("a..b@example.com", False),
        ("a@-example.com", False),
        ("a@ab--cd.com", False),  # R-LDH label
        ("a@xn--bcher-kva.com", True),  # Punycode: the library decides
        ("a@abc--def.com", True),  # a double hyphen elsewhere is valid, through the library
        ("o'brien@example.com", True),  # atext beyond the fast path's set
        ("ü@example.com", True),  # internationalized local part
        ("a@bücher.de", True),
    ],
)
def test_other_addresses_meet_email_validator(address: str, valid: bool) -> None:
    assert not _plain(address)
    assert _library_accepts(address) is valid
    if valid:
        assert normalize_email(address) == address.lower()
    else:
        with pytest.raises(InvalidEmail):
            normalize_email(address)
