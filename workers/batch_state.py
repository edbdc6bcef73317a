"""The working state of one worker batch: the customers, project rows, identities and tombstones
the batch's events name, loaded in a fixed number of statements, and the snapshots merged so far.

`workers/apply.py` drives a batch through it; `workers/identities.py` applies provider identity
rules (email changes, merges, deletions) on top of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, tuple_, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from connectors.changes import CustomerChange
from models import Customer, CustomerProject, Event, Identity, IdentityTombstone
from models.base import isoformat, to_micros
from models.customer import HAS_PAST_EMAILS
from models.sql import dialect_insert, is_postgres
from workers.merge import CustomerRecord, ProjectRecord
from workers.merge_customers import EmailRecord


class ApplyError(Exception):
    """A change that cannot be applied (for example, no way to tell whom it is about)."""


# (account id, identity source, external id)
Ref = tuple[str, str, str]


class IdentityUnknown(ApplyError):
    """No email and an identity nothing has linked yet: the event waits for the person
    (`deferred`, workers/deferred.py) instead of failing."""

    def __init__(self, ref: Ref) -> None:
        self.ref = ref
        super().__init__(
            f"no customer is known for {ref[1]} id {ref[2]!r} yet and the event carries no email; "
            "it is applied as soon as an event names this person"
        )


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted provider user (models/merges.py): whose identity it was, and when it was deleted.
    `customer_id` is None while no event has told us whose it was (the deletion came first)."""

    customer_id: str | None
    forgotten_at: int
    event_id: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedMerge:
    account_id: str
    absorbed_id: str
    survivor_id: str
    email: str
    event_id: str
    occurred_at: datetime


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class Working:
    """The batch's customers and project rows: ORM rows as loaded, snapshots as merged so far."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        self.customers: dict[str, Customer] = {}
        self.by_email: dict[tuple[str, str], str] = {}
        self.by_identity: dict[tuple[str, str, str], str] = {}
        self.created: set[str] = set()
        self.records: dict[str, CustomerRecord] = {}
        self.project_rows: dict[tuple[str, str], CustomerProject] = {}
        self.project_records: dict[tuple[str, str], ProjectRecord] = {}
        self.new_identities: dict[tuple[str, str, str], str] = {}
        self.forgotten: set[tuple[str, str, str]] = set()
        self.change_rows: list[dict[str, Any]] = []
        # Customers whose creation is already on the timeline, and customers this batch touched.
        self.announced: set[str] = set()
        self.touched: set[str] = set()
        # Email changes, merges and deleted identities (see EventIdentities below).
        self.addresses: dict[str, EmailRecord] = {}
        self.tombstones: dict[Ref, Tombstone] = {}
        self.tombstones_changed: set[Ref] = set()
        self.merges: list[PlannedMerge] = []
        self.absorbed: dict[str, str] = {}
        self.renamed: set[str] = set()
        # Customers resolved by an applied change; and customers the load created for an address
        # that an email change took over, or that only a stale assertion named: unless some change
        # used them after all, they are deleted at write-back instead of lingering empty.
        self.used: set[str] = set()
        self.displaced: set[str] = set()

    def load(self, planned: Iterable[tuple[Event, list[CustomerChange]]]) -> None:
        emails: dict[str, set[str]] = defaultdict(set)
        identities: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for event, changes in planned:
            for change in changes:
                if change.email:
                    emails[event.account_id].add(change.email)
                if change.identity:
                    identities[event.account_id].add((change.identity.source, change.identity.external_id))
        for account_id in sorted(emails.keys() | identities.keys()):
            self._load_account(account_id, sorted(emails[account_id]), sorted(identities[account_id]))
        if self.customers:
            rows = self.session.scalars(
                select(CustomerProject).where(CustomerProject.customer_id.in_(list(self.customers)))
            )
            for row in rows:
                key = (row.customer_id, row.project_id)
                self.project_rows[key] = row
                self.project_records[key] = ProjectRecord(
                    first_seen_at=row.first_seen_at,
                    status=row.status,
                    params=row.params,
                    clock=row.clock,
                    last_activity_at=row.last_activity_at,
                )

    def _load_account(self, account_id: str, emails: list[str], identities: list[tuple[str, str]]) -> None:
        session = self.session
        identity_customer_ids: list[str] = []
        if identities:
            rows = session.execute(
                select(Identity.source, Identity.external_id, Identity.customer_id).where(
                    Identity.account_id == account_id,
                    tuple_(Identity.source, Identity.external_id).in_(identities),
                )
            )
            for source, external_id, customer_id in rows:
                self.by_identity[(account_id, source, external_id)] = customer_id
                identity_customer_ids.append(customer_id)
            # Deleted identities still route older events to their customer, which is locked too.
            tombstones = session.execute(
                select(
                    IdentityTombstone.source,
                    IdentityTombstone.external_id,
                    IdentityTombstone.customer_id,
                    IdentityTombstone.forgotten_at,
                    IdentityTombstone.event_id,
                    IdentityTombstone.event_type,
                ).where(
                    IdentityTombstone.account_id == account_id,
                    tuple_(IdentityTombstone.source, IdentityTombstone.external_id).in_(identities),
                )
            )
            for source, external_id, owner, forgotten_at, event_id, event_type in tombstones:
                self.tombstones[(account_id, source, external_id)] = Tombstone(
                    owner, forgotten_at, event_id, event_type
                )
                if owner is not None:
                    identity_customer_ids.append(owner)
        if emails:
            # Sorted inserts: concurrent batches take unique-index locks in the same order.
            stmt = (
                dialect_insert(session, Customer)
                .on_conflict_do_nothing(index_elements=["account_id", "email"])
                .returning(Customer.id, Customer.email)
            )
            # The batch's own time, so a new customer is never created after it was last updated.
            stamp = {"created_at": self.now, "updated_at": self.now}
            new_rows = [
                {"account_id": account_id, "email": email, "past_emails": [], "clock": {}, **stamp}
                for email in emails
            ]
            fresh: list[tuple[str, str]] = [(row[0], row[1]) for row in session.execute(stmt, new_rows)]
            self.created.update(customer_id for customer_id, _ in fresh)
            # Addresses nobody holds now may be someone's past one (see `resolve`).
            identity_customer_ids.extend(self._past_holders(account_id, sorted(e for _, e in fresh)))
        if not emails and not identity_customer_ids:
            return
        conditions = []
        if emails:
            conditions.append(Customer.email.in_(emails))
        if identity_customer_ids:
            conditions.append(Customer.id.in_(identity_customer_ids))
        stmt = (
            select(Customer)
            .where(Customer.account_id == account_id, or_(*conditions))
            .order_by(Customer.id)
            .execution_options(populate_existing=True)
        )
        if is_postgres(session):
            # The customer row is the lock that serializes workers writing the same person.
            stmt = stmt.with_for_update()
        for customer in session.scalars(stmt):
            self.customers[customer.id] = customer
            self.by_email[(account_id, customer.email)] = customer.id
            self.records[customer.id] = CustomerRecord(
                name=customer.name, clock=customer.clock, last_activity_at=customer.last_activity_at
            )
            self.addresses[customer.id] = EmailRecord.load(
                customer.email, customer.past_emails, customer.clock
            )

    def _past_holders(self, account_id: str, emails: list[str]) -> list[str]:
        if not emails:
            return []
        if is_postgres(self.session):
            past = type_coerce(Customer.past_emails, JSONB())
            had = or_(*(past.contains([email]) for email in emails))
        else:
            each = func.json_each(Customer.past_emails).table_valued("value")
            had = select(each.c.value).where(each.c.value.in_(emails)).exists()
        dialect = "postgresql" if is_postgres(self.session) else "sqlite"
        # Served by the partial index on customers with past addresses (models/customer.py).
        some_past = text(HAS_PAST_EMAILS[dialect])
        return list(
            self.session.scalars(select(Customer.id).where(Customer.account_id == account_id, some_past, had))
        )

    def earlier_holder(self, account_id: str, email: str, t: int) -> str | None:
        """The customer whose identity asserted `email` at or after `t` and has since moved on: a
        change from `t` naming that address is that person's, as it would have been in order (the
        identity joins or merges whoever held the address then; workers/identities.py)."""
        candidates = [
            (-address.past[email], customer_id)
            for customer_id, address in self.addresses.items()
            if address.past.get(email, 0) >= t and self.customers[customer_id].account_id == account_id
        ]
        return min(candidates)[1] if candidates else None

    def live(self, ref: Ref) -> str | None:
        """The customer an identity is linked to now (forgotten links are gone from both maps)."""
        return self.new_identities.get(ref) or self.by_identity.get(ref)

    def routes_to_tombstone(self, ref: Ref, change: CustomerChange, tombstone: Tombstone) -> bool:
        """Whether `change` about a deleted identity belongs to the customer it had. Events up to
        the deletion's time do; so does a later event without an email while the id is not linked
        again (nothing else could name the person). Only a later event with an email links a
        re-created id again (tests/workers/test_email_change.py)."""
        if to_micros(change.occurred_at) <= tombstone.forgotten_at:
            return True
        return not change.email and self.live(ref) is None

    def resolve(self, account_id: str, change: CustomerChange) -> str:
        if change.identity and not change.email:
            # A deleted identity still names its customer: for events from before the deletion,
            # from the same second (Stripe's cascade cancels subscriptions as it deletes the
            # customer) and, while nothing has linked the id again, from after it.
            ref = (account_id, change.identity.source, change.identity.external_id)
            tombstone = self.tombstones.get(ref)
            if tombstone and tombstone.customer_id and self.routes_to_tombstone(ref, change, tombstone):
                return tombstone.customer_id
        if change.email:
            customer_id = self.by_email.get((account_id, change.email))
            if customer_id is None:
                raise ApplyError(f"customer {change.email!r} could not be created")
            if customer_id in self.created and customer_id not in self.used:
                # Nobody had the address yet: an identity that had it by then may have moved on.
                earlier = self.earlier_holder(account_id, change.email, to_micros(change.occurred_at))
                if earlier is not None:
                    self.displaced.add(customer_id)
                    return earlier
            return customer_id
        if change.identity:
            ref = (account_id, change.identity.source, change.identity.external_id)
            customer_id = self.live(ref)
            if customer_id is None:
                raise IdentityUnknown(ref)
            return customer_id
        raise ApplyError("the change names neither an email nor an identity")


def change_row(
    work: Working, event: Event, customer_id: str, change: CustomerChange, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "project_id": event.project_id,
        "event_id": event.id,
        "kind": event.type,
        "data": data,
        "occurred_at": change.occurred_at,
        "recorded_at": work.now,
    }
