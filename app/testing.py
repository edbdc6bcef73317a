"""The app harness of the connector test kit: a `tributary.connectors.testkit.Harness` over a running
Tributary (its Flask app and its runtime), and the pytest plugin that provides it.

A third-party connector package adds `pytest_plugins = ["tributary.app.testing"]` to its `conftest.py` and
gets the fixture `tributary_harness`: a throwaway Tributary (SQLite and the embedded Redis in a
temporary folder) on which `tributary.connectors.testkit.ConnectorContract` runs. Tributary's own tests
override the fixture with a harness on the suite's database (tests/connectors/conftest.py).

It lives in the app layer because it boots the app and runs the worker; the suite and the signers
stay in `tributary.connectors.testkit`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tributary.connectors.base import InboundRequest
from tributary.connectors.testkit.contract import StoredEvent

if TYPE_CHECKING:
    from flask import Flask

    from tributary.runtime.process import Runtime

__all__ = ["AppHarness", "embedded_harness", "tributary_harness"]


class AppHarness:
    """A `Harness` over a Tributary app and its runtime (database, Redis, queue). Thread-safe:
    each `post` uses its own test client."""

    def __init__(self, app: Flask, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    def create_source(
        self, connector: str, *, secrets: Sequence[str] = (), options: Mapping[str, Any] | None = None
    ) -> str:
        from tributary.app.accounts import ensure_account, get_project
        from tributary.app.sources import create_source

        with self.runtime.db.write_session() as session, session.begin():
            account, _ = ensure_account(session)
            project = get_project(session, account.id, "default")
            source = create_source(
                session,
                account.id,
                connector=connector,
                project=project,
                secrets=secrets,
                options=options or {},
            )
            return source.id

    def post(self, source_id: str, request: InboundRequest) -> tuple[int, Any]:
        response = self.app.test_client().open(
            f"/webhooks/{source_id}",
            method=request.method,
            data=request.body,
            headers=list(request.headers.items()),
            query_string=dict(request.query),
        )
        return response.status_code, response.get_json(silent=True)

    def drain(self) -> None:
        from tributary.runtime.process import install
        from tributary.workers.worker import TributaryWorker

        install(self.runtime)
        TributaryWorker(self.runtime).work(burst=True, logging_level="WARNING")

    def events(self, source_id: str) -> list[StoredEvent]:
        from sqlalchemy import func, select

        from tributary.models import Event, TimelineEntry

        effects = (
            select(func.count())
            .select_from(TimelineEntry)
            .where(TimelineEntry.event_id == Event.id)
            .scalar_subquery()
        )
        with self.runtime.db.session() as session:
            rows = session.execute(
                select(Event.id, Event.provider_event_id, Event.type, Event.status, Event.last_error, effects)
                .where(Event.source_id == source_id)
                .order_by(Event.id)
            )
            return [StoredEvent(*row) for row in rows]


@contextmanager
def embedded_harness(home: Path) -> Iterator[AppHarness]:
    """A throwaway Tributary under `home`: SQLite, the embedded Redis, migrated, with its account."""
    from tributary.app import create_app
    from tributary.app.accounts import ensure_account
    from tributary.runtime.config import Settings
    from tributary.runtime.embedded_redis import EmbeddedRedis
    from tributary.runtime.migrate import upgrade
    from tributary.runtime.process import Runtime, install

    home.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis(home / "redis")
    url = redis.ensure_running()
    settings = Settings.load(
        {
            "TRIBUTARY_HOME": str(home),
            "DATABASE_URL": f"sqlite:///{home / 'tributary.db'}",
            "REDIS_URL": url,
            "TRIBUTARY_SECRET_KEY": "connector-test-kit",
            "TRIBUTARY_RATE_LIMIT": "off",
            "TRIBUTARY_KEY_CACHE_SECONDS": 0,
        }
    )
    upgrade(settings.database_url)
    runtime = install(Runtime(settings))
    with runtime.db.write_session() as session, session.begin():
        ensure_account(session)
    try:
        yield AppHarness(create_app({"TESTING": True}, runtime=runtime), runtime)
    finally:
        runtime.db.dispose()
        redis.stop()


@pytest.fixture(scope="session")
def _tributary_embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHarness]:
    with embedded_harness(tmp_path_factory.mktemp("tributary")) as harness:
        yield harness


@pytest.fixture
def tributary_harness(_tributary_embedded: AppHarness) -> AppHarness:
    """The default harness for third-party packages (`pytest_plugins = ["tributary.app.testing"]`).
    A `tributary_harness` fixture in a conftest.py overrides it."""
    return _tributary_embedded
