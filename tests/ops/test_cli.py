"""`tributary events|jobs|replays`: the ops API's filters and shapes on the database directly,
progress bars and summaries for long operations, one-line errors."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

import tributary.app.cli.ops  # noqa: F401 - registers the command groups, as main() does
from tests.helpers import identify
from tests.ops.test_events_access import _broken_event, _work
from tributary.app.accounts import ensure_account, get_project
from tributary.app.cli import cli
from tributary.models import Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime


def _run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(cli, list(args))


def _json(app: Flask, *args: str) -> Any:
    result = _run(app, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def three(client: FlaskClient, admin_key: str, drain: Callable[[], None]) -> list[str]:
    ids = [
        identify(client, admin_key, email=f"u{i}@example.com", status="trial")["event_id"] for i in range(3)
    ]
    drain()
    return ids


def test_events_list_show_and_bad_filters(app: Flask, three: list[str]) -> None:
    listed = _json(app, "events", "list", "--connector", "identify", "--limit", "2")
    assert [e["id"] for e in listed["data"]] == [three[2], three[1]] and listed["next_cursor"]
    rest = _json(
        app, "events", "list", "--connector", "identify", "--limit", "2", "--cursor", listed["next_cursor"]
    )
    assert [e["id"] for e in rest["data"]] == [three[0]]
    human = _run(app, "events", "list", "--status", "processed")
    assert human.exit_code == 0 and three[0] in human.output and "processed" in human.output
    shown = _json(app, "events", "show", three[0])
    assert (
        shown["body"]["email"] == "u0@example.com" and shown["attempt_history"][0]["outcome"] == "processed"
    )
    text = _run(app, "events", "show", three[0]).output
    assert "attempt 1:" in text and "u0@example.com" in text

    bad = _run(app, "events", "list", "--status", "weird", "--since", "yesterday")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "--status: choose among" in bad.output and "--since:" in bad.output
    missing = _run(app, "events", "show", "evt_nope")
    assert missing.exit_code == 1 and missing.output.strip() == "Error: no such event"


def test_single_replay_dry_run_and_bulk_replay_with_progress(
    app: Flask, runtime: Runtime, three: list[str]
) -> None:
    result = _json(app, "events", "replay", three[0], "--dry-run")
    assert result["dry_run"] is True and result["diff"] == []
    assert "no change" in _run(app, "events", "replay", three[0], "--dry-run").output
    plan = _json(app, "events", "replay", "--connector", "identify", "--dry-run")
    assert plan["count"] == 3 and len(plan["sample"]) == 3
    bulk = _run(app, "events", "replay", "--connector", "identify")
    assert bulk.exit_code == 0, bulk.output
    assert "replaying" in bulk.output and "completed: 3 of 3 events replayed, 0 failed" in bulk.output
    replay_id = bulk.output.split("replay ")[-1].split()[0]
    shown = _json(app, "replays", "show", replay_id)
    assert (shown["state"], shown["done"], shown["total"]) == ("completed", 3, 3)
    queued = _json(app, "events", "replay", "--connector", "identify", "--background")
    assert queued["state"] == "queued"
    assert "cancelled" in _run(app, "replays", "cancel", queued["id"]).output
    usage = _run(app, "events", "replay")
    assert usage.exit_code == 2 and "at least one filter" in usage.output


def test_jobs_failed_retry_all_and_delete(
    app: Flask, runtime: Runtime, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        get_project(session, account.id, "default")
    broken = [_broken_event(runtime, "default") for _ in range(2)]
    _work(runtime)
    failed = _json(app, "jobs", "failed")["data"]
    assert sorted(j["event_id"] for j in failed) == sorted(broken)
    assert "NormalizeError" in _run(app, "jobs", "failed").output
    assert _json(app, "jobs", "show", failed[0]["id"])["event_status"] == "failed"
    retried = _run(app, "jobs", "retry", "--all")
    assert retried.exit_code == 0 and "requeued 2 failed jobs" in retried.output
    _work(runtime)
    assert _run(app, "jobs", "retry", failed[0]["id"]).output.startswith("requeued")
    _work(runtime)
    assert _run(app, "jobs", "delete", failed[1]["id"]).output.startswith("deleted")
    gone = _run(app, "jobs", "delete", failed[1]["id"])
    assert gone.exit_code == 1 and gone.output.strip() == "Error: no such failed job"
    assert _run(app, "jobs", "retry").exit_code == 2


def test_purge_with_progress(app: Flask, runtime: Runtime, three: list[str]) -> None:
    with runtime.db.session() as session, session.begin():
        session.execute(update(Event).values(received_at=utcnow() - timedelta(days=40)))
    result = _run(app, "events", "purge")
    assert result.exit_code == 0 and "purged the raw bodies of 3 events older than 30 days" in result.output
    assert _json(app, "events", "show", three[0])["purged_at"]
    refused = _run(app, "events", "replay", three[0])
    assert refused.exit_code == 1 and "purged by retention" in refused.output
