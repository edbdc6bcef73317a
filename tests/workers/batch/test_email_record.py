"""The address clocks of email changes (workers/batch/email_record.py): which address a customer
has, which it had, and since when, whatever order the assertions arrive in."""

from __future__ import annotations

from tributary.workers.batch.email_record import EmailRecord

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
