"""Events (read-only, interim until the ops API's module is merged): a list and a detail page."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from app.dashboard.event_query import body_text, clean_filters, find_event, list_events, mask_headers
from app.dashboard.views import db, reader
from models import EVENT_STATUSES


def events() -> str:
    filters = clean_filters(request.args.to_dict())
    with db().session() as session:
        rows, next_before = list_events(session, reader(), filters)
    return render_template(
        "events.html", rows=rows, filters=filters, statuses=EVENT_STATUSES, next_before=next_before
    )


def event(event_id: str) -> str:
    with db().session() as session:
        detail = find_event(session, reader(), event_id)
    if detail is None:
        abort(404, "no such event")
    body, cut = body_text(detail.event.body)
    return render_template(
        "event.html", d=detail, e=detail.event, body=body, cut=cut, headers=mask_headers(detail.event.headers)
    )


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/events", "events", events)
    bp.add_url_rule("/events/<event_id>", "event", event)
