"""Replay stored events through the connector code running now, with a before → after diff.

A replay re-splits the stored raw body with the connector's `envelopes` (so a fixed parser takes
effect), then applies the event with the very applier the worker uses (`apply_events`): the event
time guards make a repeat harmless. A dry run is the same code inside a transaction that is rolled
back, so it can never disagree with a real run. The diff compares the touched customers' records
as the replaying transaction sees them with what another connection still sees (the committed
state before it), so the event is applied once either way.

Bulk replays run as a background job on their own queue (`TRIBUTARY_REPLAY_QUEUE`), which workers
serve only when the main queue is empty; the job yields after a short slice and re-enqueues itself,
so fresh traffic waits at most one slice behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, get_current_job
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tributary.connectors.base import Headers, InboundRequest, MalformedPayload
from tributary.connectors.registry import UnknownConnector, registry
from tributary.models import Customer, CustomerProject, Event, Identity, Project, Replay
from tributary.models.base import isoformat, utcnow
from tributary.models.event_query import EventFilters, event_statement
from tributary.runtime.process import Runtime, current
from tributary.workers.batch.apply import apply_events, claim_events
from tributary.workers.connector_changes import source_config
from tributary.workers.failpoints import failpoint
from tributary.workers.normalize import API_CHANNELS

log = logging.getLogger(__name__)

REPLAY_BATCH = 100
REPLAY_SLICE_SECONDS = 10.0
# A slice is about REPLAY_SLICE_SECONDS; RQ gives up on a job whose worker died this long + 60 s
# after its last heartbeat, and the sweeper then resumes the replay (workers/replay_watch.py).
REPLAY_JOB_TIMEOUT = 120
# How long a replay's runner is remembered: far longer than any replay waits in its queue.
RUNNER_TTL_SECONDS = 30 * 86400
TERMINAL_STATES = ("completed", "cancelled", "failed")
SETTLED = ("processed", "ignored")
# The body app/erasure.py leaves in the events of an erased customer.
REDACTED_BODY = b'{"redacted": true}'


class ReplayRefused(Exception):
    """The event cannot be replayed: retention purged its raw body, or its customer was erased."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class EventReplay:
    event_id: str
    status_before: str
    status: str
    error: str | None
    diff: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "status_before": self.status_before,
            "status": self.status,
            "error": self.error,
            "diff": self.diff,
        }


def refresh_payload(session: Session, event: Event) -> None:
    """Re-split the stored raw body with today's connector, keeping the stored split when the
    connector cannot find this event in it any more (the error then shows when it normalizes)."""
    if event.purged_at is not None:
        raise ReplayRefused(
            "event_purged", f"event {event.id}: its raw body was purged by retention; it cannot be replayed"
        )
    if event.channel in API_CHANNELS or not event.body:
        return  # identify/ping normalize from the body itself
    try:
        connector = registry().get(event.channel)
    except UnknownConnector:
        return  # normalizing will fail with the reason
    inbound = InboundRequest(body=event.body, headers=Headers(dict(event.headers or {})))
    try:
        envelopes = connector.envelopes(inbound, source_config(session, event))
    except (MalformedPayload, ValueError) as exc:
        log.info(
            "replay of %s: the connector no longer parses the body (%s); using the stored split",
            event.id,
            exc,
        )
        return
    for envelope in envelopes:
        if envelope.event_id == (event.provider_event_id or event.id):
            event.payload = dict(envelope.payload)
            event.type = envelope.type[:200] or event.type
            return


