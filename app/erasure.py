"""Erasure (SPEC §4 "Deletion", `DELETE /v1/customers/<id>`): remove a person and redact what we
stored about them, in one transaction.

Removed: the customer, its project rows, identities, identity tombstones, timeline rows and the
records of customers merged into it. Redacted: every stored event that touched the customer
(linked through those rows) or names one of its emails, current or past. A redacted event keeps its
id, type, times and dedup key, so a provider redelivering it is still acknowledged as a duplicate
instead of re-creating the person; its body becomes a marker and its headers, email, payload and
changes are cleared. Events not yet applied are marked `ignored`, so a worker never resurrects the
person from them.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import CompoundSelect, case, delete, null, select, union, update
from sqlalchemy.orm import Session

from tributary.app.domain_errors import NotFound
from tributary.models import (
    Customer,
    CustomerMerge,
    CustomerProject,
    Event,
    EventAttempt,
    Identity,
    IdentityTombstone,
    TimelineEntry,
)
from tributary.models.sql import is_postgres, sqlite_unindexed

REDACTED_BODY = b'{"redacted": true}'
ERASED_NOTE = "redacted: the customer was erased"


def _event_ids(session: Session, customer: Customer, *, skip_locked: bool) -> list[str]:
    emails = [customer.email, *customer.past_emails]
    links = (
        select(TimelineEntry.event_id).where(TimelineEntry.customer_id == customer.id),
        select(IdentityTombstone.event_id).where(IdentityTombstone.customer_id == customer.id),
        select(CustomerMerge.event_id).where(CustomerMerge.survivor_id == customer.id),
    )
    # Every event linked to the customer and every event naming one of its addresses: one set of
    # ids, each part found through its own index (the address's, the links'), the account tested
    # on the rows found. As `id IN (…) OR email IN (…)` beside the account's condition, PostgreSQL
    # read every event of the account (0.28 s at a million events), as SQLite did before it.
    named = select(Event.id).where(Event.email.in_(emails))
    addressed: CompoundSelect[tuple[str | None]] = union(*links, named)
    postgres = is_postgres(session)
    # On SQLite, as a term of its own, the account was served from an account index and every event
    # the account had was walked: there the rows found are tested instead (`sqlite_unindexed`).
    account = Event.account_id if postgres else sqlite_unindexed(Event.account_id)
    stmt = select(Event.id).where(account == customer.account_id, Event.id.in_(addressed)).order_by(Event.id)
    if postgres:
        # Same lock order as the worker's claims (event ids ascending), so neither side deadlocks.
        stmt = stmt.with_for_update(of=Event, skip_locked=skip_locked)
    return list(session.scalars(stmt))


def _redact(session: Session, event_ids: Sequence[str]) -> None:
    if not event_ids:
        return
    session.execute(
        update(Event)
        .where(Event.id.in_(event_ids))
        .values(
            body=REDACTED_BODY,
            body_hash=null(),
            headers={},
            email=null(),
            payload=null(),
            changes=null(),
            # Errors quote payloads (an address, a name): keep that there was one, not what it said.
            last_error=case((Event.last_error.is_(None), None), else_=ERASED_NOTE),
            status=case((Event.status.in_(("pending", "failed", "deferred")), "ignored"), else_=Event.status),
        )
        .execution_options(synchronize_session=False)
    )
    # The attempt history quotes the same errors.
    session.execute(
        update(EventAttempt)
        .where(EventAttempt.event_id.in_(event_ids), EventAttempt.error.is_not(None))
        .values(error=ERASED_NOTE)
        .execution_options(synchronize_session=False)
    )


def erase_customer(session: Session, customer: Customer) -> int:
    """Erase `customer` inside the caller's write transaction; returns how many events were redacted.

    On PostgreSQL the events are locked before the customer row, the order a worker batch takes
    them, so an in-flight batch applying this person's events finishes first and is erased too.
    Events a worker claimed after that (arrivals during the erasure) are skipped: they apply after
    this commit, as if they had arrived after it.
    """
    waited = _event_ids(session, customer, skip_locked=False)
    lock = select(Customer).where(Customer.id == customer.id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        lock = lock.with_for_update()
    current = session.scalar(lock)
    if current is None:
        raise NotFound("customer_not_found", "no such customer")
    event_ids = sorted(set(waited) | set(_event_ids(session, current, skip_locked=True)))
    _redact(session, event_ids)
    for table in (TimelineEntry, Identity, IdentityTombstone, CustomerProject):
        session.execute(delete(table).where(table.customer_id == current.id))
    # Merges into this customer name the absorbed customers' addresses.
    session.execute(delete(CustomerMerge).where(CustomerMerge.survivor_id == current.id))
    session.execute(delete(Customer).where(Customer.id == current.id))
    return len(event_ids)
