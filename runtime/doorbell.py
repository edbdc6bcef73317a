"""The enqueue doorbell: how the web process (and an import) asks a worker to drain.

Ingest does not enqueue a job per event. After committing an event it rings a doorbell: a Redis
key set with NX. Only the request that sets it enqueues a `drain` job, so a burst of a thousand
requests costs one job. The job itself lives in the worker (workers/jobs.py) and is named here by
its dotted path: RQ stores jobs by that name anyway, and importing the worker's graph into the web
process just to take a function's name would load every merge rule at `import tributary.app.wsgi`.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from tributary.runtime.process import Runtime

log = logging.getLogger(__name__)

DOORBELL_KEY = "tributary:drain:queued"
# A queued drain job that never ran (Redis lost it) must not silence the doorbell forever.
DOORBELL_TTL_SECONDS = 60
# The job the doorbell schedules (workers/jobs.py `drain`).
DRAIN_JOB = "tributary.workers.jobs.drain"
# After a Redis failure, skip the doorbell for a moment: requests stay fast during an outage and
# the sweeper schedules what they stored.
BREAKER_SECONDS = 5.0


def ring(runtime: Runtime) -> bool:
    """Make sure a drain job is queued. Never raises: the sweeper covers a Redis outage."""
    if time.monotonic() < runtime.doorbell_paused_until:
        return False
    try:
        if runtime.fast_redis.set(DOORBELL_KEY, 1, nx=True, ex=DOORBELL_TTL_SECONDS):
            runtime.fast_queue.enqueue(DRAIN_JOB, result_ttl=0, failure_ttl=7 * 86400, job_timeout=600)
            return True
    except RedisError as exc:
        runtime.doorbell_paused_until = time.monotonic() + BREAKER_SECONDS
        log.warning("could not schedule a drain job (%s); the sweeper will pick the events up", exc)
    return False
