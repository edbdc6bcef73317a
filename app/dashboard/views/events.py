"""Events: the ops API's list (same filters, same query, same cursors) and an event's detail with
its attempts, masked headers and produced changes; admins replay it here, a dry-run diff first.

Queries are `tributary.app.events_query`'s and replays `tributary.app.replays`', the ones `/v1/events…` and
`tributary events …` run: this module only turns a form into their arguments and renders."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, render_template, request

from tributary.app.dashboard.guard import admin_only
from tributary.app.dashboard.views import db, reader, runtime, secret_key, visible_projects
from tributary.app.domain_errors import DomainError
from tributary.app.errors import APIError, http_error
from tributary.app.events_query import (
    FILTER_ARGS,
    STATUSES,
    event_detail,
    find_event,
    list_events,
    parse_page,
)
from tributary.app.replays import replay_results
from tributary.models import Source

MAX_BODY_CHARS = 64 * 1024
PAGE = 50


def _args() -> dict[str, list[str]]:
    """The form's non-empty fields as the list API's arguments."""
    wanted = (*FILTER_ARGS, "cursor")
    return {
        name: values
        for name in request.args
        if name in wanted and (values := [v.strip() for v in request.args.getlist(name) if v.strip()])
    }


def _page_args(args: dict[str, list[str]], cursor: str | None) -> list[tuple[str, str]]:
    pairs = [(k, v[0]) for k, v in args.items() if k != "cursor"]
    return [*pairs, ("cursor", cursor)] if cursor else pairs


def events() -> tuple[str, int]:
    args = _args()
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    next_cursor = None
    status = 200
    with db().session() as session:
        projects = visible_projects(session)
        try:
            query, _, cursor = parse_page(args)
            page = list_events(session, reader(), query, limit=PAGE, cursor=cursor, secret_key=secret_key())
            rows, next_cursor = page.events, page.next_cursor
        except (APIError, DomainError) as refused:
            exc = http_error(refused)
            status = exc.status
            errors = exc.details or [{"field": None, "message": exc.message}]
    return render_template(
        "events.html",
        rows=rows,
        errors=errors,
        filters={k: v[0] for k, v in args.items()},
        statuses=STATUSES,
        projects=projects,
        next_args=_page_args(args, next_cursor) if next_cursor else None,
        first_args=_page_args(args, None) if "cursor" in args else None,
    ), status


def body_text(detail: dict[str, Any]) -> tuple[str | None, bool]:
    """The raw body, pretty-printed when it is JSON (None once retention purged it); and whether
    it was cut."""
    if detail["body_encoding"] is None:
        return None, False
    body = detail["body"]
    text = json.dumps(body, indent=2, ensure_ascii=False) if detail["body_encoding"] == "json" else body
    return text[:MAX_BODY_CHARS], len(text) > MAX_BODY_CHARS


def _render(event_id: str, **extra: Any) -> str:
    with db().session() as session:
        event = find_event(session, reader(), event_id)
        detail = event_detail(session, event)
        source = session.get(Source, event.source_id) if event.source_id else None
        awaiting = event.awaiting if event.status == "deferred" else None
    body, cut = body_text(detail)
    customers = {
        c["customer"]["id"]: c["customer"]["email"] for c in detail["changes"] if c["customer"]["id"]
    }
    return render_template(
        "event.html",
        e=detail,
        source=source,
        awaiting=awaiting,
        customers=customers,
        body=body,
        cut=cut,
        **extra,
    )


def event(event_id: str) -> str:
    return _render(event_id, preview=None, replayed=None)


@admin_only
def replay(event_id: str) -> str:
    """`action=preview`: the dry run's diff, nothing written; `action=apply`: the real replay."""
    dry_run = request.form.get("action") != "apply"
    with db().session() as session:
        target = find_event(session, reader(), event_id).id
    [result] = replay_results(runtime(), [target], dry_run)
    if dry_run:
        return _render(target, preview=result, replayed=None)
    return _render(target, preview=None, replayed=result)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/events", "events", events)
    bp.add_url_rule("/events/<event_id>", "event", event)
    bp.add_url_rule("/events/<event_id>/replay", "replay_event", replay, methods=["POST"])
