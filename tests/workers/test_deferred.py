"""Events that cannot be attributed yet wait as `deferred` (issue #12, defect 2): applied as soon as
an event names their person (same batch or later), woken by the sweeper if a concurrent batch
missed them, ignored with the reason after TRIBUTARY_DEFER_SECONDS. Never `failed`, never retried."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from tests.connectors.provider_fixtures import dumps, fixture, make_source
from tests.workers.test_email_change import (  # noqa: F401 - the fixture registers the channel
    _changes_channel,
    apply,
    at,
    clerk,
    deletion,
    record,
    signup,
    statuses,
)
from tributary.app.accounts import ensure_account
from tributary.connectors.changes import CustomerChange
from tributary.connectors.testkit import svix_headers
from tributary.models import Customer, Event, Identity
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime
from tributary.workers.deferred import count_deferred
from tributary.workers.jobs import drain_batch
from tributary.workers.sweep import sweep_deferred


def activity(user: str, minute: int) -> CustomerChange:
    return CustomerChange(occurred_at=at(minute), identity=clerk(user), activity=True)


def waiting(runtime: Runtime, event_id: str) -> tuple[str, str | None, int]:
    with runtime.db.session() as session:
        event = session.get(Event, event_id)
        assert event is not None
        return event.status, event.awaiting, event.attempts


def test_an_event_for_an_unknown_identity_is_deferred_not_failed(runtime: Runtime) -> None:
    [early] = apply(runtime, activity("user_1", 5))
    assert waiting(runtime, early) == ("deferred", "clerk:user_1", 1)
    with runtime.db.session() as session:
        assert count_deferred(session) == 1
        assert "no customer is known for clerk id 'user_1' yet" in (
            session.get(Event, early).last_error or ""
        )  # type: ignore[union-attr]
    assert runtime.queue.scheduled_job_registry.count == 0


def test_a_later_event_in_the_same_batch_makes_the_person_known(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    early, _ = apply(runtime, activity("user_1", 5), signup("user_1", "ada@example.com", 0))
    assert statuses(runtime, [early]) == ["processed"]
    assert waiting(runtime, early) == ("processed", None, 2)
    assert record(client, admin_key, "ada@example.com")["last_activity_at"] == "2026-03-01T00:05:00.000000Z"


def test_a_deletion_that_names_its_customer_wakes_the_waiting_events(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    """Deleted before anything else arrived: the events after the deletion wait until an older
    event with the email tells whose identity it was."""
    apply(runtime, deletion("user_1", 30))
    [late] = apply(runtime, activity("user_1", 40))
    assert statuses(runtime, [late]) == ["deferred"]
    apply(runtime, signup("user_1", "ada@example.com", 0))
    assert statuses(runtime, [late]) == ["processed"]
    customer = record(client, admin_key, "ada@example.com")
    assert customer["last_activity_at"] == "2026-03-01T00:40:00.000000Z" and customer["identities"] == []


def test_the_sweeper_wakes_an_event_whose_person_became_known_without_waking_it(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    [early] = apply(runtime, activity("user_1", 5))
    # A concurrent batch linked the identity and committed without seeing the deferred event.
    [created] = apply(runtime, CustomerChange(occurred_at=at(0), email="ada@example.com"))
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        customer_id = session.scalar(select(Customer.id).where(Customer.email == "ada@example.com"))
        session.add(
            Identity(account_id=account.id, source="clerk", external_id="user_1", customer_id=customer_id)
        )
    assert statuses(runtime, [early, created]) == ["deferred", "processed"]
    assert sweep_deferred(runtime) == (1, 0)
    assert waiting(runtime, early)[:2] == ("pending", None)
    drain_batch(runtime)
    assert statuses(runtime, [early]) == ["processed"]
    assert record(client, admin_key, "ada@example.com")["last_activity_at"] == "2026-03-01T00:05:00.000000Z"


def test_an_event_that_waited_too_long_is_ignored_with_the_reason(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    [old, recent] = apply(runtime, activity("user_1", 5), activity("user_2", 6))
    with runtime.db.session() as session, session.begin():
        session.execute(
            update(Event).where(Event.id == old).values(received_at=utcnow() - timedelta(seconds=3601))
        )
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, defer_seconds=3600))
    assert sweep_deferred(runtime) == (0, 1)
    assert statuses(runtime, [old, recent]) == ["ignored", "deferred"]
    with runtime.db.session() as session:
        reason = session.get(Event, old).last_error or ""  # type: ignore[union-attr]
    assert "no event named clerk:user_1 within 3600 s (TRIBUTARY_DEFER_SECONDS)" in reason


def test_defer_seconds_is_configurable() -> None:
    from tributary.runtime.config import Settings

    assert Settings.load({"TRIBUTARY_DEFER_SECONDS": "60", "TRIBUTARY_SECRET_KEY": "x"}).defer_seconds == 60
    assert Settings.load({"TRIBUTARY_SECRET_KEY": "x"}).defer_seconds == 7 * 86400


# -- through Clerk's own example payloads -----------------------------------------------------------

SECRET = "whsec_" + "QkVJTkcgQUxJVkUgSVMgQSBMT05HIFNUT1JZ"
USER = "user_2pX9dLrV7kQm3TzW8bN4cHfYs1A"


def test_clerk_events_of_a_user_signed_up_without_email_wait_for_the_address(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    """Clerk's example `user.created` has no email: ignored. The user's session and first
    email-less update wait; the update that adds an address applies them all."""
    source_id = make_source(runtime, "clerk", [SECRET])
    created = fixture("clerk/user.created.json")
    created["data"]["email_addresses"] = []
    created["data"]["primary_email_address_id"] = None
    no_email_update = fixture("clerk/user.updated.json")
    no_email_update["data"]["email_addresses"] = []
    no_email_update["data"]["primary_email_address_id"] = None
    no_email_update["timestamp"] = created["timestamp"] + 1000
    session_created = fixture("clerk/session.created.json")
    with_email = fixture("clerk/user.updated.json")
    with_email["timestamp"] = session_created["timestamp"] + 1000

    def send(msg_id: str, payload: dict[str, object]) -> None:
        body = dumps(payload)
        headers = {**svix_headers(body, SECRET, msg_id=msg_id), "Content-Type": "application/json"}
        assert client.post(f"/webhooks/{source_id}", data=body, headers=headers).status_code == 200
        drain()

    send("msg_created", created)
    send("msg_update_no_email", no_email_update)
    send("msg_session", session_created)
    with runtime.db.session() as session:
        found = {e: s for e, s in session.execute(select(Event.provider_event_id, Event.status))}
    assert found == {"msg_created": "ignored", "msg_update_no_email": "deferred", "msg_session": "deferred"}
    send("msg_email", with_email)
    with runtime.db.session() as session:
        found = {e: s for e, s in session.execute(select(Event.provider_event_id, Event.status))}
    assert found == {
        "msg_created": "ignored",
        "msg_update_no_email": "processed",
        "msg_session": "processed",
        "msg_email": "processed",
    }
    person = client.get("/v1/customers/ada.lovelace@example.org", headers=admin).get_json()
    assert person["last_activity_at"] == "2024-06-03T10:00:00.530000Z"
    assert person["identities"] == [{"source": "clerk", "external_id": USER}]
