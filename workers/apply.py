"""Apply claimed events to customer records, many events per transaction.

A batch costs a fixed number of statements whatever its size: claim, upsert the customers it names,
lock them, load their project rows, then write back every change in bulk. The merge itself is pure
(`workers/merge.py`) and runs on immutable snapshots, so an event whose changes cannot be applied
is marked failed alone while the rest of the batch commits. Event status and customer writes share
the transaction: a worker killed mid-batch leaves every claimed event pending and nothing applied.

Provider identities (SPEC §4, "Email change" and "Deletion"; the section "Email changes, merges
and deleted identities" below, with the pure rules in `workers/merge_customers.py`):

- A change flagged `email_change` carries a provider user id and the address that user had at the
  event time. It resolves through the identity first: a newer address renames the customer (the
  old one joins `past_emails`) or, when another customer has it, merges the two into the
  identity's customer; an older one is only remembered as a past address.
- `forget_identity` removes the link and leaves a tombstone (models/merges.py), so events from
  before the deletion that arrive after it still reach the same customer without linking again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from connectors.changes import CustomerChange
from models import Customer, CustomerMerge, CustomerProject, Event, Identity, IdentityTombstone
from models import CustomerChange as ChangeRow
from models.base import from_micros, isoformat, to_micros, utcnow
from workers.merge import CustomerRecord, MergeResult, ProjectRecord, apply_change, new_project_record
from workers.merge_customers import EMAIL_CLOCK, EmailRecord, unite_customers, unite_projects
from workers.normalize import EventIgnored, changes_for_event

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


class ApplyError(Exception):
    """A change that cannot be applied (for example, no way to tell whom it is about)."""


# (account id, identity source, external id)
Ref = tuple[str, str, str]


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


@dataclass(slots=True)
class BatchReport:
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: list[str] = field(default_factory=list)


def dialect_insert(session: Session, table: Any) -> Any:
    """An INSERT that understands ON CONFLICT on the session's backend."""
    name = session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim_pending(session: Session, limit: int) -> list[Event]:
    """Lock up to `limit` pending events, oldest first. Other workers skip rows locked here
    (PostgreSQL); on SQLite the caller's BEGIN IMMEDIATE already excludes other writers."""
    stmt = select(Event).where(Event.status == "pending").order_by(Event.id).limit(limit)
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def claim_events(session: Session, ids: Sequence[str]) -> list[Event]:
    """Lock specific events for a retry or replay, waiting for any worker that holds them."""
    stmt = select(Event).where(Event.id.in_(ids)).order_by(Event.id)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]


class _Working:
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
        # Email changes, merges and deleted identities (see _Identities below).
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
                .returning(Customer.id)
            )
            new_rows = [
                {"account_id": account_id, "email": email, "past_emails": [], "clock": {}} for email in emails
            ]
            self.created.update(session.scalars(stmt, new_rows))
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

    def live(self, ref: Ref) -> str | None:
        """The customer an identity is linked to now (forgotten links are gone from both maps)."""
        return self.new_identities.get(ref) or self.by_identity.get(ref)

    def resolve(self, account_id: str, change: CustomerChange) -> str:
        if change.identity and not change.email:
            # An event from before its user's deletion reaches the customer the user had then.
            ref = (account_id, change.identity.source, change.identity.external_id)
            tombstone = self.tombstones.get(ref)
            if tombstone and tombstone.customer_id and to_micros(change.occurred_at) < tombstone.forgotten_at:
                return tombstone.customer_id
        if change.email:
            customer_id = self.by_email.get((account_id, change.email))
            if customer_id is None:
                raise ApplyError(f"customer {change.email!r} could not be created")
            return customer_id
        if change.identity:
            ref = (account_id, change.identity.source, change.identity.external_id)
            customer_id = self.live(ref)
            if customer_id is None:
                raise ApplyError(
                    f"no customer is known for {change.identity.source} id "
                    f"{change.identity.external_id!r} and the event carries no email"
                )
            return customer_id
        raise ApplyError("the change names neither an email nor an identity")


