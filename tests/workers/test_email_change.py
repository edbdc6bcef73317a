"""Email changes, merges and provider deletions in the batch applier, on the real database.

Events here carry hand-made `CustomerChange`s through an internal channel, so each rule is tested
exactly; tests/connectors/ drive the same paths through real provider deliveries.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import auth
from tributary.app.accounts import ensure_account, get_project
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.models import Customer, CustomerMerge, Event, Identity, IdentityTombstone, TimelineEntry
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch
from tributary.workers.normalize import INTERNAL_CHANNELS

CHANNEL = "test-changes"
_event_numbers = itertools.count(1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
CLERK = "clerk"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def clerk(user: str) -> IdentityRef:
    return IdentityRef(CLERK, user)


@pytest.fixture(autouse=True)
def _changes_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        INTERNAL_CHANNELS,
        CHANNEL,
        lambda _session, event: [CustomerChange.from_json(c) for c in json.loads(event.body)],
    )


def post(runtime: Runtime, *changes: CustomerChange, project: str = "default", kind: str = "test") -> str:
    """Store one pending event whose changes are `changes`; returns its id."""
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        event = Event(
            # Ids in posting order: the worker claims by id, and these tests choose the order.
            id=f"evt_test{next(_event_numbers):022d}",
            account_id=account.id,
            project_id=get_project(session, account.id, project).id,
            channel=CHANNEL,
            type=kind,
            occurred_at=changes[0].occurred_at,
            body=json.dumps([c.to_json() for c in changes]).encode(),
            headers={},
            status="pending",
            attempts=0,
        )
        session.add(event)
        return event.id


def apply(runtime: Runtime, *events: list[CustomerChange] | CustomerChange) -> list[str]:
    """Post the events (each a change or a list of changes) and apply them in one batch."""
    ids = [post(runtime, *(e if isinstance(e, list) else [e])) for e in events]
    drain_batch(runtime)
    return ids


def signup(user: str, email: str, minute: int, name: str | None = None) -> CustomerChange:
    return CustomerChange(
        occurred_at=at(minute),
        email=email,
        identity=clerk(user),
        name=name,
        status_if_absent="free",
        email_change=True,
    )


def update(user: str, email: str, minute: int, **fields: Any) -> CustomerChange:
    return CustomerChange(
        occurred_at=at(minute), email=email, identity=clerk(user), email_change=True, **fields
    )


def deletion(user: str, minute: int) -> CustomerChange:
    return CustomerChange(occurred_at=at(minute), identity=clerk(user), forget_identity=True)


def show(client: FlaskClient, admin_key: str, ref: str) -> Any:
    return client.get(f"/v1/customers/{ref}", headers=auth(admin_key))


def record(client: FlaskClient, admin_key: str, ref: str) -> dict[str, Any]:
    response = show(client, admin_key, ref)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def statuses(runtime: Runtime, ids: list[str]) -> list[str]:
    with runtime.db.session() as session:
        return [session.get(Event, i).status for i in ids]  # type: ignore[union-attr]


def customer_count(runtime: Runtime) -> int:
    with runtime.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(Customer)) or 0)


def timeline_rows(runtime: Runtime, customer_id: str) -> list[TimelineEntry]:
    with runtime.db.session() as session:
        return list(
            session.scalars(
                select(TimelineEntry)
                .where(TimelineEntry.customer_id == customer_id)
                .order_by(TimelineEntry.id)
            )
        )


# -- email changes ---------------------------------------------------------------------------------


def test_a_newer_address_renames_the_customer_and_keeps_the_old_one(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, signup("user_1", "ada@example.com", 0, name="Ada"))
    before = record(client, admin_key, "ada@example.com")
    [event_id] = apply(runtime, update("user_1", "ada@example.org", 10, name="Ada L."))
    after = record(client, admin_key, "ada@example.org")
    assert after["id"] == before["id"]
    assert after["past_emails"] == ["ada@example.com"] and after["name"] == "Ada L."
    assert after["identities"] == [{"source": "clerk", "external_id": "user_1"}]
    assert show(client, admin_key, "ada@example.com").status_code == 404
    [row] = [r for r in timeline_rows(runtime, after["id"]) if r.event_id == event_id]
    assert row.data["email_changed"] == ["ada@example.com", "ada@example.org"]
    assert customer_count(runtime) == 1  # the new address's placeholder row is gone


def test_an_older_address_arriving_late_is_only_remembered(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, update("user_1", "ada@example.org", 10, name="Ada L."))
    [late] = apply(runtime, signup("user_1", "ada@example.com", 0, name="Ada"))
    customer = record(client, admin_key, "ada@example.org")
    assert customer["past_emails"] == ["ada@example.com"]
    assert customer["name"] == "Ada L."  # the signup's name is older
    assert customer["projects"]["default"]["status"] == "free"  # a signup status fills the gap
    assert customer_count(runtime) == 1
    assert statuses(runtime, [late]) == ["processed"]


def test_the_same_changes_in_one_batch_in_either_order_give_the_same_record(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(
        runtime,
        update("user_1", "b@example.com", 10, name="B"),
        signup("user_1", "a@example.com", 0, name="A"),
    )
    one = record(client, admin_key, "b@example.com")
    apply(
        runtime,
        signup("user_2", "c@example.com", 0, name="A"),
        update("user_2", "d@example.com", 10, name="B"),
    )
    two = record(client, admin_key, "d@example.com")
    assert one["past_emails"] == ["a@example.com"] and two["past_emails"] == ["c@example.com"]
    assert one["name"] == two["name"] == "B"
    assert one["projects"]["default"]["status"] == two["projects"]["default"]["status"] == "free"
    assert customer_count(runtime) == 2


def test_renames_that_reuse_a_freed_address_in_one_batch(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    """x@ leaves customer 1 and customer 2 takes it in the same batch: the unique index on email
    must hold after every statement, whatever order the rows are written in."""
    apply(runtime, signup("user_1", "x@example.com", 0), signup("user_2", "y@example.com", 0))
    first = record(client, admin_key, "x@example.com")["id"]
    second = record(client, admin_key, "y@example.com")["id"]
    ids = apply(runtime, update("user_1", "z@example.com", 5), update("user_2", "x@example.com", 6))
    assert statuses(runtime, ids) == ["processed", "processed"]
    assert record(client, admin_key, "z@example.com")["id"] == first
    moved = record(client, admin_key, "x@example.com")
    assert moved["id"] == second and moved["past_emails"] == ["y@example.com"]
    assert customer_count(runtime) == 2


# -- merges ----------------------------------------------------------------------------------------


def test_an_email_change_onto_another_customers_address_merges_them(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    # Billing knows bea@ (a paying customer with a Stripe id); the app knows the Clerk user as anne@.
    billing = CustomerChange(
        occurred_at=at(5),
        email="bea@example.com",
        identity=IdentityRef("stripe", "cus_1"),
        status="paid",
        params={"plan": "pro", "seats": 3},
    )
    [billing_event] = apply(runtime, billing)
    [signup_event] = apply(runtime, signup("user_1", "anne@example.com", 0, name="Anne"))
    paying = record(client, admin_key, "bea@example.com")
    app_user = record(client, admin_key, "anne@example.com")
    later = update("user_1", "bea@example.com", 20, name="Bea", params={"seats": 5})
    [merge_event] = apply(runtime, later)

    merged = record(client, admin_key, "bea@example.com")
    assert merged["id"] == app_user["id"]  # the identity's customer survives
    assert merged["name"] == "Bea" and merged["past_emails"] == ["anne@example.com"]
    assert merged["identities"] == [
        {"source": "clerk", "external_id": "user_1"},
        {"source": "stripe", "external_id": "cus_1"},
    ]
    # The signup's `free` was only ever a fallback: billing's `paid` holds. Newer params win per key.
    assert merged["projects"]["default"]["status"] == "paid"
    assert merged["projects"]["default"]["params"] == {"plan": "pro", "seats": 5}

    gone = show(client, admin_key, paying["id"])
    assert gone.status_code == 404
    assert gone.get_json()["error"]["code"] == "customer_merged"
    assert gone.get_json()["error"]["details"] == {"merged_into": merged["id"]}
    with runtime.db.session() as session:
        [pointer] = session.scalars(select(CustomerMerge))
        assert (pointer.absorbed_id, pointer.survivor_id, pointer.event_id) == (
            paying["id"],
            merged["id"],
            merge_event,
        )
    # Both histories are on the survivor's timeline, and each side recorded the merge.
    rows = timeline_rows(runtime, merged["id"])
    assert {r.event_id for r in rows} >= {billing_event, signup_event, merge_event}
    merge_rows = [r.data for r in rows if r.event_id == merge_event]
    assert {"merged_into": merged["id"], "email": "bea@example.com"} in merge_rows
    assert any(
        d.get("merged") == {"absorbed_customer_id": paying["id"], "email": "bea@example.com"}
        for d in merge_rows
    )
    timeline = client.get(f"/v1/customers/{merged['id']}/timeline", headers=auth(admin_key)).get_json()
    assert merge_event in {entry["event"]["id"] for entry in timeline["data"] if entry["event"]}


def test_a_merge_keeps_the_newest_value_of_each_field_whichever_customer_had_it(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, signup("user_1", "anne@example.com", 0, name="Anne"))
    apply(
        runtime,
        CustomerChange(
            occurred_at=at(30),
            email="bea@example.com",
            name="Beatrice",
            params={"plan": "team"},
            activity=True,
        ),
    )
    apply(runtime, CustomerChange(occurred_at=at(1), email="anne@example.com", params={"plan": "solo"}))
    apply(runtime, update("user_1", "bea@example.com", 20, name="Bea"))
    merged = record(client, admin_key, "bea@example.com")
    assert merged["name"] == "Beatrice"  # set at minute 30, after the email change's name at 20
    assert merged["projects"]["default"]["params"] == {"plan": "team"}
    assert merged["last_activity_at"] == "2026-03-01T00:30:00.000000Z"
    assert customer_count(runtime) == 1


def test_a_stale_address_never_merges(runtime: Runtime, client: FlaskClient, admin_key: str) -> None:
    """user_1 left old@ at minute 10; someone else signed up with old@ later. A late copy of
    user_1's minute-0 signup must not merge the two people."""
    apply(runtime, signup("user_1", "old@example.com", 0), update("user_1", "new@example.com", 10))
    apply(runtime, signup("user_2", "old@example.com", 20, name="Second"))
    apply(runtime, signup("user_1", "old@example.com", 0))
    assert customer_count(runtime) == 2
    assert record(client, admin_key, "old@example.com")["name"] == "Second"
    assert record(client, admin_key, "new@example.com")["past_emails"] == ["old@example.com"]


