"""A deleted provider identity resolves every event about it, whatever the timestamps: older
events, same-time events and later email-less events all reach the customer it belonged to and
never link it again (issue #12, defect 1)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.workers.test_email_change import (  # noqa: F401 - the fixture registers the channel
    _changes_channel,
    apply,
    at,
    clerk,
    deletion,
    record,
    signup,
    statuses,
    update,
)
from tributary.connectors.changes import CustomerChange
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch


def activity(user: str, minute: int) -> CustomerChange:
    return CustomerChange(occurred_at=at(minute), identity=clerk(user), activity=True)


def paid(user: str, minute: int) -> CustomerChange:
    return CustomerChange(occurred_at=at(minute), identity=clerk(user), status="churned", params={"mrr": 0})


def test_an_email_less_event_at_the_deletion_time_reaches_the_deleted_identitys_customer(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, signup("user_1", "ada@example.com", 0))
    apply(runtime, deletion("user_1", 30))
    [tie] = apply(runtime, paid("user_1", 30))
    assert statuses(runtime, [tie]) == ["processed"]
    customer = record(client, admin_key, "ada@example.com")
    assert customer["projects"]["default"]["status"] == "churned"
    assert customer["identities"] == []


def test_an_email_less_event_after_the_deletion_reaches_the_deleted_identitys_customer(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, signup("user_1", "ada@example.com", 0))
    apply(runtime, deletion("user_1", 30))
    [later] = apply(runtime, activity("user_1", 31), paid("user_1", 32))[:1]
    assert statuses(runtime, [later]) == ["processed"]
    customer = record(client, admin_key, "ada@example.com")
    assert customer["last_activity_at"] == "2026-03-01T00:31:00.000000Z"
    assert customer["projects"]["default"]["status"] == "churned"
    assert customer["identities"] == []


def test_an_email_change_at_the_deletion_time_does_not_link_the_identity_again(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    apply(runtime, signup("user_1", "ada@example.com", 0))
    apply(runtime, deletion("user_1", 30))
    apply(runtime, update("user_1", "ada@example.org", 30))
    customer = record(client, admin_key, "ada@example.org")
    assert customer["identities"] == [] and customer["past_emails"] == ["ada@example.com"]


def test_the_same_events_in_every_order_give_the_same_record(
    runtime: Runtime, client: FlaskClient, admin_key: str
) -> None:
    import itertools

    events = [signup("user_{n}", "p{n}@example.com", 0), paid("user_{n}", 30), deletion("user_{n}", 30)]
    records = []
    for n, order in enumerate(itertools.permutations(range(len(events)))):
        for index in order:
            change = events[index]
            assert change.identity is not None
            ref = clerk(change.identity.external_id.format(n=n))
            email = change.email.format(n=n) if change.email else None
            apply(runtime, CustomerChange(**{**_fields(change), "identity": ref, "email": email}))
        # An event that waited for its identity is applied by the batch after the one naming it.
        drain_batch(runtime)
        customer = record(client, admin_key, f"p{n}@example.com")
        records.append(
            (
                customer["identities"],
                customer["projects"]["default"]["status"],
                customer["projects"]["default"]["params"],
            )
        )
    assert records == [records[0]] * len(records)
    assert records[0] == ([], "churned", {"mrr": 0})


def _fields(change: CustomerChange) -> dict[str, object]:
    return {name: getattr(change, name) for name in CustomerChange.__slots__}
