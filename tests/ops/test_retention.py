"""Retention purges the raw bodies of old processed and ignored events, never failed or pending ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.helpers import identify
from tributary.models import Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime
from tributary.workers.retention import RETENTION_LOCK_KEY, purge
from tributary.workers.sweep import SWEEP_LOCK_KEY, sweep_if_due


def _age_all(runtime: Runtime, days: int) -> None:
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).values(received_at=utcnow() - timedelta(days=days)))


def test_purge_keeps_failed_and_pending_events_and_every_row(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    token = admin["Authorization"].split()[1]
    processed = identify(client, token, email="old@example.com", name="Old")["event_id"]
    drain()
    failed = identify(client, token, email="failed@example.com")["event_id"]
    pending = identify(client, token, email="pending@example.com")["event_id"]
    ignored = identify(client, token, email="ignored@example.com")["event_id"]
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == failed).values(status="failed", last_error="boom"))
        session.execute(update(Event).where(Event.id == ignored).values(status="ignored"))
    _age_all(runtime, 31)
    fresh = identify(client, token, email="fresh@example.com")["event_id"]
    drain()  # processes `pending` and `fresh`; keep `pending` pending for the check below
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).where(Event.id == pending).values(status="pending"))

    assert purge(runtime) == 2  # the old processed and the old ignored event
    with runtime.db.session() as session:
        rows = {e.id: e for e in session.scalars(select(Event))}
    assert (
        rows[processed].purged_at is not None
        and rows[processed].body == b""
        and rows[processed].payload is None
    )
    assert rows[ignored].purged_at is not None
    for kept in (failed, pending, fresh):
        assert rows[kept].purged_at is None and rows[kept].body != b""
    assert rows[processed].status == "processed" and rows[processed].changes  # the row and its report stay
    detail = client.get(f"/v1/events/{processed}", headers=admin).get_json()
    assert detail["body"] is None and detail["purged_at"] and detail["changes"]  # the timeline stays
    timeline = client.get("/v1/customers/old@example.com/timeline", headers=admin).get_json()["data"]
    assert timeline and timeline[-1]["event"]["id"] == processed
    assert purge(runtime) == 0  # idempotent


def test_the_periodic_sweep_purges_on_its_own_lock(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, event_retention_days=1))
    identify(client, admin["Authorization"].split()[1], email="a@example.com")
    drain()
    _age_all(runtime, 2)
    # The drain's worker already swept (its maintenance runs at start): let the next interval come.
    runtime.redis.delete(SWEEP_LOCK_KEY, RETENTION_LOCK_KEY)
    assert sweep_if_due(runtime) == 0
    assert sweep_if_due(runtime) is None  # one sweeper per interval
    with runtime.db.session() as session:
        assert session.scalar(select(Event.purged_at)) is not None