@pytest.mark.parametrize("batches", ["separate", "one"])
@pytest.mark.parametrize("order", ["in order", "update first"])
def test_an_address_known_before_the_identity_converges_in_either_order(
    runtime: Runtime, client: FlaskClient, admin_key: str, order: str, batches: str
) -> None:
    """ann@ was known by email alone (identify, a waitlist entry) before user_1 signed up with it
    and then moved to bea@. A late signup is stale for user_1's customer, but the email-only
    customer held ann@ before it: they are one person, in either order."""
    known = CustomerChange(occurred_at=at(0), email="ann@example.com", params={"waitlist": True})
    events = [signup("user_1", "ann@example.com", 1, name="Ann"), update("user_1", "bea@example.com", 10)]
    if order == "update first":
        events.reverse()
    if batches == "one":
        apply(runtime, known, *events)
    else:
        for event in (known, *events):
            apply(runtime, event)
    customer = record(client, admin_key, "bea@example.com")
    assert customer_count(runtime) == 1
    assert customer["past_emails"] == ["ann@example.com"] and customer["name"] == "Ann"
    assert customer["identities"] == [{"source": "clerk", "external_id": "user_1"}]
    assert customer["projects"]["default"]["params"] == {"waitlist": True}
    assert show(client, admin_key, "ann@example.com").status_code == 404


