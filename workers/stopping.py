"""Whether this worker process was asked to stop (SIGTERM) while a job ran.

RQ finishes the job in hand before a warm stop, and a drain job can run for its whole time slice
(`jobs.DRAIN_SLICE_SECONDS`, 30 s: as long as a platform's grace period before SIGKILL on Heroku
and Kubernetes). The worker sets this when the stop is asked for (`worker.py`); a drain job reads
it at each batch boundary, ends there and hands the doorbell on to another worker. Its own module
so the worker and the CLI that starts it need not import the batch core to reach it."""

from __future__ import annotations

import threading

STOP_REQUESTED = threading.Event()
