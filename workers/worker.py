"""The `tributary worker` process: an RQ worker that also sweeps for stranded events."""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import SimpleWorker
from rq.utils import now as rq_now

from workers.imports import reconcile_if_due
from workers.runtime import Runtime
from workers.sweep import sweep_if_due

log = logging.getLogger(__name__)


class TributaryWorker(SimpleWorker):
    """Runs jobs in-process (no fork per job): drain jobs are few and long, and keeping the
    database pool warm across them matters more than fork isolation.

    RQ calls `run_maintenance_tasks` between dequeues; a short worker TTL keeps dequeue waits
    short so the sweeper runs every `sweep_interval_seconds` even when the queue is idle, while
    RQ's own registry cleaning keeps its usual pace.
    """

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        interval = runtime.settings.sweep_interval_seconds
        kwargs.setdefault("worker_ttl", max(interval + 15, 20))
        super().__init__([runtime.queue], connection=runtime.redis, **kwargs)
        self.runtime = runtime
        self._registry_interval = self.maintenance_interval
        self.maintenance_interval = interval
        self._registries_cleaned_at: float | None = None

    def run_maintenance_tasks(self) -> None:
        try:
            sweep_if_due(self.runtime)
        except Exception:
            log.exception("sweep failed; will try again next interval")
        try:
            reconcile_if_due(self.runtime)
        except Exception:
            log.exception("scheduling the periodic reconcile failed; will try again next interval")
        now = time.monotonic()
        if (
            self._registries_cleaned_at is None
            or now - self._registries_cleaned_at >= self._registry_interval
        ):
            self._registries_cleaned_at = now
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # sets last_cleaned_at
        else:
            self.last_cleaned_at = rq_now()  # type: ignore[assignment]  # RQ annotates it as None