@pytest.mark.parametrize("last", ["signup", "email-only change"])
def test_an_address_first_known_after_the_stale_assertion_never_merges(
    runtime: Runtime, client: FlaskClient, admin_key: str, last: str
) -> None:
    """ann@ shows up by email alone only after user_1 had already moved to bea@: it may be
    someone who got the address later, so it stays apart whichever arrives last."""
    events = [
        CustomerChange(occurred_at=at(20), email="ann@example.com", name="Someone"),
        signup("user_1", "ann@example.com", 1),
    ]
    if last == "email-only change":
        events.reverse()
    for event in [update("user_1", "bea@example.com", 10), *events]:
        apply(runtime, event)
    assert customer_count(runtime) == 2
    assert record(client, admin_key, "ann@example.com")["name"] == "Someone"
    assert record(client, admin_key, "bea@example.com")["past_emails"] == ["ann@example.com"]


@pytest.mark.parametrize("batches", ["separate", "one"])
def test_an_address_known_before_the_identity_but_delivered_last_converges(
    runtime: Runtime, client: FlaskClient, admin_key: str, batches: str
) -> None:
    """Nobody holds ann@ when the email-only change arrives, but user_1 asserted it at minute 1,
    after that change: in order the signup would have joined that customer, so the change is
    user_1's customer's."""
    events = [
        update("user_1", "bea@example.com", 10),
        signup("user_1", "ann@example.com", 1, name="Ann"),
        CustomerChange(occurred_at=at(0), email="ann@example.com", params={"waitlist": True}),
    ]
    if batches == "one":
        apply(runtime, *events)
    else:
        for event in events:
            apply(runtime, event)
    assert customer_count(runtime) == 1
    assert record(client, admin_key, "bea@example.com")["projects"]["default"]["params"] == {"waitlist": True}