def snapshot(session: Session, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each customer's record flattened to `field path -> value` (absent customers are absent)."""
    out: dict[str, dict[str, Any]] = {}
    if not customer_ids:
        return out
    for c in session.scalars(select(Customer).where(Customer.id.in_(customer_ids))):
        out[c.id] = {
            "email": c.email,
            "name": c.name,
            "past_emails": list(c.past_emails),
            "last_activity_at": isoformat(c.last_activity_at),
        }
    rows = session.execute(
        select(CustomerProject, Project.slug)
        .join(Project, Project.id == CustomerProject.project_id)
        .where(CustomerProject.customer_id.in_(customer_ids))
    )
    for row, slug in rows:
        record = out.get(row.customer_id)
        if record is None:
            continue
        base = f"projects.{slug}"
        record[f"{base}.status"] = row.status
        record[f"{base}.first_seen_at"] = isoformat(row.first_seen_at)
        record[f"{base}.last_activity_at"] = isoformat(row.last_activity_at)
        for key, value in (row.params or {}).items():
            record[f"{base}.params.{key}"] = value
    identities = session.execute(
        select(Identity.customer_id, Identity.source, Identity.external_id)
        .where(Identity.customer_id.in_(customer_ids))
        .order_by(Identity.source, Identity.external_id)
    )
    for customer_id, source, external_id in identities:
        if customer_id in out:
            out[customer_id].setdefault("identities", []).append(f"{source}:{external_id}")
    return out


def diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per customer and field: `before → after`, for every field that differs (None = absent)."""
    changes: list[dict[str, Any]] = []
    for customer_id in sorted(set(before) | set(after)):
        old, new = before.get(customer_id), after.get(customer_id)
        email = (new or old or {}).get("email")
        if old is None or new is None:
            changes.append(
                {
                    "customer_id": customer_id,
                    "email": email,
                    "field": "customer",
                    "before": "exists" if old is not None else None,
                    "after": "exists" if new is not None else None,
                }
            )
        for name in sorted(set(old or {}) | set(new or {})):
            was, now = (old or {}).get(name), (new or {}).get(name)
            if was != now:
                changes.append(
                    {"customer_id": customer_id, "email": email, "field": name, "before": was, "after": now}
                )
    return changes


def _touched(events: Sequence[Event]) -> list[str]:
    ids = {
        entry["customer_id"]
        for event in events
        for entry in (event.changes or [])
        if isinstance(entry, dict) and entry.get("customer_id")
    }
    return sorted(ids)


def _apply(session: Session, events: Sequence[Event]) -> None:
    # An erased customer's events stay erased: a bulk replay passes over them.
    live = [event for event in events if event.body != REDACTED_BODY]
    for event in live:
        refresh_payload(session, event)
    if live:
        apply_events(session, live)


def replay_events(runtime: Runtime, event_ids: Sequence[str], *, dry_run: bool) -> list[EventReplay]:
    """Replay the events (in id order) and return what each did, with its diff. A dry run rolls
    everything back; a real run commits the same work."""
    with runtime.db.write_session() as session, session.begin():
        events = claim_events(session, sorted(event_ids))
        before_status = {e.id: e.status for e in events}
        for event in events:
            if event.purged_at is not None:
                raise ReplayRefused(
                    "event_purged",
                    f"event {event.id}: its raw body was purged by retention; it cannot be replayed",
                )
            if event.body == REDACTED_BODY:
                raise ReplayRefused(
                    "event_erased", f"event {event.id}: its customer was erased; it cannot be replayed"
                )
        _apply(session, events)
        touched = _touched(events)
        after = snapshot(session, touched)
        # Another connection sees only what is committed: the records as they were before this
        # transaction (which holds their rows, so nobody else can change them meanwhile).
        with runtime.db.session() as outside:
            before = snapshot(outside, touched)
        changes = diff(before, after)
        outcome = {e.id: (e.status, e.last_error) for e in events}
        per_event = {
            e.id: {entry.get("customer_id") for entry in (e.changes or []) if isinstance(entry, dict)}
            for e in events
        }
        if dry_run:
            session.rollback()
    if not dry_run:
        settled = [
            e for e, (status, _) in outcome.items() if status in SETTLED and before_status[e] == "failed"
        ]
        forget_failed_jobs(runtime, settled)
    return [
        EventReplay(
            event_id,
            before_status[event_id],
            outcome[event_id][0],
            outcome[event_id][1],
            [c for c in changes if c["customer_id"] in per_event[event_id]],
        )
        for event_id in sorted(before_status)
    ]


def forget_failed_jobs(runtime: Runtime, event_ids: Sequence[str]) -> None:
    """An event a replay settled no longer needs its dead-letter job: drop it from the failed
    registry so the registry and the events table agree."""
    registry = FailedJobRegistry(queue=runtime.queue)
    try:
        for event_id in event_ids:
            job_id = f"event-{event_id}"
            if registry.remove(job_id):
                with suppress(NoSuchJobError):
                    Job.fetch(job_id, connection=runtime.redis).delete()
    except RedisError as exc:
        log.warning("could not drop the failed jobs of replayed events: %s", exc)


# -- background replays ------------------------------------------------------------------------------


def replay_queue(runtime: Runtime) -> Queue:
    return runtime.replay_queue


def count_matching(session: Session, filters: EventFilters) -> int:
    dialect = session.get_bind().dialect.name
    stmt = event_statement(filters, func.count(), dialect=dialect).where(Event.purged_at.is_(None))
    return int(session.scalar(stmt) or 0)


def chain_key(replay_id: str) -> str:
    """Who runs the replay now: the id of the job that will take its next slice, or a lease while
    a foreground `tributary events replay` runs it (workers/replay_watch.py)."""
    return f"tributary:replay:{replay_id}:runner"


def enqueue_replay(runtime: Runtime, replay_id: str) -> None:
    """Queue the replay's next slice and make that job its runner, in one transaction: a job that
    is not the runner (one the sweeper replaced after its worker died) stops at once."""
    with runtime.redis.pipeline() as pipe:
        job = replay_queue(runtime).enqueue(
            run_replay,
            replay_id,
            result_ttl=0,
            failure_ttl=7 * 86400,
            job_timeout=REPLAY_JOB_TIMEOUT,
            pipeline=pipe,
        )
        pipe.set(chain_key(replay_id), job.id, ex=RUNNER_TTL_SECONDS)
        pipe.execute()


def replay_step(runtime: Runtime, replay_id: str, batch: int = REPLAY_BATCH) -> bool:
    """Replay the next batch of a background replay in one transaction. False once it is over
    (finished, cancelled, or gone). Two runs of one replay at once (a resumed one beside a runner
    that was not dead after all) take turns: the replay row is locked (PostgreSQL's row lock,
    SQLite's one writer) and each batch starts after the last event the other committed."""
    with runtime.db.write_session() as session, session.begin():
        # Locked (PostgreSQL) so a cancellation waits for the batch in flight, never interleaves.
        replay = session.get(Replay, replay_id, with_for_update=runtime.db.is_postgres)
        if replay is None or replay.state in TERMINAL_STATES:
            return False
        filters = EventFilters.from_json(replay.filters)
        stmt = (
            event_statement(filters, Event.id, dialect=runtime.db.engine.dialect.name)
            .where(Event.purged_at.is_(None))
            .order_by(Event.id)
            .limit(batch)
        )
        if replay.last_event_id is not None:
            stmt = stmt.where(Event.id > replay.last_event_id)
        ids = list(session.scalars(stmt))
        if replay.state == "queued":
            replay.state, replay.started_at = "running", utcnow()
        if not ids:
            replay.state, replay.finished_at = "completed", utcnow()
            return False
        events = claim_events(session, ids)
        failed_before = {e.id for e in events if e.status == "failed"}
        _apply(session, events)
        replay.done += len(events)
        replay.failed += sum(1 for e in events if e.status == "failed")
        replay.last_event_id = ids[-1]
        settled = [e.id for e in events if e.status in SETTLED and e.id in failed_before]
    forget_failed_jobs(runtime, settled)
    return True


def run_replay(replay_id: str) -> str:
    """The replay queue's job: steps for one slice, then re-enqueues itself behind fresh traffic."""
    runtime = current()
    job = get_current_job()
    if job is not None and _superseded(runtime, replay_id, job.id):
        return "superseded"  # another job (or a foreground run) has taken the replay over
    started = time.monotonic()
    try:
        while replay_step(runtime, replay_id):
            failpoint("replay.after_batch")
            if time.monotonic() - started > REPLAY_SLICE_SECONDS:
                enqueue_replay(runtime, replay_id)
                return "yielded"
        with suppress(RedisError):
            runtime.redis.delete(chain_key(replay_id))
    except Exception as exc:
        with runtime.db.write_session() as session, session.begin():
            replay = session.get(Replay, replay_id)
            if replay is not None and replay.state not in TERMINAL_STATES:
                replay.state, replay.error, replay.finished_at = (
                    "failed",
                    f"{type(exc).__name__}: {exc}",
                    utcnow(),
                )
        raise
    return "done"


def _superseded(runtime: Runtime, replay_id: str, job_id: str) -> bool:
    try:
        runner = runner_of(runtime, replay_id)
    except RedisError:
        return False  # unknown: go on, two runs of one replay are harmless (see replay_step)
    return runner not in (None, job_id)


def runner_of(runtime: Runtime, replay_id: str) -> str | None:
    """The replay's runner (see `chain_key`), None when it has none; raises RedisError."""
    value = runtime.redis.get(chain_key(replay_id))
    return value.decode() if isinstance(value, bytes) else value


def cancel_replay(session: Session, replay: Replay) -> None:
    """Stop a replay after the batch in flight (which commits whole)."""
    if replay.state not in TERMINAL_STATES:
        replay.state, replay.finished_at = "cancelled", utcnow()
