"""sortable_id: the ULID layout in Crockford base32, lower case, ordered by its millisecond clock."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable

import pytest

from tributary.models import base
from tributary.models.base import sortable_id

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def reference(millis: int, rand: int) -> str:
    """The layout spelled out digit by digit: 26 characters of 5 bits, most significant first."""
    value = (millis << 80) | rand
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


def _clock_held_at(millis: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: (millis + 0.5) / 1000)


@pytest.mark.parametrize(
    ("millis", "rand"),
    [(0, 0), (2**48 - 1, 2**80 - 1), (1_764_633_600_000, 1)]
    + [(random.Random(n).getrandbits(48), random.Random(-n).getrandbits(80)) for n in range(200)],
)
def test_the_id_is_the_clock_then_the_random_bits(
    millis: int, rand: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clock_held_at(millis, monkeypatch)
    monkeypatch.setattr(base, "_random_80_bits", lambda: rand)
    monkeypatch.setattr(base._LAST, "value", -1)  # no id made yet in this process
    assert sortable_id("evt") == f"evt_{reference(millis, rand)}"


def test_ids_sort_by_time_and_are_unique() -> None:
    ids = [sortable_id("cus") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 30 and set(i[4:]) <= set(CROCKFORD) for i in ids)
    earlier, later = reference(1_000, 2**80 - 1), reference(1_001, 0)
    assert earlier < later


def _random_part(id_: str) -> str:
    return id_[-16:]  # the last 80 bits: 16 characters of 5 bits


def test_the_random_bits_come_from_the_os_a_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real: Callable[[int], bytes] = os.urandom

    def urandom(size: int) -> bytes:
        reads.append(size)
        return real(size)

    base._forget_random_block()
    monkeypatch.setattr(os, "urandom", urandom)
    ids = [sortable_id("evt") for _ in range(1000)]
    assert reads == [base._RANDOM_BLOCK_BYTES] * 3  # 409 ids per read
    assert len({_random_part(i) for i in ids}) == 1000


def ids_of_threads(threads: int = 8, each: int = 2000) -> list[list[str]]:
    """`each` ids made by each of `threads` threads at once, a list per thread."""
    found: list[list[str]] = [[] for _ in range(threads)]

    def draw(n: int) -> None:
        found[n] = [sortable_id("evt") for _ in range(each)]

    pool = [threading.Thread(target=draw, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return found


def test_threads_draw_from_their_own_blocks_and_never_repeat() -> None:
    found = ids_of_threads()
    everything = [_random_part(i) for ids in found for i in ids]
    assert len(set(everything)) == len(everything) == 16_000


def test_a_forked_child_never_hands_out_its_parents_bits() -> None:
    # gunicorn forks its workers after the app is loaded: a block read before the fork must not be
    # shared, or parent and child would give the same ids in the same millisecond.
    sortable_id("evt")  # the parent has a block, with bytes left
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.write(write, " ".join(_random_part(sortable_id("evt")) for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {_random_part(sortable_id("evt")) for _ in range(50)}
    assert len(child) == 50 and not child & parent


def _value(id_: str) -> int:
    """An id's 128-bit value: `reference` read backwards."""
    return sum(CROCKFORD.index(c) << (5 * (25 - i)) for i, c in enumerate(id_.partition("_")[2]))


def test_ids_made_within_one_millisecond_grow_by_random_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = int(time.time() * 1000) + 5
    _clock_held_at(millis, monkeypatch)
    # The millisecond's ids start at its bottom: 2,000 steps of up to 2**64 stay inside its 80 bits
    # (from a random start they carried into the next millisecond once in ~64 runs; the carry has
    # its own test below), whatever an earlier test left as the last id.
    monkeypatch.setattr(base._LAST, "value", millis << 80)
    values = [_value(sortable_id("evt")) for _ in range(2000)]
    assert values == sorted(values) and len(set(values)) == 2000
    assert {v >> 80 for v in values} == {millis}
    steps = [b - a for a, b in itertools.pairwise(values)]
    # Not a counter: a neighbour's id does not tell the next one (steps of up to 2**64).
    assert len(set(steps)) == len(steps) and max(steps) > 2**60


def test_a_clock_that_steps_back_never_makes_a_smaller_id(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = int(time.time() * 1000) + 10
    _clock_held_at(millis, monkeypatch)
    first = _value(sortable_id("evt"))
    _clock_held_at(millis - 3, monkeypatch)  # NTP stepped the clock back
    second = _value(sortable_id("evt"))
    _clock_held_at(millis + 1, monkeypatch)
    third = _value(sortable_id("evt"))
    assert first < second < third
    assert second >> 80 == millis and third >> 80 == millis + 1  # the clock again once it is later


def test_a_step_past_the_random_bits_carries_into_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = int(time.time() * 1000) + 10
    _clock_held_at(millis, monkeypatch)
    monkeypatch.setattr(base._LAST, "value", (millis << 80) | (2**80 - 1))
    after = sortable_id("evt")
    assert _value(after) >> 80 == millis + 1 and len(after) == 30
    assert after > f"evt_{reference(millis, 2**80 - 1)}"


def test_each_thread_s_ids_grow_and_none_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    _clock_held_at(int(time.time() * 1000) + 5, monkeypatch)  # all in one millisecond
    found = ids_of_threads()
    assert all(ids == sorted(ids) for ids in found)
    assert len({i for ids in found for i in ids}) == 16_000
