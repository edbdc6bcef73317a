"""The pure rules for email changes and merges (workers/merge_customers.py): addresses with clocks,
and uniting two customers' records so that the result does not depend on who survives or on the
order the changes were applied in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.changes import CustomerChange
from workers.merge import CustomerRecord, ProjectRecord, apply_change
from workers.merge_customers import EmailRecord, unite_customers, unite_projects

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- addresses -------------------------------------------------------------------------------------


def test_a_newer_address_renames_and_the_old_one_is_kept_with_its_time() -> None:
    record = EmailRecord("a@example.com").asserted(10)
    assert record.verdict("b@example.com", 20) == "newer"
    renamed = record.renamed("b@example.com", 20)
    assert (renamed.email, renamed.asserted_at, renamed.past_emails()) == (
        "b@example.com",
        20,
        ["a@example.com"],
    )
    assert renamed.clock_entry() == {"t": 20, "past": {"a@example.com": 10}, "since": 20}


def test_an_older_address_is_stale_and_only_remembered() -> None:
    record = EmailRecord("b@example.com", 20)
    assert record.verdict("a@example.com", 10) == "stale"
    assert record.remembered("a@example.com", 10).past_emails() == ["a@example.com"]
    assert record.verdict("b@example.com", 5) == "same"
    # An older assertion of the current address moves only the time it is known to be held from.
    held = record.asserted(5)
    assert (held.asserted_at, held.since) == (20, 5) and held.asserted(7) is held
    assert record.asserted(30).asserted_at == 30


def test_an_address_never_asserted_gives_way_to_any_assertion() -> None:
    assert EmailRecord("identify@example.com").verdict("clerk@example.com", 1) == "newer"


def test_past_addresses_are_listed_oldest_first_whatever_order_they_were_learnt() -> None:
    late = EmailRecord("d@example.com", 40).remembered("c@example.com", 30).remembered("a@example.com", 10)
    late = late.remembered("b@example.com", 20)
    assert late.past_emails() == ["a@example.com", "b@example.com", "c@example.com"]
    loaded = EmailRecord.load("d@example.com", late.past_emails(), {"email": late.clock_entry()})
    assert loaded == late


def test_loading_tolerates_past_emails_without_times() -> None:
    record = EmailRecord.load("b@example.com", ["z@example.com", "a@example.com", "b@example.com"], {})
    assert record.past_emails() == ["a@example.com", "z@example.com"] and record.asserted_at is None


def test_uniting_addresses_keeps_every_address_the_two_had() -> None:
    survivor = EmailRecord("a@example.com", 10, {"old-a@example.com": 5})
    absorbed = EmailRecord("b@example.com", 30, {"old-b@example.com": 7})
    united = survivor.united(absorbed, "b@example.com", 20)
    assert united.email == "b@example.com" and united.asserted_at == 30
    assert united.past_emails() == ["old-a@example.com", "old-b@example.com", "a@example.com"]


def test_a_stale_assertion_merges_only_a_customer_that_had_the_address_by_then() -> None:
    # Known by email alone from minute 0; the identity asserted it at 10 and had moved on by 20.
    known = EmailRecord("a@example.com").held(0)
    assert known.held_for(10, left_by=20)
    assert not EmailRecord("a@example.com").held(15).held_for(10, left_by=20)  # came later
    assert not EmailRecord("a@example.com").held_for(10, left_by=20)  # never known when
    # Another identity asserted it after ours had left: it may be someone who got it later.
    assert not known.asserted(30).held_for(10, left_by=20)
    assert known.asserted(20).held_for(10, left_by=20)


def test_a_stale_merge_gives_the_same_addresses_as_the_rename_in_order() -> None:
    in_order = EmailRecord("a@example.com").held(0).asserted(10).renamed("b@example.com", 20)
    identity = EmailRecord("b@example.com").asserted(20)
    late = identity.united(
        EmailRecord("a@example.com", None, {"z@example.com": 3}).held(0), "a@example.com", 10
    )
    assert (late.email, late.asserted_at, late.since) == ("b@example.com", 20, 20)
    assert late.past == {"a@example.com": 10, "z@example.com": 3}
    assert (in_order.email, in_order.asserted_at, in_order.past) == (
        "b@example.com",
        20,
        {"a@example.com": 10},
    )


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
