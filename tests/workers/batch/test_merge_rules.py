"""The pure field merge rules (workers/batch/merge_rules.py): every rule alone, then order-independence
as a property."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tributary.connectors.changes import CustomerChange
from tributary.workers.batch.merge_rules import (
    CustomerRecord,
    ProjectRecord,
    apply_change,
    new_project_record,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def run(changes: list[CustomerChange]) -> tuple[CustomerRecord, ProjectRecord]:
    customer = CustomerRecord()
    project = new_project_record(changes[0])
    for change in changes:
        result = apply_change(customer, project, change)
        customer, project = result.customer, result.project
    return customer, project


def test_name_and_status_overwrite_params_shallow_merge() -> None:
    customer, project = run(
        [
            CustomerChange(at(1), name="Ada", status="trial", params={"plan": "basic", "seats": 1}),
            CustomerChange(at(2), name="Ada L.", status="paid", params={"plan": "pro", "team": {"id": 7}}),
        ]
    )
    assert customer.name == "Ada L."
    assert project.status == "paid"
    assert project.params == {"plan": "pro", "seats": 1, "team": {"id": 7}}


def test_params_once_fills_only_absent_keys() -> None:
    _, project = run(
        [
            CustomerChange(at(1), params={"source": "ads"}),
            CustomerChange(at(2), params_once={"source": "seo", "first_plan": "basic"}),
        ]
    )
    assert project.params == {"source": "ads", "first_plan": "basic"}


def test_params_unset_removes_and_once_refills_after_it() -> None:
    _, project = run(
        [
            CustomerChange(at(1), params={"coupon": "X", "plan": "pro"}),
            CustomerChange(at(2), params_unset=("coupon",)),
            CustomerChange(at(3), params_once={"coupon": "Y"}),
        ]
    )
    assert project.params == {"plan": "pro", "coupon": "Y"}


def test_stale_writes_are_ignored_and_reported() -> None:
    customer = CustomerRecord()
    project = new_project_record(CustomerChange(at(5)))
    newer = apply_change(customer, project, CustomerChange(at(5), status="churned", params={"plan": "none"}))
    older = apply_change(
        newer.customer, newer.project, CustomerChange(at(1), status="paid", params={"plan": "pro"}, name="X")
    )
    assert older.project.status == "churned" and older.project.params == {"plan": "none"}
    assert older.stale == {"status": "paid", "params.plan": "pro"}
    assert older.changed == {"name": [None, "X"]}  # name had never been written: not stale


def test_equal_times_go_to_the_write_applied_last() -> None:
    _, project = run([CustomerChange(at(1), status="trial"), CustomerChange(at(1), status="paid")])
    assert project.status == "paid"


def test_signup_status_never_downgrades_whatever_the_order() -> None:
    paid = CustomerChange(at(1), status="paid")
    signup = CustomerChange(at(2), status_if_absent="free")
    assert run([paid, signup])[1].status == "paid"
    assert run([signup, paid])[1].status == "paid"
    assert run([signup])[1].status == "free"


def test_activity_only_moves_forward_and_first_seen_only_back() -> None:
    customer, project = run(
        [
            CustomerChange(at(10), activity=True),
            CustomerChange(at(3), activity=True),
            CustomerChange(at(7), activity=False, status="paid"),
        ]
    )
    assert customer.last_activity_at == at(10) and project.last_activity_at == at(10)
    assert project.first_seen_at == at(3)


def test_inputs_are_not_mutated() -> None:
    customer = CustomerRecord(name="A", clock={"name": {"t": 0}})
    project = ProjectRecord(first_seen_at=T0, params={"k": 1}, clock={"params": {"k": {"t": 0}}})
    apply_change(customer, project, CustomerChange(at(1), name="B", params={"k": 2}, params_unset=("z",)))
    assert customer.name == "A" and customer.clock == {"name": {"t": 0}}
    assert project.params == {"k": 1} and project.clock == {"params": {"k": {"t": 0}}}


# -- order independence -------------------------------------------------------------------------

KEYS = ["plan", "seats", "coupon"]
values = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "pro"]), st.booleans())


@st.composite
def change_lists(draw: Any) -> list[CustomerChange]:
    count = draw(st.integers(1, 12))
    minutes = draw(st.lists(st.integers(0, 10_000), min_size=count, max_size=count, unique=True))
    changes = []
    for minute in minutes:
        keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3))
        ops = {key: draw(st.sampled_from(["set", "once", "unset"])) for key in keys}
        changes.append(
            CustomerChange(
                occurred_at=at(minute),
                name=draw(st.one_of(st.none(), st.sampled_from(["Ada", "Grace", "Linus"]))),
                status=draw(st.one_of(st.none(), st.sampled_from(["free", "trial", "paid", "churned"]))),
                status_if_absent=draw(st.one_of(st.none(), st.just("free"))),
                params={k: draw(values) for k, op in ops.items() if op == "set"},
                params_once={k: draw(values) for k, op in ops.items() if op == "once"},
                params_unset=tuple(k for k, op in ops.items() if op == "unset"),
                activity=draw(st.booleans()),
            )
        )
    return changes


def observable(result: tuple[CustomerRecord, ProjectRecord]) -> tuple[Any, ...]:
    customer, project = result
    return (
        customer.name,
        customer.last_activity_at,
        project.status,
        project.params,
        project.first_seen_at,
        project.last_activity_at,
    )


@settings(max_examples=400, deadline=None)
@given(changes=change_lists(), seed=st.integers(0, 2**32))
def test_any_arrival_order_gives_the_event_time_order_result(
    changes: list[CustomerChange], seed: int
) -> None:
    in_order = sorted(changes, key=lambda c: c.occurred_at)
    shuffled = list(changes)
    random.Random(seed).shuffle(shuffled)
    assert observable(run(shuffled)) == observable(run(in_order))


@settings(max_examples=100, deadline=None)
@given(changes=change_lists())
def test_applying_a_change_twice_changes_nothing_the_second_time(changes: list[CustomerChange]) -> None:
    once = run(sorted(changes, key=lambda c: c.occurred_at))
    twice = run([c for c in sorted(changes, key=lambda c: c.occurred_at) for _ in (0, 1)])
    assert observable(twice) == observable(once)
