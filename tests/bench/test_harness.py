"""The bench's own database and Redis db (bench/harness.py `Environment`): given back at the end of
a run even when the PostgreSQL server cut the harness's connections during it (a restart)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import REDIS_DB_LOCK, Environment
from bench.options import parse_args


def _bench_environment(tmp_path: Path) -> Environment:
    """An opened environment on the servers the test run uses, on a bench Redis db no one holds."""
    database_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if not database_url.startswith("postgresql") or not redis_url:
        pytest.skip("the bench's environment is made on PostgreSQL and Redis servers")
    server = redis_url.rsplit("/", 1)[0] if redis_url.count("/") >= 3 else redis_url
    for index in (12, 13, 14, 15):
        env = Environment(
            parse_args(["--pg", database_url, "--redis", server, "--redis-db", str(index)]), tmp_path
        )
        try:
            env.open()
        except SystemExit:  # a bench run holds it
            continue
        return env
    pytest.skip("every bench Redis db is in use")


def test_a_run_gives_back_its_database_and_redis_db_after_a_server_restart(tmp_path: Path) -> None:
    env = _bench_environment(tmp_path)
    admin = create_engine(make_url(env.cfg.pg_url), isolation_level="AUTOCOMMIT")
    try:
        with env._admin.connect() as conn:  # the harness's pooled connection, as after creating
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:  # what a restart does to it
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        env.close()
    with admin.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": env.database}
        )
        assert left.scalar() == 0
    admin.dispose()
    control = Redis.from_url(f"{env.cfg.redis_url}/0")
    assert control.get(REDIS_DB_LOCK.format(env.cfg.redis_db)) is None