def test_merges_chain_within_one_batch(runtime: Runtime, client: FlaskClient, admin_key: str) -> None:
    apply(
        runtime,
        CustomerChange(occurred_at=at(0), email="b@example.com", params={"from_b": True}),
        CustomerChange(occurred_at=at(0), email="c@example.com", params={"from_c": True}),
        signup("user_1", "a@example.com", 0),
    )
    ids = apply(runtime, update("user_1", "b@example.com", 10), update("user_1", "c@example.com", 20))
    assert statuses(runtime, ids) == ["processed", "processed"]
    merged = record(client, admin_key, "c@example.com")
    assert merged["past_emails"] == ["a@example.com", "b@example.com"]
    assert merged["projects"]["default"]["params"] == {"from_b": True, "from_c": True}
    assert customer_count(runtime) == 1
    with runtime.db.session() as session:
        assert {m.survivor_id for m in session.scalars(select(CustomerMerge))} == {merged["id"]}


# -- provider deletions ----------------------------------------------------------------------------


def test_a_deletion_removes_the_identity_keeps_the_customer_and_is_recorded(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, signup("user_1", "ada@example.com", 0, name="Ada"))
    [event_id] = apply(runtime, deletion("user_1", 30))
    customer = record(client, admin_key, "ada@example.com")
    assert customer["identities"] == [] and customer["name"] == "Ada"
    assert customer["projects"]["default"]["status"] == "free"
    [row] = [r for r in timeline_rows(runtime, customer["id"]) if r.event_id == event_id]
    assert row.data == {"identity_removed": ["clerk", "user_1"]}
    # A session from before the deletion, delivered after it: same customer, no new link.
    session_change = CustomerChange(occurred_at=at(20), identity=clerk("user_1"), activity=True)
    [late] = apply(runtime, session_change)
    assert statuses(runtime, [late]) == ["processed"]
    customer = record(client, admin_key, "ada@example.com")
    assert customer["identities"] == [] and customer["last_activity_at"] == "2026-03-01T00:20:00.000000Z"


def test_a_deletion_that_arrives_first_is_applied_when_the_user_shows_up(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    [deleted] = apply(runtime, deletion("user_1", 30))
    assert statuses(runtime, [deleted]) == ["processed"] and customer_count(runtime) == 0
    with runtime.db.session() as session:
        [tombstone] = session.scalars(select(IdentityTombstone))
        assert tombstone.customer_id is None and tombstone.event_id == deleted
    apply(runtime, signup("user_1", "ada@example.com", 0), update("user_1", "ada@example.org", 10))
    customer = record(client, admin_key, "ada@example.org")
    assert customer["identities"] == [] and customer["past_emails"] == ["ada@example.com"]
    assert any(
        r.event_id == deleted and r.data == {"identity_removed": ["clerk", "user_1"]}
        for r in timeline_rows(runtime, customer["id"])
    )
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Identity)) == 0


def test_an_event_without_email_for_an_unknown_identity_waits_and_is_applied_once_known(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    [early] = apply(runtime, CustomerChange(occurred_at=at(5), identity=clerk("user_1"), activity=True))
    assert statuses(runtime, [early]) == ["deferred"]
    apply(runtime, signup("user_1", "ada@example.com", 0))
    assert statuses(runtime, [early]) == ["processed"]
    assert record(client, admin_key, "ada@example.com")["last_activity_at"] == "2026-03-01T00:05:00.000000Z"


def test_an_identity_linked_again_after_its_deletion(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    """Deleted and re-created with the same id (an import, say): newer events link it again.
    Links carry no event time, so the deletion must be applied before the newer event."""
    apply(
        runtime,
        signup("user_1", "ada@example.com", 0),
        deletion("user_1", 10),
        signup("user_1", "ada@example.com", 20),
    )
    assert record(client, admin_key, "ada@example.com")["identities"] == [
        {"source": "clerk", "external_id": "user_1"}
    ]