def _change_row(
    work: _Working, event: Event, customer_id: str, change: CustomerChange, data: dict[str, Any]
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


def _apply_event(work: _Working, event: Event, changes: list[CustomerChange]) -> list[dict[str, Any]]:
    """Merge one event's changes into the working state, all or nothing, and return its report."""
    records = dict[str, CustomerRecord]()
    projects = dict[tuple[str, str], ProjectRecord]()
    links: dict[tuple[str, str, str], str] = {}
    forgets: set[tuple[str, str, str]] = set()
    announced: set[str] = set()
    rows: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    identities = _Identities(work, event, records, projects, rows)
    for change in changes:
        data: dict[str, Any] = {}
        ref = (
            (event.account_id, change.identity.source, change.identity.external_id)
            if change.identity
            else None
        )
        if ref is not None and change.forget_identity:
            # A provider deletion changes no field and joins no project: it only retires the link.
            report.append(identities.forget(ref, change, forgets, data))
            continue
        if ref is not None and change.email_change and change.email:
            customer_id = identities.assert_email(ref, change, data)
        else:
            customer_id = work.resolve(event.account_id, change)
        # Older than the identity's deletion: applied to the customer it had, never linked again.
        ghosted = identities.resolved(ref, change, customer_id)
        key = (customer_id, event.project_id)
        customer = records.get(customer_id) or work.records[customer_id]
        joined = key not in projects and key not in work.project_records
        project = projects.get(key) or work.project_records.get(key) or new_project_record(change)
        result: MergeResult = apply_change(customer, project, change)
        records[customer_id] = result.customer
        projects[key] = result.project
        if result.changed:
            data["changed"] = _jsonable(result.changed)
        if result.stale:
            data["stale"] = _jsonable(result.stale)
        if customer_id in work.created and customer_id not in work.announced and customer_id not in announced:
            announced.add(customer_id)
            data["created"] = True
        if joined:
            data["joined_project"] = True
        if ref is not None and not ghosted and ref not in work.by_identity and ref not in work.new_identities:
            links[ref] = customer_id
            data["identity_linked"] = [ref[1], ref[2]]
        rows.append(_change_row(work, event, customer_id, change, data))
        report.append({"customer_id": customer_id, "change": change.to_json(), **data})
    # The whole event merged cleanly: publish it to the batch.
    work.records.update(records)
    work.project_records.update(projects)
    work.new_identities.update(links)
    for ref in forgets:
        work.forgotten.add(ref)
        work.new_identities.pop(ref, None)
        work.by_identity.pop(ref, None)
    work.change_rows.extend(rows)
    work.announced.update(announced)
    work.touched.update(row["customer_id"] for row in rows if row["data"])
    identities.publish()
    return report


# -- Email changes, merges and deleted identities ------------------------------------------------
#
# Owned by the email-change work (see the module docstring); the pure rules are in
# workers/merge_customers.py. `_Identities` is one event's view: it reads the batch's published
# state and keeps its own writes until `publish`, so a failing event leaves the batch untouched.


class _Identities:
    def __init__(
        self,
        work: _Working,
        event: Event,
        records: dict[str, CustomerRecord],
        projects: dict[tuple[str, str], ProjectRecord],
        rows: list[dict[str, Any]],
    ) -> None:
        self.work = work
        self.event = event
        # The event's own overlays of customer records, project records and timeline rows.
        self.records = records
        self.projects = projects
        self.rows = rows
        self.addresses: dict[str, EmailRecord] = {}
        # (account, email) -> customer, or None once the address has left its customer.
        self.owners: dict[tuple[str, str], str | None] = {}
        self.tombstones: dict[Ref, Tombstone] = {}
        self.merges: list[PlannedMerge] = []
        self.absorbed: dict[str, str] = {}
        self.dropped_projects: set[tuple[str, str]] = set()
        self.renamed: set[str] = set()
        self.used: set[str] = set()
        self.displaced: set[str] = set()

    # -- reads through the overlays -----------------------------------------------------------

    def address(self, customer_id: str) -> EmailRecord:
        return self.addresses.get(customer_id) or self.work.addresses[customer_id]

    def owner(self, email: str) -> str | None:
        key = (self.event.account_id, email)
        return self.owners[key] if key in self.owners else self.work.by_email.get(key)

    def tombstone(self, ref: Ref) -> Tombstone | None:
        return self.tombstones.get(ref) or self.work.tombstones.get(ref)

    def ghost(self, ref: Ref, t: int) -> Tombstone | None:
        """The identity's tombstone when the change predates the deletion."""
        tombstone = self.tombstone(ref)
        return tombstone if tombstone is not None and t < tombstone.forgotten_at else None

    def placeholder(self, customer_id: str) -> bool:
        """Created by this batch's load for an address no applied change has used: not a person."""
        work = self.work
        return customer_id in work.created and customer_id not in work.used and customer_id not in self.used

    # -- the three operations ----------------------------------------------------------------------

    def assert_email(self, ref: Ref, change: CustomerChange, data: dict[str, Any]) -> str:
        """Resolve a change that states the identity's address at its event time (`email_change`)."""
        assert change.email is not None
        email, t = change.email, to_micros(change.occurred_at)
        ghost = self.ghost(ref, t)
        holder = ghost.customer_id if ghost is not None and ghost.customer_id else self.work.live(ref)
        if holder is None:
            # An identity we do not know yet: the address decides, as for any change.
            owner = self.owner(email)
            if owner is None:
                raise ApplyError(f"customer {email!r} could not be created")
            self.addresses[owner] = self.address(owner).asserted(t)
            return owner
        current = self.address(holder)
        verdict = current.verdict(email, t)
        if verdict == "same":
            self.addresses[holder] = current.asserted(t)
            return holder
        owner = self.owner(email)
        if verdict == "stale":
            # The identity's address before a change we have already applied. Whoever holds that
            # address now may have got it afterwards, so it is remembered, never merged on.
            if email not in current.past:
                data["past_email_added"] = email
            self.addresses[holder] = current.remembered(email, t)
            if owner is not None and owner != holder and self.placeholder(owner):
                self.displaced.add(owner)
            return holder
        if owner is not None and owner != holder and not self.placeholder(owner):
            self._merge(owner, holder, email, change, data)
        else:
            if owner is not None and owner != holder:
                self.displaced.add(owner)
            self.addresses[holder] = current.renamed(email, t)
        data["email_changed"] = [current.email, email]
        self.owners[(self.event.account_id, current.email)] = None
        self.owners[(self.event.account_id, email)] = holder
        self.renamed.add(holder)
        return holder

    def _merge(
        self, absorbed: str, survivor: str, email: str, change: CustomerChange, data: dict[str, Any]
    ) -> None:
        """`survivor` (the identity's customer) takes `email` from `absorbed`: the two become one.
        Every clocked field is joined (newer values win); the absorbed customer's identities,
        projects and timeline move to the survivor at write-back, and its row is deleted."""
        work, t = self.work, to_micros(change.occurred_at)
        theirs = self.records.get(absorbed) or work.records[absorbed]
        ours = self.records.get(survivor) or work.records[survivor]
        self.records[survivor] = unite_customers(ours, theirs)
        self.records.pop(absorbed, None)
        self.addresses[survivor] = self.address(survivor).united(self.address(absorbed), email, t)
        for key in sorted({*work.project_records, *self.projects}):
            if key[0] != absorbed or key in self.dropped_projects:
                continue
            their_project = self.projects.get(key) or work.project_records[key]
            target = (survivor, key[1])
            our_project = self.projects.get(target) or work.project_records.get(target)
            self.projects[target] = (
                their_project if our_project is None else unite_projects(our_project, their_project)
            )
            self.projects.pop(key, None)
            self.dropped_projects.add(key)
        self.absorbed[absorbed] = survivor
        self.merges.append(
            PlannedMerge(self.event.account_id, absorbed, survivor, email, self.event.id, change.occurred_at)
        )
        data["merged"] = {"absorbed_customer_id": absorbed, "email": email}
        # The absorbed customer's own record of the merge. Its timeline rows, this one included,
        # move to the survivor, so `GET /v1/customers/<survivor>/timeline` shows both histories.
        self.rows.append(
            _change_row(work, self.event, absorbed, change, {"merged_into": survivor, "email": email})
        )

    def forget(
        self, ref: Ref, change: CustomerChange, forgets: set[Ref], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Retire the identity and return the event report's entry. Without a known customer (the
        deletion arrived before everything else about the user) only the tombstone is written."""
        t = to_micros(change.occurred_at)
        live = self.work.live(ref)
        tombstone = self.tombstone(ref)
        customer_id = live or (tombstone.customer_id if tombstone else None)
        if live is not None:
            forgets.add(ref)
            data["identity_removed"] = [ref[1], ref[2]]
        if tombstone is None or t >= tombstone.forgotten_at:
            self.tombstones[ref] = Tombstone(customer_id, t, self.event.id, self.event.type)
        elif customer_id != tombstone.customer_id:
            self.tombstones[ref] = replace(tombstone, customer_id=customer_id)
        if customer_id is None:
            data["identity_removed"] = [ref[1], ref[2]]
            data["pending"] = (
                "no customer is linked to this identity yet; the deletion is recorded on the "
                "customer that the first older event of this user names"
            )
        else:
            self.rows.append(_change_row(self.work, self.event, customer_id, change, data))
        return {"customer_id": customer_id, "change": change.to_json(), **data}

    def resolved(self, ref: Ref | None, change: CustomerChange, customer_id: str) -> bool:
        """Note that `change` applies to `customer_id`; True when it predates the deletion of its
        identity. If that deletion did not know its customer yet, this change names it: the
        tombstone and the timeline learn it now."""
        self.used.add(customer_id)
        if ref is None:
            return False
        tombstone = self.ghost(ref, to_micros(change.occurred_at))
        if tombstone is None:
            return False
        if tombstone.customer_id is None:
            self.tombstones[ref] = replace(tombstone, customer_id=customer_id)
            self.rows.append(
                {
                    "customer_id": customer_id,
                    "project_id": None,
                    "event_id": tombstone.event_id,
                    "kind": tombstone.event_type or "identity.removed",
                    "data": {"identity_removed": [ref[1], ref[2]]},
                    "occurred_at": from_micros(tombstone.forgotten_at),
                    "recorded_at": self.work.now,
                }
            )
        return True

    def publish(self) -> None:
        work = self.work
        work.addresses.update(self.addresses)
        for key, owner in self.owners.items():
            if owner is None:
                work.by_email.pop(key, None)
            else:
                work.by_email[key] = owner
        work.tombstones.update(self.tombstones)
        work.tombstones_changed.update(self.tombstones)
        work.used.update(self.used)
        work.displaced.update(self.displaced)
        work.renamed.update(self.renamed)
        work.merges.extend(self.merges)
        for key in self.dropped_projects:
            work.project_records.pop(key, None)
        for absorbed, survivor in self.absorbed.items():
            work.absorbed[absorbed] = survivor
            work.records.pop(absorbed, None)
            work.addresses.pop(absorbed, None)
            work.renamed.discard(absorbed)
            for links in (work.by_identity, work.new_identities, work.by_email):
                for link, customer_id in links.items():
                    if customer_id == absorbed:
                        links[link] = survivor  # type: ignore[index]
            for ref, tombstone in work.tombstones.items():
                if tombstone.customer_id == absorbed:
                    work.tombstones[ref] = replace(tombstone, customer_id=survivor)
            for row in work.change_rows:
                if row["customer_id"] == absorbed:
                    row["customer_id"] = survivor


def _clock_with_email(clock: Any, address: EmailRecord) -> dict[str, Any]:
    merged = {key: value for key, value in dict(clock).items() if key != EMAIL_CLOCK}
    if (entry := address.clock_entry()) is not None:
        merged[EMAIL_CLOCK] = entry
    return merged


def _write_identity_changes(work: _Working) -> None:
    """Placeholders, merges and renames, before any customer row is updated: they free the
    addresses that renamed customers take, and the unique index on (account, email) must hold
    after every statement."""
    session = work.session
    unused = sorted(work.displaced - work.used - work.absorbed.keys())
    if unused:
        session.execute(
            delete(Customer).where(Customer.id.in_(unused)), execution_options={"synchronize_session": False}
        )
        for customer_id in unused:
            session.expunge(work.customers.pop(customer_id))
            work.records.pop(customer_id, None)
            work.addresses.pop(customer_id, None)
    for merge in work.merges:
        _write_merge(work, merge)
    renamed = sorted(c for c in work.renamed if c in work.customers)
    if renamed:
        # Two steps, because renames can swap addresses (a -> b while b -> a): every renamed row
        # first takes a placeholder unique to it, then its final address (set with the row below).
        session.execute(
            update(Customer)
            .where(Customer.id.in_(renamed))
            .values(email=literal("~renaming~") + Customer.id),
            execution_options={"synchronize_session": False},
        )
        for customer_id in renamed:
            set_committed_value(work.customers[customer_id], "email", f"~renaming~{customer_id}")


def _write_merge(work: _Working, merge: PlannedMerge) -> None:
    session = work.session
    absorbed, survivor = merge.absorbed_id, merge.survivor_id
    quiet = {"synchronize_session": False}
    for model in (Identity, IdentityTombstone, ChangeRow):
        session.execute(
            update(model).where(model.customer_id == absorbed).values(customer_id=survivor),
            execution_options=quiet,
        )
    # Where the absorbed customer's earlier merges point: always the current survivor.
    session.execute(
        update(CustomerMerge).where(CustomerMerge.survivor_id == absorbed).values(survivor_id=survivor),
        execution_options=quiet,
    )
    for key in sorted(k for k in work.project_rows if k[0] == absorbed):
        row = work.project_rows.pop(key)
        target = (survivor, key[1])
        if target in work.project_rows:
            # Both had the project: the united record is written to the survivor's row.
            session.execute(
                delete(CustomerProject).where(CustomerProject.id == row.id), execution_options=quiet
            )
            session.expunge(row)
        else:
            session.execute(
                update(CustomerProject).where(CustomerProject.id == row.id).values(customer_id=survivor),
                execution_options=quiet,
            )
            set_committed_value(row, "customer_id", survivor)
            work.project_rows[target] = row
    gone = work.customers.pop(absorbed)
    kept = work.customers[survivor]
    kept.created_at = min(kept.created_at, gone.created_at)
    session.execute(delete(Customer).where(Customer.id == absorbed), execution_options=quiet)
    session.expunge(gone)
    session.execute(
        insert(CustomerMerge).values(
            account_id=merge.account_id,
            absorbed_id=absorbed,
            survivor_id=survivor,
            email=merge.email,
            event_id=merge.event_id,
            occurred_at=merge.occurred_at,
            recorded_at=work.now,
        )
    )


def _write_tombstones(work: _Working) -> None:
    if not work.tombstones_changed:
        return
    table = IdentityTombstone.__table__
    stmt = dialect_insert(work.session, IdentityTombstone)
    # Concurrent deletions of one identity meet on the unique index: the later deletion wins and a
    # known customer is never replaced by "unknown".
    newer = stmt.excluded.forgotten_at >= table.c.forgotten_at
    stmt = stmt.on_conflict_do_update(
        index_elements=["account_id", "source", "external_id"],
        set_={
            "customer_id": func.coalesce(stmt.excluded.customer_id, table.c.customer_id),
            "forgotten_at": case((newer, stmt.excluded.forgotten_at), else_=table.c.forgotten_at),
            "event_id": case((newer, stmt.excluded.event_id), else_=table.c.event_id),
            "event_type": case((newer, stmt.excluded.event_type), else_=table.c.event_type),
        },
    )
    work.session.execute(
        stmt,
        [
            {
                "account_id": ref[0],
                "source": ref[1],
                "external_id": ref[2],
                "customer_id": tombstone.customer_id,
                "forgotten_at": tombstone.forgotten_at,
                "event_id": tombstone.event_id,
                "event_type": tombstone.event_type,
                "created_at": work.now,
            }
            for ref in sorted(work.tombstones_changed)
            if (tombstone := work.tombstones[ref])
        ],
    )


def _write_back(work: _Working) -> None:
    session = work.session
    _write_identity_changes(work)
    for customer_id, record in work.records.items():
        row = work.customers[customer_id]
        address = work.addresses[customer_id]
        clock = _clock_with_email(record.clock, address)
        if (row.name, row.clock, row.last_activity_at, row.email, row.past_emails) != (
            record.name,
            clock,
            record.last_activity_at,
            address.email,
            address.past_emails(),
        ):
            row.name = record.name
            row.clock = clock
            row.last_activity_at = record.last_activity_at
            row.email = address.email
            row.past_emails = address.past_emails()
            row.updated_at = work.now
        elif customer_id in work.touched:
            row.updated_at = work.now
    for key, project in work.project_records.items():
        existing = work.project_rows.get(key)
        if existing is None:
            session.add(
                CustomerProject(
                    customer_id=key[0],
                    project_id=key[1],
                    status=project.status,
                    params=dict(project.params),
                    clock=dict(project.clock),
                    first_seen_at=project.first_seen_at,
                    last_activity_at=project.last_activity_at,
                    updated_at=work.now,
                )
            )
        elif (
            existing.status,
            existing.params,
            existing.clock,
            existing.first_seen_at,
            existing.last_activity_at,
        ) != (
            project.status,
            project.params,
            project.clock,
            project.first_seen_at,
            project.last_activity_at,
        ):
            existing.status = project.status
            existing.params = dict(project.params)
            existing.clock = dict(project.clock)
            existing.first_seen_at = project.first_seen_at
            existing.last_activity_at = project.last_activity_at
            existing.updated_at = work.now
    # Deletions first: an identity forgotten and then linked again in one batch ends up linked.
    for account_id, source, external_id in sorted(work.forgotten):
        session.execute(
            delete(Identity).where(
                Identity.account_id == account_id,
                Identity.source == source,
                Identity.external_id == external_id,
            )
        )
    if work.new_identities:
        stmt = dialect_insert(session, Identity).on_conflict_do_nothing(
            index_elements=["account_id", "source", "external_id"]
        )
        session.execute(
            stmt,
            [
                {"account_id": a, "source": s, "external_id": x, "customer_id": c}
                for (a, s, x), c in sorted(work.new_identities.items())
            ],
        )
    _write_tombstones(work)
    if work.change_rows:
        session.execute(insert(ChangeRow), work.change_rows)


def apply_events(session: Session, events: Sequence[Event]) -> BatchReport:
    """Apply locked events inside the caller's transaction. Returns what happened to each."""
    now = utcnow()
    report = BatchReport(claimed=len(events))
    planned: list[tuple[Event, list[CustomerChange]]] = []
    for event in events:
        # `attempts` is counted in _finish, which every event reaches exactly once: set here, it made
        # the first autoflush (in load) UPDATE every event once more before its real write-back.
        try:
            planned.append((event, changes_for_event(session, event)))
        except EventIgnored as exc:
            _finish(event, "ignored", now, error=str(exc) or "event type not tracked")
            report.ignored += 1
        except Exception as exc:
            log.info("event %s failed to normalize: %s", event.id, exc)
            _finish(event, "failed", now, error=_error_text(exc))
            report.failed.append(event.id)

    work = _Working(session, now)
    work.load(planned)
    for event, changes in planned:
        try:
            event_report = _apply_event(work, event, changes)
        except Exception as exc:
            log.info("event %s failed to apply: %s", event.id, exc)
            _finish(event, "failed", now, error=_error_text(exc))
            report.failed.append(event.id)
            continue
        _finish(event, "processed", now, changes=event_report)
        report.processed += 1
    _write_back(work)
    session.flush()
    return report


def _finish(
    event: Event, status: str, now: datetime, *, error: str | None = None, changes: list[Any] | None = None
) -> None:
    event.attempts += 1
    event.status = status
    event.last_error = error
    event.processed_at = now
    if changes is not None:
        event.changes = changes
