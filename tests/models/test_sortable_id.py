"""sortable_id: the ULID layout in Crockford base32, lower case, ordered by its millisecond clock."""

from __future__ import annotations

import random
import secrets
import time

import pytest

from tributary.models.base import sortable_id

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def reference(millis: int, rand: int) -> str:
    """The layout spelled out digit by digit: 26 characters of 5 bits, most significant first."""
    value = (millis << 80) | rand
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


@pytest.mark.parametrize(
    ("millis", "rand"),
    [(0, 0), (2**48 - 1, 2**80 - 1), (1_764_633_600_000, 1)]
    + [(random.Random(n).getrandbits(48), random.Random(-n).getrandbits(80)) for n in range(200)],
)
def test_the_id_is_the_clock_then_the_random_bits(
    millis: int, rand: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: (millis + 0.5) / 1000)
    monkeypatch.setattr(secrets, "randbits", lambda bits: rand)
    assert sortable_id("evt") == f"evt_{reference(millis, rand)}"


def test_ids_sort_by_time_and_are_unique() -> None:
    ids = [sortable_id("cus") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 30 and set(i[4:]) <= set(CROCKFORD) for i in ids)
    earlier, later = reference(1_000, 2**80 - 1), reference(1_001, 0)
    assert earlier < later
