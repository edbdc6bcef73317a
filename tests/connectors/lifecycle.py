"""Shared pieces of the lifecycle property tests: how deliveries are shuffled and redelivered, and
how a test lets the retries RQ would run later happen now."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from hypothesis import strategies as st
from sqlalchemy import select

from tributary.models import Event
from tributary.runtime.process import Runtime
from tributary.workers.jobs import EventFailed, process_event


def delivery_plans(events: int, max_redeliveries: int) -> st.SearchStrategy[Any]:
    """(order, redeliveries, drain_after): a permutation of the events; some redelivered, each put
    somewhere in the stream; and where the worker runs between deliveries (batches of any size)."""
    return st.permutations(range(events)).flatmap(
        lambda order: st.tuples(
            st.just(order),
            st.lists(
                st.tuples(st.sampled_from(range(events)), st.integers(0, events)), max_size=max_redeliveries
            ),
            st.lists(st.booleans(), min_size=events + max_redeliveries, max_size=events + max_redeliveries),
        )
    )


def delivery_stream(order: tuple[int, ...], redeliveries: list[tuple[int, int]]) -> list[int]:
    """The plan's event indexes in delivery order, redeliveries inserted where the plan puts them."""
    stream = list(order)
    for index, position in redeliveries:
        stream.insert(position, index)
    return stream


def deliver(plan: Any, post: Callable[[int], Any], drain: Callable[[], None]) -> None:
    """Send a plan's deliveries (`post(index)` returns the response); a first delivery of an event
    must be received and a redelivery acknowledged as a duplicate; drain where the plan says."""
    order, redeliveries, drains = plan
    seen: set[int] = set()
    for step, index in enumerate(delivery_stream(order, redeliveries)):
        response = post(index)
        expected = {"received": 0, "duplicates": 1} if index in seen else {"received": 1, "duplicates": 0}
        assert (response.status_code, response.get_json()) == (200, expected)
        seen.add(index)
        if drains[step]:
            drain()


def settle(runtime: Runtime, drain: Callable[[], None], rounds: int) -> None:
    """Drain, then run failed events' retries until none is left failed (an event that arrives
    before the one that makes its customer known applies on a retry)."""
    drain()
    for _ in range(rounds):
        with runtime.db.session() as session:
            failed = list(
                session.scalars(select(Event.id).where(Event.status == "failed").order_by(Event.id))
            )
        if not failed:
            return
        for event_id in failed:
            with contextlib.suppress(EventFailed):
                process_event(event_id)
    raise AssertionError("failed events left after every retry")


def billing_record(client: FlaskClient, admin: dict[str, str], email: str) -> dict[str, Any]:
    """A billing person's record as the events decide it: nothing that depends on who ran them or
    when (ids, the email we minted, row times), and identities by connector only."""
    response = client.get(f"/v1/customers/{email}", headers=admin)
    assert response.status_code == 200, response.get_json()
    record: dict[str, Any] = response.get_json()
    for key in ("id", "email", "created_at", "updated_at"):
        record.pop(key)
    record["identities"] = [i["source"] for i in record["identities"]]
    return record
