"""RQ's failed-job registry as operators see it: list, show, retry, delete (SPEC §5 `/v1/jobs/failed`).

A job lands there when its last automatic retry failed (`TRIBUTARY_RETRY_INTERVALS`): the event
stays `failed` for good until an operator acts. Retrying requeues the same job, which re-runs its
event through the worker (a processed event is left alone); deleting a job only forgets the job,
the event stays `failed` and listed in `GET /v1/events?status=failed`, where it can be replayed.

Event jobs are named `event-<event id>`, so the registry and the events table join on that; a job
that names no event (a crashed drain job) is visible to account-wide keys only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from tributary.app.customer_query import Reader
from tributary.app.domain_errors import Conflict, NotFound
from tributary.models import Event
from tributary.models.base import isoformat
from tributary.runtime.process import Runtime

EVENT_JOB_PREFIX = "event-"
MAX_LISTED = 1000


def registries(runtime: Runtime) -> list[FailedJobRegistry]:
    return [
        FailedJobRegistry(queue=runtime.queue),
        FailedJobRegistry(queue=runtime.replay_queue),
    ]


def failed_count(runtime: Runtime) -> int:
    return sum(registry.count for registry in registries(runtime))


def event_id_of(job_id: str) -> str | None:
    return job_id.removeprefix(EVENT_JOB_PREFIX) if job_id.startswith(EVENT_JOB_PREFIX) else None


@dataclass(frozen=True, slots=True)
class FailedJobView:
    job: Job
    registry: FailedJobRegistry
    event: Event | None

    def to_json(self) -> dict[str, Any]:
        kind, message = _exception(self.job, self.event)
        return {
            "id": self.job.id,
            "event_id": event_id_of(self.job.id),
            "exception_type": kind,
            "exception": message,
            "failed_at": isoformat(_aware(self.job.ended_at)),
            "attempts": self.event.attempts if self.event is not None else None,
            "event_status": self.event.status if self.event is not None else None,
        }


def _aware(moment: datetime | None) -> datetime | None:
    # RQ's timestamps are UTC, naive in some versions.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _exception(job: Job, event: Event | None) -> tuple[str | None, str | None]:
    """The event's own error (`Type: message`, what the connector raised) when there is one; else
    the last line of the job's traceback."""
    text = event.last_error if event is not None else None
    if not text:
        result = job.latest_result()
        lines = (result.exc_string or "").strip().splitlines() if result is not None else []
        text = lines[-1] if lines else None
    if not text:
        return None, None
    kind, sep, message = text.partition(": ")
    if sep and kind.replace(".", "").replace("_", "").isalnum():
        return kind, message
    return None, text


def _visible_events(runtime: Runtime, reader: Reader, job_ids: list[str]) -> dict[str, Event]:
    event_ids = [eid for jid in job_ids if (eid := event_id_of(jid))]
    if not event_ids:
        return {}
    with runtime.db.session() as session:
        # Found by id alone, then kept if the reader may see them: beside the account's condition,
        # SQLite read every event of the account to find these few.
        found = session.scalars(select(Event).where(Event.id.in_(event_ids)))
        return {
            e.id: e
            for e in found
            if e.account_id == reader.account_id and reader.project_id in (None, e.project_id)
        }


def _visible(reader: Reader, job_id: str, events: dict[str, Event]) -> bool:
    event_id = event_id_of(job_id)
    if event_id is None:
        return reader.project_id is None
    return event_id in events


def list_failed(runtime: Runtime, reader: Reader) -> list[FailedJobView]:
    """The failed jobs the reader may see, most recently failed first."""
    views: list[FailedJobView] = []
    for registry in registries(runtime):
        ids = registry.get_job_ids(0, MAX_LISTED - 1, desc=True)
        events = _visible_events(runtime, reader, ids)
        jobs = Job.fetch_many(ids, connection=runtime.redis)
        for job_id, job in zip(ids, jobs, strict=True):
            if job is None:
                registry.remove(job_id)  # its hash expired: the registry entry is a dangling id
                continue
            if _visible(reader, job_id, events):
                views.append(FailedJobView(job, registry, events.get(event_id_of(job_id) or "")))
    views.sort(key=lambda v: (v.job.ended_at is not None, v.job.ended_at), reverse=True)
    return views


def find_failed(runtime: Runtime, reader: Reader, job_id: str) -> FailedJobView:
    not_found = NotFound("job_not_found", "no such failed job")
    if len(job_id) > 200:
        raise not_found
    for registry in registries(runtime):
        if registry.connection.zscore(registry.key, job_id) is None:
            continue
        events = _visible_events(runtime, reader, [job_id])
        if not _visible(reader, job_id, events):
            raise not_found
        try:
            job = Job.fetch(job_id, connection=runtime.redis)
        except NoSuchJobError:
            registry.remove(job_id)
            raise not_found from None
        return FailedJobView(job, registry, events.get(event_id_of(job_id) or ""))
    raise not_found


def retry_failed(runtime: Runtime, view: FailedJobView) -> None:
    """Requeue the job. Its retry budget starts again, so a job that fails anew returns here after
    the configured schedule rather than at once."""
    intervals = list(runtime.settings.retry_intervals)
    job = view.job
    if event_id_of(job.id) is not None and len(intervals) > 1:
        job.retries_left = len(intervals) - 1
        job.retry_intervals = intervals[1:]
        job.save()
    try:
        view.registry.requeue(job)
    except InvalidJobOperation:
        raise Conflict("job_not_failed", "the job left the failed registry meanwhile") from None


def delete_failed(view: FailedJobView) -> None:
    view.registry.remove(view.job, delete_job=True)
