"""What every template can use: the viewer, the CSRF token, and filters for times, statuses and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, g

from tributary.app.dashboard import session

# Colour families for the statuses providers and apps commonly send; anything else is neutral.
_STATUS_TONES = {
    "good": {"active", "paid", "processed", "customer", "subscribed", "trialing_paid", "pro"},
    "info": {"trial", "trialing", "free", "lead", "invited", "signed_up", "signup", "pending", "deferred"},
    "warn": {"past_due", "incomplete", "unpaid", "paused", "churning", "ignored"},
    "bad": {"canceled", "cancelled", "churned", "failed", "deleted", "blocked", "incomplete_expired"},
}


def status_tone(status: str | None) -> str:
    if not status:
        return "none"
    for tone, names in _STATUS_TONES.items():
        if status in names:
            return tone
    return "neutral"


def _parse(moment: datetime | str | None) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    # RQ's timestamps are naive UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(moment: datetime | str | None) -> str:
    """UTC, to the second: what an operator compares with logs."""
    parsed = _parse(moment)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if parsed else "—"


def ago(moment: datetime | str | None, now: datetime | None = None) -> str:
    parsed = _parse(moment)
    if parsed is None:
        return "never"
    seconds = int(((now or datetime.now(UTC)) - parsed).total_seconds())
    if seconds < 0:
        return "in the future"
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = int(seconds)
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if total >= size:
            return f"{total // size} {unit}"
    return f"{total} s"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def install(bp: Blueprint) -> None:
    @bp.context_processor
    def _globals() -> dict[str, Any]:
        return {"viewer": g.get("viewer"), "csrf_token": session.csrf_token}

    filters: dict[str, Callable[..., Any]] = {
        "status_tone": status_tone,
        "when": when,
        "ago": ago,
        "duration": duration,
        "pretty_json": pretty_json,
        "compact_json": compact_json,
    }
    for name, function in filters.items():
        bp.add_app_template_filter(function, name)
