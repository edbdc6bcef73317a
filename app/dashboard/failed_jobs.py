"""Failed RQ jobs, read-only: what failed, the exception, the event it was applying.

Interim, like `event_query`: retry / delete / retry all belong to the ops API being built
separately; when it lands, this page should call its module and gain those buttons (admin only).
A project-bound viewer sees only jobs of its project's events; jobs tied to no event (a `drain`
that crashed) only account-wide viewers see.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.customer_query import Reader
from models import Event
from workers.runtime import Runtime

EVENT_JOB_PREFIX = "event-"
MAX_JOBS = 100


@dataclass(frozen=True, slots=True)
class FailedJob:
    id: str
    description: str
    error: str
    trace: str
    failed_at: datetime | None
    event_id: str | None
    event_status: str | None


def _last_line(trace: str) -> str:
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no exception recorded"


def failed_jobs(runtime: Runtime, session: Session, reader: Reader) -> tuple[list[FailedJob], str | None]:
    """The newest failed jobs the reader may see, and an error message when Redis cannot be read."""
    try:
        registry = FailedJobRegistry(queue=runtime.queue)
        ids = registry.get_job_ids(0, MAX_JOBS - 1, desc=True)
        jobs = [job for job in Job.fetch_many(ids, connection=runtime.redis) if job is not None]
    except RedisError as exc:
        return [], f"the queue cannot be read right now ({type(exc).__name__})"
    event_ids = [j.id.removeprefix(EVENT_JOB_PREFIX) for j in jobs if j.id.startswith(EVENT_JOB_PREFIX)]
    stmt = select(Event.id, Event.status).where(
        Event.id.in_(event_ids), Event.account_id == reader.account_id
    )
    if reader.project_id is not None:
        stmt = stmt.where(Event.project_id == reader.project_id)
    visible: dict[str, Any] = {event_id: status for event_id, status in session.execute(stmt)}
    out = []
    for job in jobs:
        event_id = job.id.removeprefix(EVENT_JOB_PREFIX) if job.id.startswith(EVENT_JOB_PREFIX) else None
        if (event_id is not None and event_id not in visible) or (event_id is None and reader.project_id):
            continue
        result = job.latest_result()
        trace = (result.exc_string if result is not None else None) or ""
        out.append(
            FailedJob(
                id=job.id,
                description=job.description or job.func_name or job.id,
                error=_last_line(trace),
                trace=trace,
                failed_at=result.created_at if result is not None else job.ended_at,
                event_id=event_id,
                event_status=visible.get(event_id) if event_id else None,
            )
        )
    return out, None
