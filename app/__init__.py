"""Tributary's Flask application factory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Request, Response, current_app
from flask.json.provider import JSONProvider
from flask.sessions import SessionInterface, SessionMixin
from sqlalchemy import select

from tributary.app.auth import KeyCache
from tributary.app.errors import register_error_handlers
from tributary.app.event_store import EventStore
from tributary.app.json_provider import StrictJSONProvider
from tributary.app.metrics import RequestTimings
from tributary.app.ratelimit import RateLimiter
from tributary.app.sources import SourceCache
from tributary.models import Project
from tributary.runtime.config import Settings
from tributary.runtime.process import Runtime

__version__ = "0.1.0"


class NoFlaskSession(SessionInterface):
    """Nothing uses Flask's session: the dashboard signs a cookie of its own
    (app/dashboard/session.py). Flask's default still opened one on every request, building its
    signing serializer each time: about 4 % of a web process's CPU under identify load. Here it is
    never opened, so `flask.session` is Flask's NullSession, which refuses any write."""

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


@dataclass
class ProjectCache:
    """(account, slug) -> project id for the ingest path; projects are never renamed."""

    ttl: float
    _entries: dict[tuple[str, str], tuple[float, str | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, runtime: Runtime, account_id: str, slug: str) -> str | None:
        now = time.monotonic()
        entry = self._entries.get((account_id, slug))
        if entry is not None and entry[0] > now:
            return entry[1]
        with runtime.db.session() as session:
            project_id = session.scalar(
                select(Project.id).where(Project.account_id == account_id, Project.slug == slug)
            )
        with self._lock:
            # Misses are cached briefly too, so a flood naming a bogus project stays cheap.
            self._entries[(account_id, slug)] = (now + (self.ttl if project_id else 1.0), project_id)
        return project_id


@dataclass
class Extensions:
    runtime: Runtime
    key_cache: KeyCache
    rate_limiter: RateLimiter
    projects: ProjectCache
    # Webhook sources by id for the delivery path; the sources API and dashboard invalidate it.
    sources: SourceCache
    # Group commit of the single-event doors (identify, ping, one-event webhooks).
    events: EventStore
    # This app's HTTP request durations (app/api/metrics.py times each request; app/fast_path.py
    # the requests it serves).
    timings: RequestTimings


def create_app(config: Mapping[str, Any] | None = None, *, runtime: Runtime | None = None) -> Flask:
    app = Flask(__name__)
    app.session_interface = NoFlaskSession()
    settings = runtime.settings if runtime else Settings.load(config)
    runtime = runtime or Runtime(settings)
    app.config.update(
        TRIBUTARY_VERSION=__version__,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SECRET_KEY=settings.secret_key,
        JSON_SORT_KEYS=False,
    )
    app.config.update({k: v for k, v in (config or {}).items() if k.isupper()})
    app.extensions["tributary"] = Extensions(
        runtime=runtime,
        key_cache=KeyCache(settings.key_cache_seconds),
        rate_limiter=RateLimiter(lambda: runtime.redis, settings.rate_limit),
        projects=ProjectCache(settings.key_cache_seconds),
        sources=SourceCache(settings.key_cache_seconds),
        events=EventStore.for_runtime(runtime),
        timings=RequestTimings(lambda: runtime.redis),
    )
    strict_json: JSONProvider = StrictJSONProvider(app)
    app.json = strict_json
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logging.getLogger("tributary").setLevel(logging.INFO)
    register_error_handlers(app)

    from tributary.app.api import (
        admin,
        batch,
        customers,
        events,
        health,
        imports,
        ingest,
        jobs,
        metrics,
        rejections,
        sources,
        webhooks,
    )
    from tributary.app.dashboard import register as register_dashboard
    from tributary.app.fast_path import FastPath
    from tributary.connectors.registry import registry

    # Load every connector now: a broken plugin or a bad TRIBUTARY_CONNECTOR_MODULES fails at
    # startup, not on the first delivery.
    registry()
    surfaces = (ingest, batch, webhooks, customers, admin, sources, health, imports, events, jobs)
    for module in (*surfaces, metrics, rejections):
        app.register_blueprint(module.bp)
    metrics.init_app(app)
    register_dashboard(app)
    FastPath.install(app)
    return app


def extensions(app: Flask) -> Extensions:
    ext: Extensions = app.extensions["tributary"]
    return ext


def source_cache() -> SourceCache:
    """The running app's cache of webhook sources."""
    return extensions(current_app).sources
