"""Migration 0009 on an ANALYZEd SQLite database: the new indexes get statistics too."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tributary.models import Account, Customer, CustomerProject, Event, Project
from tributary.models.base import utcnow
from tributary.runtime.migrate import upgrade

NEW = ("ix_events_account_status_received", "ix_customer_projects_project_status")


def _seed(url: str) -> None:
    """A few rows in the indexed tables: ANALYZE records nothing for an empty table."""
    engine = create_engine(url)
    now = utcnow()
    with Session(engine) as session, session.begin():
        account = Account(name="a")
        session.add(account)
        session.flush()
        project = Project(account_id=account.id, slug="p", name="p")
        session.add(project)
        session.flush()
        for n in range(3):
            customer = Customer(account_id=account.id, email=f"u{n}@example.com", past_emails=[], clock={})
            session.add(customer)
            session.flush()
            session.add(
                CustomerProject(
                    customer_id=customer.id, project_id=project.id, status="paid", params={}, clock={},
                    first_seen_at=now, last_activity_at=now, updated_at=now,
                )
            )  # fmt: skip
            session.add(
                Event(
                    account_id=account.id, project_id=project.id, channel="api", type="identify",
                    occurred_at=now, received_at=now, body=b"{}", headers={}, status="processed",
                )
            )  # fmt: skip
    engine.dispose()


def _stat_indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT idx FROM sqlite_stat1 WHERE idx IS NOT NULL")}


def test_analyzed_sqlite_gets_statistics_for_the_new_indexes(tmp_path: Path) -> None:
    # With statistics for every index but the new ones, SQLite's planner takes the new ones for the
    # most selective and the plain event list sorts every event; the migration analyzes them.
    path = tmp_path / "analyzed.db"
    upgrade(f"sqlite:///{path}", "0008_imports")
    _seed(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("ANALYZE")
    before = _stat_indexes(path)
    assert "ix_events_account_received" in before and not before & set(NEW)
    upgrade(f"sqlite:///{path}")
    assert set(NEW) <= _stat_indexes(path)


def test_unanalyzed_sqlite_stays_without_statistics(tmp_path: Path) -> None:
    # No statistics at all is a consistent state too; the migration must not start a partial one.
    path = tmp_path / "plain.db"
    upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() is None
