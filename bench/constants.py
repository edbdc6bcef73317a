"""Every name by which the bench reaches the product: WSGI strings, CLI commands, module paths.

If the product's import paths move (they did once: `app.wsgi:app` became `tributary.app.wsgi:app`),
this is the one file to change. Everything else in bench/ starts processes and imports product code through
these names only.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# The web app and its shipped server configuration (the Procfile's `web` line:
# `gunicorn -c python:tributary.app.gunicorn_conf tributary.app.wsgi:app`).
WSGI_APP = "tributary.app.wsgi:app"
GUNICORN_CONF = "python:tributary.app.gunicorn_conf"
# `tributary serve` runs the same configuration with this many web processes by default.
SERVE_WEB_WORKERS = 2
# Keys the default configuration's identify traffic is spread over, in both the PostgreSQL and the
# embedded phase (bench/ingest.py `ingest_phase` says why).
INGEST_KEYS = 8

# The CLI, run with the bench's own interpreter so the venv's install is the one measured.
CLI_MODULE = "tributary.app.cli"
CLI = (sys.executable, "-m", CLI_MODULE)

# Product code the harness calls in-process (module, attribute).
SETTINGS = ("tributary.runtime.config", "Settings")
RUNTIME = ("tributary.runtime.process", "Runtime")
RING = ("tributary.runtime.doorbell", "ring")
DRAIN_JOB = "tributary.workers.jobs.drain"  # as RQ logs it: "Successfully completed <this>(...)"

# The bench's own apps and jobs.
BARE_APP = "bench.bare_app:app"
NOOP_JOB = "bench.noop.noop"
BREAKDOWN_MODULE = "bench.breakdown"
EXPLAIN_MODULE = "bench.explain"
LOADGEN_MODULE = "bench.loadgen"

# Environment variables the product reads; inherited values are dropped so a run is reproducible.
PRODUCT_ENV_PREFIXES = ("DATABASE_URL", "REDIS_URL", "TRIBUTARY_", "WEB_CONCURRENCY", "PORT")


def product(name: tuple[str, str]) -> Any:
    """The product object named by one of the (module, attribute) pairs above."""
    module, attribute = name
    return getattr(importlib.import_module(module), attribute)


def cli(*args: str) -> list[str]:
    """A `tributary …` command line."""
    return [*CLI, *args]
