"""What bounds identify's p99 at the most connections: the rate, by Little's law.

wrk keeps every connection busy (a closed loop: a connection sends its next request as soon as its
answer arrives), so with `c` connections and `x` answers a second a request spends `c / x` seconds
in the system on average (Little's law). At half bare Flask's rate it waits twice as long as bare
Flask's requests do. A point's p99 over that mean is the shape of its tail. For a p99 within the
target, a server whose tail keeps its shape must answer `c * shape / target` requests a second: that
rate, at identify's own shape and at bare Flask's, is set beside bare Flask's own rate in the same
rounds. Above 1, the target asks more than bare Flask itself does on this machine.
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["p99_bound"]

Rounds = dict[int, dict[str, Any]]


def _mean_ms(point: dict[str, Any], connections: int) -> float:
    """The mean time a request spent in the system, by Little's law (every answer counted)."""
    return connections / float(point["requests_per_s"]) * 1000


def _median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3)


def p99_bound(ours: Rounds, bare: Rounds, connections: int, target_ms: float) -> dict[str, Any] | None:
    """The bound on `ours`' p99 (identify's points at `connections`, by round) from its rate and
    tail, beside bare Flask's (`bare`, the same rounds): None without a round that has both."""
    rounds = [
        r for r in sorted(ours) if r in bare and min(ours[r]["requests_per_s"], bare[r]["requests_per_s"]) > 0
    ]
    if not rounds:
        return None
    shape = {
        "tributary": _median([ours[r]["p99_ms"] / _mean_ms(ours[r], connections) for r in rounds]),
        "bare": _median([bare[r]["p99_ms"] / _mean_ms(bare[r], connections) for r in rounds]),
    }
    bare_rate = _median([bare[r]["requests_per_s"] for r in rounds])
    needed = {name: round(connections * value / target_ms * 1000, 1) for name, value in shape.items()}
    return {
        "connections": connections,
        "target_ms": target_ms,
        "mean_ms": _median([_mean_ms(ours[r], connections) for r in rounds]),
        "bare_p99_ms": _median([bare[r]["p99_ms"] for r in rounds]),
        "bare_mean_ms": _median([_mean_ms(bare[r], connections) for r in rounds]),
        "p99_over_mean": shape,
        "bare_requests_per_s": bare_rate,
        "rate_needed_per_s": needed,
        "rate_needed_over_bare": {name: round(rate / bare_rate, 3) for name, rate in needed.items()},
    }
