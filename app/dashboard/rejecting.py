"""Refused webhook deliveries for the Sources and Overview pages, read through `tributary.app.rejections`
(the module `GET /v1/sources/<id>/rejections` and `tributary sources show` use)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from tributary.app.rejections import KEEP, rejections
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime

WINDOW = timedelta(hours=24)
SHOWN = 10


@dataclass(frozen=True, slots=True)
class Rejecting:
    source_id: str
    label: str
    last_day: int
    last_at: str
    last_reason: str
    # Only the newest KEEP refusals per source are kept: the day's count is at least this many.
    capped: bool


def for_source(runtime: Runtime, source_id: str) -> dict[str, Any] | None:
    """Counts per reason and the newest refusals; None when Redis cannot be read."""
    try:
        data = rejections(runtime, source_id)
    except RedisError:
        return None
    recent = data["recent"]
    return {**data, "recent": recent[:SHOWN], "recent_all": recent, "total": sum(data["counts"].values())}


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def rejecting(
    runtime: Runtime, sources: list[tuple[str, str]], now: datetime | None = None
) -> list[Rejecting]:
    """The sources (id, label) that refused deliveries in the last 24 hours, most refusals first."""
    since = (now or utcnow()) - WINDOW
    out = []
    for source_id, label in sources:
        data = for_source(runtime, source_id)
        if not data:
            continue
        recent = [r for r in data["recent_all"] if _moment(r["at"]) >= since]
        if recent:
            capped = len(recent) >= KEEP
            out.append(Rejecting(source_id, label, len(recent), recent[0]["at"], recent[0]["reason"], capped))
    return sorted(out, key=lambda r: -r.last_day)
