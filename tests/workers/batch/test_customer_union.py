"""Uniting two customers' records (workers/batch/customer_union.py) so that the result does not
depend on who survives or on the order the changes were applied in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tributary.connectors.changes import CustomerChange
from tributary.workers.batch.customer_union import unite_customers, unite_projects
from tributary.workers.batch.merge_rules import CustomerRecord, ProjectRecord, apply_change

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- uniting records -------------------------------------------------------------------------------

KEYS = ("plan", "seats")
VALUES = st.sampled_from(["a", "b", 1, True])
changes = st.builds(
    lambda minute, name, status, signup, params, once, unset, activity: CustomerChange(
        occurred_at=T0 + timedelta(minutes=minute),
        email="x@example.com",
        name=name,
        status=status,
        status_if_absent=signup,
        params=params,
        params_once={k: v for k, v in once.items() if k not in params},
        params_unset=tuple(k for k in unset if k not in params and k not in once),
        activity=activity,
    ),
    st.integers(0, 1000),
    st.none() | st.sampled_from(["Ann", "Bea"]),
    st.none() | st.sampled_from(["paid", "churned"]),
    st.none() | st.just("free"),
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=2),
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=1),
    st.lists(st.sampled_from(KEYS), max_size=1),
    st.booleans(),
)


def _apply_all(items: list[CustomerChange]) -> tuple[CustomerRecord, ProjectRecord]:
    customer = CustomerRecord()
    project = ProjectRecord(first_seen_at=T0 + timedelta(days=1))
    for change in items:
        result = apply_change(customer, project, change)
        customer, project = result.customer, result.project
    return customer, project


def _visible(customer: CustomerRecord, project: ProjectRecord) -> tuple[object, ...]:
    return (
        customer.name,
        customer.last_activity_at,
        project.status,
        dict(project.params),
        project.last_activity_at,
    )


def _distinct_times(items: list[CustomerChange]) -> bool:
    # Equal event times are ties, which the single-record rules break by arrival: not comparable.
    return len({c.occurred_at for c in items}) == len(items)


@settings(max_examples=200, deadline=None)
@given(st.lists(changes, max_size=6), st.lists(changes, max_size=6))
def test_uniting_two_records_equals_one_record_that_got_all_the_changes(
    ours: list[CustomerChange], theirs: list[CustomerChange]
) -> None:
    if not _distinct_times(ours + theirs):
        return
    a_customer, a_project = _apply_all(ours)
    b_customer, b_project = _apply_all(theirs)
    united = (unite_customers(a_customer, b_customer), unite_projects(a_project, b_project))
    together = _apply_all(sorted(ours + theirs, key=lambda c: c.occurred_at))
    assert _visible(*united) == _visible(*together)
    # And it does not matter which customer survives.
    swapped = (unite_customers(b_customer, a_customer), unite_projects(b_project, a_project))
    assert _visible(*swapped) == _visible(*united)
    assert swapped[1].clock == united[1].clock


def test_a_signup_status_never_beats_a_paid_status_in_a_merge() -> None:
    paying = _apply_all([CustomerChange(occurred_at=T0, email="x@example.com", status="paid")])
    signup = _apply_all(
        [CustomerChange(occurred_at=T0 + timedelta(days=3), email="x@example.com", status_if_absent="free")]
    )
    assert unite_projects(signup[1], paying[1]).status == "paid"
    assert unite_projects(paying[1], signup[1]).status == "paid"


def test_unclocked_values_survive_a_merge() -> None:
    legacy = ProjectRecord(first_seen_at=T0, status="trial", params={"plan": "old"})
    fresh = ProjectRecord(first_seen_at=T0 + timedelta(days=1), params={"seats": 2})
    united = unite_projects(fresh, legacy)
    assert (united.status, united.params, united.first_seen_at) == ("trial", {"plan": "old", "seats": 2}, T0)


def test_fill_once_values_of_both_customers_are_pooled_and_the_earliest_holds() -> None:
    early = _apply_all([CustomerChange(occurred_at=T0, email="x@example.com", params_once={"source": "ads"})])
    late = _apply_all(
        [
            CustomerChange(
                occurred_at=T0 + timedelta(hours=1), email="x@example.com", params_once={"source": "blog"}
            )
        ]
    )
    for united in (unite_projects(early[1], late[1]), unite_projects(late[1], early[1])):
        assert united.params == {"source": "ads"}
        # Both stay pending: a later unset of `source` would fall back to the earliest, as in order.
        assert [w[1] for w in united.clock["params"]["source"]["o"]] == ["ads", "blog"]
