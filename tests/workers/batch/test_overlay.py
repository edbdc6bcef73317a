"""One event's changes reach the batch through one commit (workers/batch/overlay.py): an event that
fails halfway leaves the batch, and so the database, as if it had never been in it."""

from __future__ import annotations

from datetime import UTC, datetime

from flask.testing import FlaskClient
from sqlalchemy import select

from tests.workers.test_email_change import (  # noqa: F401 - the fixture registers the channel
    _changes_channel,
    apply,
    at,
    record,
    signup,
    statuses,
    timeline_rows,
    update,
)
from tributary.connectors.changes import CustomerChange
from tributary.models import Event, TimelineEntry
from tributary.runtime.process import Runtime
from tributary.workers.batch.email_record import EmailRecord
from tributary.workers.batch.merge_rules import CustomerRecord, ProjectRecord
from tributary.workers.batch.overlay import EventOverlay
from tributary.workers.batch.state import BatchState, Tombstone

NOW = datetime(2026, 3, 2, tzinfo=UTC)
REF = ("acc_1", "clerk", "user_1")


def _state(runtime: Runtime) -> BatchState:
    with runtime.db.session() as session:
        state = BatchState(session, NOW)
    state.records["cus_a"] = CustomerRecord(name="Ada")
    state.addresses["cus_a"] = EmailRecord("a@example.com")
    state.by_email[("acc_1", "a@example.com")] = "cus_a"
    return state


def _event() -> Event:
    return Event(id="evt_1", account_id="acc_1", project_id="prj_1", type="test")


def _fill(overlay: EventOverlay) -> None:
    change = CustomerChange(occurred_at=at(1), email="b@example.com")
    overlay.records["cus_a"] = CustomerRecord(name="Grace")
    overlay.projects[("cus_a", "prj_1")] = ProjectRecord(first_seen_at=at(1), status="paid")
    overlay.addresses["cus_a"] = EmailRecord("a@example.com").renamed("b@example.com", 1)
    overlay.owners[("acc_1", "a@example.com")] = None
    overlay.owners[("acc_1", "b@example.com")] = "cus_a"
    overlay.links[REF] = "cus_a"
    overlay.tombstones[("acc_1", "clerk", "user_0")] = Tombstone("cus_a", 1)
    overlay.renamed.add("cus_a")
    overlay.used.add("cus_a")
    overlay.record_timeline("cus_a", change, {"email_changed": ["a@example.com", "b@example.com"]})


def _view(state: BatchState) -> tuple[object, ...]:
    return (
        dict(state.records),
        dict(state.project_records),
        dict(state.addresses),
        dict(state.by_email),
        dict(state.new_identities),
        dict(state.tombstones),
        set(state.renamed),
        set(state.used),
        set(state.touched),
        list(state.timeline),
    )


def test_an_overlay_changes_nothing_in_the_batch_until_it_commits(runtime: Runtime) -> None:
    state = _state(runtime)
    before = _view(state)
    overlay = EventOverlay(state, _event())
    _fill(overlay)
    # Reads see the event's own changes; the batch does not.
    assert overlay.customer("cus_a").name == "Grace" and overlay.owner("a@example.com") is None
    assert _view(state) == before

    overlay.commit()
    assert state.records["cus_a"].name == "Grace"
    assert state.project_records[("cus_a", "prj_1")].status == "paid"
    assert state.addresses["cus_a"].email == "b@example.com"
    assert state.by_email == {("acc_1", "b@example.com"): "cus_a"}
    assert state.new_identities == {REF: "cus_a"} and state.renamed == {"cus_a"}
    assert state.tombstones_changed == {("acc_1", "clerk", "user_0")}
    assert state.touched == {"cus_a"} and [row["event_id"] for row in state.timeline] == ["evt_1"]


def test_an_event_that_fails_after_an_email_change_leaves_no_trace(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    """The first change renames user_1's customer, the second cannot be applied (it names nobody):
    the event fails alone, and neither the rename nor its timeline row is written."""
    [created] = apply(runtime, signup("user_1", "ann@example.com", 0, name="Ann"))
    customer_id = record(client, admin_key, "ann@example.com")["id"]

    failing, fine = apply(
        runtime,
        [update("user_1", "ann@new.example.com", 10), CustomerChange(occurred_at=at(11), name="Nobody")],
        update("user_1", "ann@example.com", 5, name="Ann B."),
    )

    assert statuses(runtime, [created, failing, fine]) == ["processed", "failed", "processed"]
    ann = record(client, admin_key, customer_id)
    assert (ann["email"], ann["name"], ann["past_emails"]) == ("ann@example.com", "Ann B.", [])
    assert failing not in {row.event_id for row in timeline_rows(runtime, customer_id)}
    with runtime.db.session() as session:
        assert session.scalars(select(TimelineEntry).where(TimelineEntry.event_id == failing)).all() == []
