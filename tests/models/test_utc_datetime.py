"""UTC moments on SQLite (models/base.py `UTCDateTime`): one text per moment, whoever writes it.

SQLite compares these columns as text, so a moment must have exactly one spelling: SQLAlchemy's
SQLite DATETIME text, in UTC, always with its six digits of microseconds. The checks read the
stored text back with plain SQL, beside what the ORM reads."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Column, MetaData, String, Table, insert, select, text
from sqlalchemy.dialects.sqlite.base import DATETIME
from sqlalchemy.exc import StatementError

from tests.helpers import identify, make_key
from tributary.models import Event
from tributary.models.base import UTCDateTime
from tributary.models.session import Database
from tributary.runtime.migrate import upgrade
from tributary.runtime.process import Runtime

MOMENTS = [
    datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC),  # a whole second: sqlite3's adapter dropped ".000000"
    datetime(2026, 12, 4, 10, 0, 0, 7, tzinfo=UTC),
    datetime(5, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC),  # a year of one digit, padded as SQLAlchemy does
    datetime(2026, 12, 4, 15, 30, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),  # stored in UTC
]

_metadata = MetaData()
_moments = Table("moments", _metadata, Column("id", String, primary_key=True), Column("at", UTCDateTime))


def _sqlalchemy_text(moment: datetime) -> str:
    """What SQLAlchemy's own SQLite DATETIME stores for the same moment in UTC."""
    process = DATETIME().bind_processor(Database("sqlite://").engine.dialect)
    stored: str = process(moment.astimezone(UTC).replace(tzinfo=None))
    return stored


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/moments.db")
    _metadata.create_all(db.engine)
    return db


def test_each_moment_is_stored_as_sqlalchemys_text_and_read_back_in_utc(sqlite_db: Database) -> None:
    with sqlite_db.engine.begin() as conn:
        conn.execute(insert(_moments), [{"id": str(n), "at": moment} for n, moment in enumerate(MOMENTS)])
        stored = dict(conn.execute(text("SELECT id, at FROM moments")).all())
        read = dict(conn.execute(select(_moments.c.id, _moments.c.at)).all())
    for n, moment in enumerate(MOMENTS):
        assert stored[str(n)] == _sqlalchemy_text(moment)
        assert read[str(n)] == moment
        assert read[str(n)].tzinfo is UTC


def test_a_naive_moment_is_refused(sqlite_db: Database) -> None:
    with sqlite_db.engine.begin() as conn, pytest.raises(StatementError, match="naive datetime"):
        conn.execute(insert(_moments), {"id": "x", "at": datetime(2026, 12, 4, 10, 0, 0)})


@pytest.mark.parametrize(
    ("written", "moment"),
    [
        ("2026-12-04 10:00:00", datetime(2026, 12, 4, 10, tzinfo=UTC)),  # SQL's CURRENT_TIMESTAMP
        ("2026-12-04 10:00:00.5", datetime(2026, 12, 4, 10, 0, 0, 500_000, tzinfo=UTC)),
        ("2026-12-04T12:00:00+02:00", datetime(2026, 12, 4, 10, tzinfo=UTC)),
    ],
)
def test_text_written_by_sql_or_other_tools_reads_as_utc(
    sqlite_db: Database, written: str, moment: datetime
) -> None:
    with sqlite_db.engine.begin() as conn:
        conn.execute(text("INSERT INTO moments (id, at) VALUES ('x', :at)"), {"at": written})
        read = conn.execute(select(_moments.c.at)).scalar_one()
    assert read == moment
    assert read.tzinfo is UTC


def test_an_identify_at_a_whole_second_is_stored_with_its_microseconds(
    runtime: Runtime, client: FlaskClient
) -> None:
    """The web's shared write binds through the column types itself (app/sqlite_event_writes.py);
    it stored `2026-12-04 10:00:00`, which sorts before the `…00.000000` every other writer (and
    every query's bound moment) uses for the same second."""
    if runtime.db.is_postgres:
        pytest.skip("PostgreSQL stores timestamptz, not text")
    identify(
        client, make_key(runtime, ["ingest"]), email="whole@example.com", timestamp="2026-12-04T10:00:00Z"
    )
    with runtime.db.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT occurred_at FROM events WHERE email = 'whole@example.com'")
        ).scalar_one()
        found = conn.execute(
            select(Event.id).where(Event.occurred_at >= datetime(2026, 12, 4, 10, tzinfo=UTC))
        ).all()
    assert stored == "2026-12-04 10:00:00.000000"
    assert len(found) == 1


def test_the_migration_gives_whole_seconds_already_stored_their_microseconds(tmp_path: Path) -> None:
    """Rows the shared write stored before the fix (migrations/versions/0017_sqlite_whole_seconds.py)."""
    url = f"sqlite:///{tmp_path}/upgraded.db"
    upgrade(url, "0016_params_statistics")
    with contextlib.closing(sqlite3.connect(tmp_path / "upgraded.db")) as conn, conn:
        conn.execute("INSERT INTO accounts (id, name, created_at) VALUES ('acc', 'a', '2026-12-04 10:00:00')")
        conn.execute(
            "INSERT INTO projects (id, account_id, slug, name, created_at)"
            " VALUES ('prj', 'acc', 'p', 'P', '2026-12-04 10:00:00')"
        )
        conn.execute(
            "INSERT INTO events (id, account_id, project_id, channel, type, occurred_at, received_at, body,"
            " headers, status, attempts) VALUES ('evt_1', 'acc', 'prj', 'identify', 'identify',"
            " '2026-12-04 10:00:00', '2026-12-04 10:00:01.250000', x'7b7d', '{}', 'pending', 0)"
        )
    upgrade(url)
    with contextlib.closing(sqlite3.connect(tmp_path / "upgraded.db")) as conn:
        stored = conn.execute("SELECT occurred_at, received_at FROM events").fetchone()
    assert stored == ("2026-12-04 10:00:00.000000", "2026-12-04 10:00:01.250000")
