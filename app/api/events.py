"""Operator API for stored events and replays (SPEC §5, admin): `GET /v1/events`,
`GET /v1/events/<id>`, `POST /v1/events/<id>/replay`, `POST /v1/events/replay` and
`GET|DELETE /v1/replays/<id>`. Queries live in app/events_query.py, replay in workers/replay.py."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from tributary.app.auth import Principal, authenticate
from tributary.app.customer_args import MAX_LIMIT, Problems
from tributary.app.customer_query import Reader
from tributary.app.errors import APIError
from tributary.app.events_query import (
    FILTER_ARGS,
    STATUSES,
    event_detail,
    find_event,
    list_events,
    parse_filter_body,
    parse_page,
)
from tributary.app.openapi import QueryParam, describe
from tributary.app.ops_schemas import (
    EventDetail,
    EventList,
    EventReplayOut,
    ReplayOut,
    ReplayPlan,
    ReplayRequest,
)
from tributary.app.replays import create_replay, find_replay, plan_replay, replay_json, replay_results
from tributary.models import Replay
from tributary.models.base import utcnow
from tributary.models.event_query import EventFilters
from tributary.runtime.process import Runtime

bp = Blueprint("events", __name__)

_TIME = {"type": "string", "format": "date-time"}
FILTER_QUERY = [
    QueryParam(
        "status",
        "pending, processed, ignored, failed or deferred (waiting for a person).",
        {"type": "string", "enum": list(STATUSES)},
    ),
    QueryParam("source", "Source id (`src_…`)."),
    QueryParam("connector", "Connector name (`stripe`, `clerk`, ...) or `identify`/`ping`."),
    QueryParam("type", "Event type, exactly."),
    QueryParam("email", "Events whose payload named this email, and events that touched its customer."),
    QueryParam("project", "Project slug."),
    QueryParam("since", "Received at or after (ISO 8601).", _TIME),
    QueryParam("until", "Received before (ISO 8601).", _TIME),
]
LIST_QUERY = [
    *FILTER_QUERY,
    QueryParam(
        "limit", f"Page size, 1 to {MAX_LIMIT}.", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
    ),
    QueryParam("cursor", "`next_cursor` of the previous page, with the same filters."),
]


def _runtime() -> Runtime:
    runtime: Runtime = current_app.extensions["tributary"].runtime
    return runtime


def _reader(principal: Principal) -> Reader:
    return Reader(principal.account_id, principal.project_id)


def _args() -> dict[str, list[str]]:
    return {name: request.args.getlist(name) for name in request.args}


def _json(data: Any, status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    return response


@bp.get("/v1/events")
@describe(
    summary="List stored events, newest first",
    tag="ops",
    scope="admin",
    query=LIST_QUERY,
    responses={200: EventList},
    errors=(400, 401, 403, 404, 429),
)
def get_events() -> Response:
    principal = authenticate("admin")
    query, limit, cursor = parse_page(_args())
    with _runtime().db.session() as session:
        page = list_events(
            session,
            _reader(principal),
            query,
            limit=limit,
            cursor=cursor,
            secret_key=current_app.config["SECRET_KEY"],
        )
    return jsonify(data=page.events, next_cursor=page.next_cursor)


@bp.get("/v1/events/<event_id>")
@describe(
    summary="An event: raw body, masked headers, every attempt, the changes it produced",
    tag="ops",
    scope="admin",
    responses={200: EventDetail},
    errors=(401, 403, 404, 429),
)
def get_event(event_id: str) -> Response:
    principal = authenticate("admin")
    with _runtime().db.session() as session:
        return jsonify(event_detail(session, find_event(session, _reader(principal), event_id)))


def _dry_run_flag() -> bool:
    """`?dry_run=true` or `{"dry_run": true}`; anything else that is not a clear boolean is a 400."""
    problems = Problems()
    values = request.args.getlist("dry_run")
    unknown = [name for name in request.args if name != "dry_run"]
    for name in unknown:
        problems.add(name, "unknown query parameter", "unknown_parameter")
    flag = False
    if len(values) > 1:
        problems.add("dry_run", "given more than once", "repeated_parameter")
    elif values:
        if values[0].lower() not in ("true", "false", "1", "0"):
            problems.add("dry_run", "true or false")
        flag = values[0].lower() in ("true", "1")
    raw = request.get_data(cache=False)
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            raise APIError(400, "malformed_json", "the request body is not valid JSON") from None
        if (
            not isinstance(body, dict)
            or set(body) - {"dry_run"}
            or not isinstance(body.get("dry_run", False), bool)
        ):
            problems.add("dry_run", 'the body is `{"dry_run": true|false}`')
        else:
            flag = flag or bool(body.get("dry_run", False))
    problems.raise_any()
    return flag


@bp.post("/v1/events/<event_id>/replay")
@describe(
    summary="Replay an event with today's connector code (`?dry_run=true`: the diff, nothing written)",
    tag="ops",
    scope="admin",
    query=[QueryParam("dry_run", "Answer the diff without writing.", {"type": "boolean", "default": False})],
    responses={200: EventReplayOut},
    errors=(400, 401, 403, 404, 409, 429),
)
def replay_one(event_id: str) -> Response:
    principal = authenticate("admin")
    dry_run = _dry_run_flag()
    with _runtime().db.session() as session:
        event = find_event(session, _reader(principal), event_id)
        target = event.id
    return jsonify(replay_results(_runtime(), [target], dry_run)[0])


def _bulk_request(principal: Principal, session: Session) -> tuple[EventFilters, bool]:
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise APIError(400, "malformed_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise APIError(400, "malformed_body", "the request body must be a JSON object")
    problems = Problems()
    for name in set(body) - {*FILTER_ARGS, "dry_run"}:
        problems.add(name, "unknown field", "unknown_field")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        problems.add("dry_run", "true or false")
    query = parse_filter_body(body, problems)
    if not any(body.get(name) is not None for name in FILTER_ARGS):
        problems.add(
            "filters",
            "name at least one filter (status, source, connector, type, email, project, since, until)",
        )
    problems.raise_any()
    return query.bind(session, _reader(principal)), bool(dry_run)


@bp.post("/v1/events/replay")
@describe(
    summary="Replay the events a filter selects: a dry run answers the count and sample diffs; "
    "a real run starts a background replay",
    tag="ops",
    scope="admin",
    body=ReplayRequest,
    responses={200: ReplayPlan, 202: ReplayOut},
    errors=(400, 401, 403, 404, 409, 429, 503),
)
def replay_many() -> Response:
    principal = authenticate("admin")
    runtime = _runtime()
    with runtime.db.session() as session:
        filters, dry_run = _bulk_request(principal, session)
    if dry_run:
        return jsonify(plan_replay(runtime, filters))
    with runtime.db.write_session() as session, session.begin():
        data = replay_json(create_replay(session, filters, principal.project_id))
    from tributary.workers.replay import (
        enqueue_replay,  # the worker's code, loaded when a replay is asked for
    )

    try:
        enqueue_replay(runtime, data["id"])
    except RedisError:
        with runtime.db.write_session() as session, session.begin():
            replay = session.get(Replay, data["id"])
            if replay is not None:  # never left `queued` with no job to run it
                replay.state, replay.error, replay.finished_at = (
                    "failed",
                    "the queue was unreachable",
                    utcnow(),
                )
        raise APIError(
            503, "queue_unavailable", "Redis is unreachable, so the replay cannot be queued; retry later"
        ) from None
    return _json(data, 202)


@bp.get("/v1/replays/<replay_id>")
@describe(
    summary="A background replay's progress",
    tag="ops",
    scope="admin",
    responses={200: ReplayOut},
    errors=(401, 403, 404, 429),
)
def get_replay(replay_id: str) -> Response:
    principal = authenticate("admin")
    with _runtime().db.session() as session:
        return jsonify(replay_json(find_replay(session, _reader(principal), replay_id)))


@bp.delete("/v1/replays/<replay_id>")
@describe(
    summary="Cancel a background replay (after the batch in flight)",
    tag="ops",
    scope="admin",
    responses={200: ReplayOut},
    errors=(401, 403, 404, 429),
)
def delete_replay(replay_id: str) -> Response:
    from tributary.workers.replay import cancel_replay

    principal = authenticate("admin")
    with _runtime().db.write_session() as session, session.begin():
        replay = find_replay(session, _reader(principal), replay_id, lock=True)
        cancel_replay(session, replay)
        data = replay_json(replay)
    return jsonify(data)
