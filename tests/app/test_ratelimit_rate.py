"""What a rate limit promises, against the real Redis: a key that keeps to its rate is never
refused, however its requests fall against the clock, and a key above it is refused, with the
budget shared by every process that serves the key."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tributary.app.errors import APIError
from tributary.app.ratelimit import RateLimiter
from tributary.runtime.process import Runtime


def _admitted(limiter: RateLimiter, key_id: str, n: int) -> int:
    admitted = 0
    for _ in range(n):
        try:
            limiter.hit(key_id)
        except APIError as exc:
            assert exc.status == 429
        else:
            admitted += 1
    return admitted


def _counting(limiter: RateLimiter) -> list[int]:
    """Count `limiter`'s round trips to Redis."""
    real_spend = limiter._spend
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_spend(*args, **kwargs)

    limiter.__dict__["_spend"] = counted
    return calls


def _chunk(limiter: RateLimiter, key_id: str) -> int:
    """The chunk `limiter`'s view of `key_id` reports in, while no report is out."""
    limit = limiter.limits[0]
    return limit.chunk_at(limit.views[key_id].level)


def test_a_key_that_keeps_to_its_rate_is_never_refused(runtime: Runtime) -> None:
    # 15 requests a second against 20/second, in bursts whose timing wobbles (a cron that sends a
    # batch each second, a client's retries): 30 requests in 0.8 s, which is under the rate plus
    # one second's burst. A fixed window opened by the first burst counted both bursts in one
    # window and refused ten of them.
    limiter = RateLimiter(lambda: runtime.redis, "20/second")
    assert _admitted(limiter, "key_wobble", 15) == 15
    time.sleep(0.8)
    assert _admitted(limiter, "key_wobble", 15) == 15


def test_the_budget_is_not_refused_below_the_rate_at_window_edges(runtime: Runtime) -> None:
    # The whole per-second budget used just before a window would end, and again just after:
    # that is two seconds' worth in about two seconds, so nothing may be refused.
    limiter = RateLimiter(lambda: runtime.redis, "20/second")
    assert _admitted(limiter, "key_edges", 1) == 1
    time.sleep(0.9)
    assert _admitted(limiter, "key_edges", 19) == 19
    time.sleep(1.1)
    assert _admitted(limiter, "key_edges", 20) == 20


def test_above_the_rate_the_surplus_is_refused_with_headers(runtime: Runtime) -> None:
    limiter = RateLimiter(lambda: runtime.redis, "5/minute")
    assert _admitted(limiter, "key_over", 5) == 5
    with pytest.raises(APIError) as refused:
        limiter.hit("key_over")
    headers = refused.value.headers
    assert refused.value.status == 429
    # One token comes back every 12 s.
    assert 1 <= int(headers["Retry-After"]) <= 12
    assert headers["RateLimit-Limit"] == "5"
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Reset"] == headers["Retry-After"]


def test_processes_share_a_keys_budget(runtime: Runtime) -> None:
    # Two limiters stand for two gunicorn processes. Together they admit the burst, not twice it,
    # and never less than it; the surplus is at most what each other process may admit between
    # two of its exchanges with Redis (plus what refills while the test runs: ~17 a second).
    processes = [RateLimiter(lambda: runtime.redis, "1000/minute") for _ in range(2)]
    admitted = 0
    for _ in range(700):
        admitted += sum(_admitted(limiter, "key_shared", 1) for limiter in processes)
    chunk = processes[0].limits[0].chunk
    assert 1000 <= admitted <= 1000 + chunk + 17 * 5


def test_each_limit_of_a_spec_applies(runtime: Runtime) -> None:
    limiter = RateLimiter(lambda: runtime.redis, "100/second;3/minute")
    assert _admitted(limiter, "key_two", 10) == 3
    with pytest.raises(APIError) as refused:
        limiter.hit("key_two")
    assert refused.value.headers["RateLimit-Limit"] == "3"


def test_threads_of_one_process_share_its_view(runtime: Runtime) -> None:
    # gunicorn's gthread workers and `tributary serve` run requests on threads of one limiter.
    limiter = RateLimiter(lambda: runtime.redis, "1000/minute")
    counts: list[int] = []

    def worker() -> None:
        counts.append(_admitted(limiter, "key_threads", 200))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1000 <= sum(counts) <= 1000 + 17 * 5


def test_a_round_trip_does_not_hold_up_the_processs_other_threads(runtime: Runtime) -> None:
    # While one thread reports a key's requests to Redis (here held up), the others go on deciding
    # on the process's view of it instead of queueing behind the network.
    limiter = RateLimiter(lambda: runtime.redis, "1000/second")
    real_spend = limiter._spend
    limiter.hit("key_flight")  # Redis answers: the view is known
    chunk = _chunk(limiter, "key_flight")
    reporting, release = threading.Event(), threading.Event()

    def held_spend(*args: Any, **kwargs: Any) -> Any:
        reporting.set()
        release.wait(10)
        return real_spend(*args, **kwargs)

    limiter.__dict__["_spend"] = held_spend
    reporter = threading.Thread(target=_admitted, args=(limiter, "key_flight", chunk))
    reporter.start()  # chunk - 1 on the view, then the last reports them and waits
    assert reporting.wait(5)
    started = time.monotonic()
    assert _admitted(limiter, "key_flight", 5) == 5
    assert time.monotonic() - started < 1
    release.set()
    reporter.join(10)
    limiter.__dict__["_spend"] = real_spend
    assert _admitted(limiter, "key_flight", 2 * chunk) == 2 * chunk


