"""Replays as the API and the CLI share them: plan (dry run), create, find, render. The replaying
itself is workers/replay.py, imported inside the functions that run it so that the web process
loads the worker's graph only when a replay is asked for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app.customer_query import Reader
from tributary.app.domain_errors import Conflict, NotFound
from tributary.models import Event, Replay
from tributary.models.base import isoformat
from tributary.models.event_query import EventFilters, event_statement
from tributary.runtime.process import Runtime

SAMPLE_SIZE = 20


def replay_results(runtime: Runtime, event_ids: list[str], dry_run: bool) -> list[dict[str, Any]]:
    from tributary.workers.replay import ReplayRefused, replay_events

    try:
        results = replay_events(runtime, event_ids, dry_run=dry_run)
    except ReplayRefused as exc:
        raise Conflict(exc.code, str(exc)) from None
    return [{**r.to_json(), "dry_run": dry_run} for r in results]


def plan_replay(runtime: Runtime, filters: EventFilters) -> dict[str, Any]:
    """The dry run of a bulk replay: how many events, and the diffs of the oldest few."""
    from tributary.workers.replay import count_matching

    with runtime.db.session() as session:
        count = count_matching(session, filters)
        sample_ids = list(
            session.scalars(
                event_statement(filters, Event.id, dialect=runtime.db.engine.dialect.name)
                .where(Event.purged_at.is_(None))
                .order_by(Event.id)
                .limit(SAMPLE_SIZE)
            )
        )
    sample = replay_results(runtime, sample_ids, True) if sample_ids else []
    return {"dry_run": True, "count": count, "sample": sample}


def create_replay(session: Session, filters: EventFilters, project_id: str | None) -> Replay:
    from tributary.workers.replay import count_matching

    replay = Replay(
        account_id=filters.account_id,
        project_id=project_id,
        filters=filters.to_json(),
        total=count_matching(session, filters),
    )
    session.add(replay)
    session.flush()
    return replay


def find_replay(session: Session, reader: Reader, replay_id: str, *, lock: bool = False) -> Replay:
    stmt = select(Replay).where(Replay.id == replay_id, Replay.account_id == reader.account_id)
    if reader.project_id is not None:
        stmt = stmt.where(Replay.project_id == reader.project_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    replay = session.scalar(stmt)
    if replay is None:
        raise NotFound("replay_not_found", "no such replay")
    return replay


def replay_json(replay: Replay) -> dict[str, Any]:
    filters = {k: v for k, v in replay.filters.items() if k != "account_id" and v is not None}
    return {
        "id": replay.id,
        "state": replay.state,
        "total": replay.total,
        "done": replay.done,
        "failed": replay.failed,
        "filters": filters,
        "error": replay.error,
        "created_at": isoformat(replay.created_at),
        "started_at": isoformat(replay.started_at),
        "finished_at": isoformat(replay.finished_at),
    }
