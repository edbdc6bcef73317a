"""Test fixtures on real parts.

Embedded mode (default): a SQLite file and the embedded redis-server, both in a temporary folder.
Server mode (`DATABASE_URL` and `REDIS_URL` set): a fresh PostgreSQL database and a free Redis db
index for this run only, dropped and flushed at the end, so concurrent runs never meet.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import text

from tests.helpers import auth, dangling_references, make_key, temporary_database
from tributary.app import create_app
from tributary.app.accounts import ensure_account
from tributary.app.metrics import flush_request_timings
from tributary.models import Base, WriteGeneration
from tributary.runtime import doorbell
from tributary.runtime.config import Settings
from tributary.runtime.embedded_redis import EmbeddedRedis
from tributary.runtime.migrate import upgrade
from tributary.runtime.process import Runtime, install
from tributary.workers.table_statistics import NEXT_CHECK
from tributary.workers.worker import TributaryWorker

REDIS_DB_LOCK = "tributary:test-db-lock:{}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if not configured:
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'tributary.db'}"
        return
    with temporary_database(configured, f"tributary_test_{os.getpid()}_{secrets.token_hex(4)}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("REDIS_URL")
    if not configured:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        try:
            yield server.ensure_running()
        finally:
            server.stop()
        return
    # Claim a db index no other test run holds (the lock lives in db 0 and expires if we die).
    control = Redis.from_url(configured, db=0)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    for index in range(1, 16):
        if control.set(REDIS_DB_LOCK.format(index), token, nx=True, ex=6 * 3600):
            break
    else:
        pytest.fail("no free Redis db index for this test run")
    url = (
        configured.rsplit("/", 1)[0] + f"/{index}" if configured.count("/") >= 3 else f"{configured}/{index}"
    )
    Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        flush_request_timings()  # the apps' last request timings, so none lands after the flush
        Redis.from_url(url).flushdb()
        if control.get(REDIS_DB_LOCK.format(index)) == token.encode():
            control.delete(REDIS_DB_LOCK.format(index))


@pytest.fixture(scope="session")
def base_config(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, redis_url: str
) -> dict[str, Any]:
    return {
        "TRIBUTARY_HOME": str(tmp_path_factory.mktemp("home")),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TRIBUTARY_SECRET_KEY": "test-secret",
        "TRIBUTARY_RATE_LIMIT": "off",
        "TRIBUTARY_KEY_CACHE_SECONDS": 0,
        "TRIBUTARY_BATCH_SIZE": 50,
    }


@pytest.fixture(scope="session")
def _migrated(base_config: dict[str, Any]) -> None:
    upgrade(base_config["DATABASE_URL"])


@pytest.fixture(scope="session")
def session_runtime(base_config: dict[str, Any], _migrated: None) -> Iterator[Runtime]:
    runtime = Runtime(Settings.load(base_config))
    yield runtime
    runtime.db.dispose()


def _reset(runtime: Runtime) -> None:
    doorbell.settle_all()  # a ring the last test owed must not land in this one's queue
    flush_request_timings()  # nor the last test's request timings in this one's Redis
    # write_generation's one row is a counter the worker needs (models/read_ahead.py), not data.
    tables = [
        t.name for t in reversed(Base.metadata.sorted_tables) if t.name != WriteGeneration.__tablename__
    ]
    with runtime.db.engine.begin() as conn:
        if runtime.db.is_postgres:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    runtime.redis.flushdb()


@pytest.fixture
def runtime(session_runtime: Runtime) -> Iterator[Runtime]:
    _reset(session_runtime)
    # The worker's statistics check (workers/table_statistics.py) is due by the clock, every 2 s:
    # a test counting a batch's statements saw its catalog query in one round and not the next.
    # Held off here; its own tests make it due (NEXT_CHECK = 0.0).
    NEXT_CHECK[session_runtime.db] = math.inf
    yield install(session_runtime)
    # PostgreSQL leaves seven references to the writers' locks instead of per-row checks (migration
    # 0015): every test ends by checking that whatever it wrote left none pointing at nothing.
    dangling = {name: rows for name, rows in dangling_references(session_runtime).items() if rows}
    assert not dangling, f"rows referencing a missing parent: {dangling}"


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    return create_app({"TESTING": True}, runtime=runtime)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def account_id(runtime: Runtime) -> str:
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        return account.id


@pytest.fixture
def admin_key(runtime: Runtime, account_id: str) -> str:
    return make_key(runtime, ["admin"])


@pytest.fixture
def admin(admin_key: str) -> dict[str, str]:
    return auth(admin_key)


@pytest.fixture
def drain(runtime: Runtime) -> Any:
    """Run a real RQ worker over the real queue until it is empty (scheduled retries excluded)."""

    def run() -> None:
        TributaryWorker(runtime).work(burst=True, logging_level="WARNING")

    return run


@pytest.fixture
def subprocess_env(base_config: dict[str, Any]) -> dict[str, str]:
    """Environment for `tributary` child processes that share this test's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    env.update({k: str(v) for k, v in base_config.items()})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env