def test_a_steady_key_reports_once_a_chunk_not_once_a_tick_of_the_clock(runtime: Runtime) -> None:
    # One process's share of a busy key: 40 requests over ~0.8 s (50/s on this view against
    # 1000/s, a chunk of at least 10). Each chunk is one round trip to Redis; a report forced
    # every tenth of a second sent one every ~5 requests instead, on every view of every key.
    limiter = RateLimiter(lambda: runtime.redis, "1000/second")
    calls = _counting(limiter)
    started = time.monotonic()
    for _ in range(40):
        assert _admitted(limiter, "key_steady", 1) == 1
        time.sleep(0.02)
    # The first call learns the bucket; a slow machine may add one report per period elapsed.
    allowed = 1 + 40 // limiter.limits[0].chunk + int(time.monotonic() - started)
    assert len(calls) <= allowed, len(calls)


def test_a_full_bucket_is_reported_in_larger_chunks_an_emptying_one_in_the_base_chunk(
    runtime: Runtime,
) -> None:
    # 1000/minute: a base chunk of 10. Far from empty, a view's chunk is a twentieth of the level
    # Redis reported (49 at 999 left), so a web process makes a fifth of the round trips; once
    # another process has taken the bucket near empty, the next report brings the chunk back to
    # 10, and the bound on what a process admits ahead of Redis with it.
    limiter, other = (RateLimiter(lambda: runtime.redis, "1000/minute") for _ in range(2))
    calls = _counting(limiter)
    assert _admitted(limiter, "key_level", 98) == 98
    assert _chunk(limiter, "key_level") >= 45
    assert len(calls) <= 3  # the first request, then one per chunk (10 with the base chunk)
    assert _admitted(other, "key_level", 800) == 800  # another process spends most of the rest
    assert _admitted(limiter, "key_level", 50) == 50  # the report due on the way finds ~57 left
    assert _chunk(limiter, "key_level") == limiter.limits[0].chunk == 10
    calls.clear()
    assert _admitted(limiter, "key_level", 40) == 40
    assert len(calls) >= 3  # one per 10 (0 or 1 with a chunk of 45)


def test_while_a_report_is_out_the_others_carry_the_base_chunk(runtime: Runtime) -> None:
    # A report answered first takes every report in flight as counted, so overlapping reports
    # must stay small: with one (of a full bucket's 49) held on its way, the process's next
    # report leaves after the base chunk of 10, not after another 49. A burst on eight threads
    # passed the bucket by 88-115 on a loaded machine without this (the test above).
    limiter = RateLimiter(lambda: runtime.redis, "1000/minute")
    real_spend = limiter._spend
    limiter.hit("key_overlap")
    chunk = _chunk(limiter, "key_overlap")
    assert chunk >= 45
    calls: list[int] = []
    reporting, release = threading.Event(), threading.Event()

    def first_held(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            reporting.set()
            release.wait(10)
        return real_spend(*args, **kwargs)

    limiter.__dict__["_spend"] = first_held
    reporter = threading.Thread(target=_admitted, args=(limiter, "key_overlap", chunk))
    reporter.start()
    try:
        assert reporting.wait(5)
        assert _admitted(limiter, "key_overlap", 10) == 10
        assert len(calls) == 2  # the tenth reported its chunk while the first report was out
    finally:
        release.set()
        reporter.join(10)


def test_a_limit_with_a_chunk_of_one_stays_exact(runtime: Runtime) -> None:
    # 100/second: a base chunk of 1, so every request asks Redis, however full the bucket; a
    # twentieth of the level would have been 5.
    limiter = RateLimiter(lambda: runtime.redis, "100/second")
    calls = _counting(limiter)
    assert _admitted(limiter, "key_exact", 20) == 20
    assert _chunk(limiter, "key_exact") == 1
    assert len(calls) == 20


def test_many_processes_overrun_a_burst_by_at_most_a_chunk_each(runtime: Runtime) -> None:
    # Eight processes send a burst far above the rate, in turns. Each may hold back one chunk from
    # Redis (at most a twentieth of the level it saw), so together they pass the 1000-token
    # bucket by no more than seven such chunks, plus what refills during the test (~17 a second);
    # and never refuse before the burst is spent.
    processes = [RateLimiter(lambda: runtime.redis, "1000/minute") for _ in range(8)]
    started = time.monotonic()
    admitted = 0
    for _ in range(250):
        admitted += sum(_admitted(limiter, "key_many", 1) for limiter in processes)
    refilled = int((time.monotonic() - started) * 17) + 17
    assert 1000 <= admitted <= 1000 + 7 * 50 + refilled
