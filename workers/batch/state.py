"""The state of one worker batch: the customers, project rows, identity links and tombstones the
batch's events name, loaded (and locked) in a fixed number of statements, and the records merged so
far by the events that committed.

Events change it only through `EventOverlay.commit` (workers/batch/overlay.py), one commit per event
that merged cleanly; `workers/batch/write_back.py` then writes what it holds. The load writes
nothing but PostgreSQL's advisory locks on new addresses (workers/batch/new_customers.py): a new
customer stays in memory until write-back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Text, bindparam, select, text
from sqlalchemy.orm import Session

from tributary.connectors.changes import CustomerChange
from tributary.models import Customer, CustomerProject, Event, Identity, IdentityTombstone
from tributary.models.sql import is_postgres, pairs_in
from tributary.workers.batch import load_statements, new_customers
from tributary.workers.batch.email_record import EmailRecord
from tributary.workers.batch.merge_rules import CustomerRecord, ProjectRecord
from tributary.workers.batch.new_customers import NewCustomer

__all__ = ["BatchState", "EventOutcome", "PlannedMerge", "Ref", "Tombstone"]

# The batch's projects and their accounts locked in one order in every batch (the rows are locked
# as the sorted result is read), and the plans of the load's lookups chosen for the values at hand
# (`load`; the writes go back to the plan cache, workers/batch/write_back_pg.py `begin_writes`) and
# priced for the pages a batch reads: one statement, not three, as the load's fixed cost per batch
# is what a trickle pays per event. The lock is a subquery so that the
# settings are made even when a project is gone.
# `random_page_cost` 1.1, the usual value for SSDs, for this transaction: at the default 4 (a disk
# seek), 500 probes of the unique address index looked dearer than reading every customer of the
# account until the table held 60,000-100,000 rows, so the batch's two reads by address were a Seq
# Scan of the table each: 5.5 and 5.6 ms a batch at 30,000 customers, 10.8 and 11.1 at 60,000,
# against 1.3-1.6 through the index. A batch's statements are all lookups by key; a table of a few
# thousand rows is still read whole, as cheap as the probes there.
_LOCK_PARENTS = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('random_page_cost', '1.1', true), (SELECT count(*) FROM ("
    " SELECT 1 FROM projects AS p JOIN accounts AS a ON a.id = p.account_id"
    " WHERE p.id = ANY(:projects) ORDER BY p.id FOR KEY SHARE) AS parents)"
).bindparams(bindparam("projects", type_=ARRAY(Text())))

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
    """Two customers found to be one person: `absorbed` is folded into `survivor` at write-back."""

    account_id: str
    absorbed_id: str
    survivor_id: str
    email: str
    event_id: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What happened to one event: its new status, written with its attempt at write-back."""

    event: Event
    status: str
    error: str | None = None
    # The event's report (`events.changes`), for an event that was applied.
    changes: list[Any] | None = None
    # The identity a `deferred` event waits for (workers/deferred.py).
    awaiting: Ref | None = None


class BatchState:
    """The batch's customers and project rows: ORM rows as loaded, records as merged so far, and
    every pending write that the committed events produced."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        # Loaded rows, and how the batch finds them.
        self.customers: dict[str, Customer | NewCustomer] = {}
        self.project_rows: dict[tuple[str, str], CustomerProject] = {}
        self.by_email: dict[tuple[str, str], str] = {}
        self.by_identity: dict[Ref, str] = {}
        self.created: set[str] = set()
        # Records as merged by the events committed so far.
        self.records: dict[str, CustomerRecord] = {}
        self.project_records: dict[tuple[str, str], ProjectRecord] = {}
        self.addresses: dict[str, EmailRecord] = {}
        self.tombstones: dict[Ref, Tombstone] = {}
        # The customers in `addresses` with a past address (see `note_addresses`).
        self.with_past: set[str] = set()
        # Pending writes: identity links made and retired, tombstones, merges, renames, timeline.
        self.new_identities: dict[Ref, str] = {}
        self.forgotten: set[Ref] = set()
        self.tombstones_changed: set[Ref] = set()
        self.merges: list[PlannedMerge] = []
        self.absorbed: dict[str, str] = {}
        self.renamed: set[str] = set()
        self.timeline: list[dict[str, Any]] = []
        self.outcomes: list[EventOutcome] = []
        # Customers whose creation is already on the timeline, and customers this batch touched.
        self.announced: set[str] = set()
        self.touched: set[str] = set()
        # Customers resolved by an applied change; and customers the load created for an address
        # that an email change took over, or that only a stale assertion named: unless some change
        # used them after all, they are deleted at write-back instead of lingering empty.
        self.used: set[str] = set()
        self.displaced: set[str] = set()

    def note_addresses(self, addresses: dict[str, EmailRecord]) -> None:
        """Set customers' address records (the only way `addresses` grows or changes)."""
        self.addresses.update(addresses)
        for customer_id, address in addresses.items():
            if address.past:
                self.with_past.add(customer_id)
            else:
                self.with_past.discard(customer_id)

    def drop_addresses(self, customer_id: str) -> None:
        self.addresses.pop(customer_id, None)
        self.with_past.discard(customer_id)

    def finish(
        self,
        event: Event,
        status: str,
        *,
        error: str | None = None,
        changes: list[Any] | None = None,
        awaiting: Ref | None = None,
    ) -> None:
        """Note an event's outcome (see `EventOutcome`); written at write-back."""
        self.outcomes.append(EventOutcome(event, status, error, changes, awaiting))

    def load(self, planned: Iterable[tuple[Event, list[CustomerChange]]]) -> None:
        """Create, lock and load every customer the planned changes name, by address or identity,
        with their project rows, identity links and tombstones."""
        planned = list(planned)
        emails: dict[str, set[str]] = defaultdict(set)
        identities: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for event, changes in planned:
            for change in changes:
                if change.email:
                    emails[event.account_id].add(change.email)
                if change.identity:
                    identities[event.account_id].add((change.identity.source, change.identity.external_id))
        if is_postgres(self.session):
            # With the parents' locks, plans for the values at hand: psycopg prepares a statement
            # run five times, and a generic plan of `email IN (…500 parameters…)` compares every row
            # of the account with each address in turn, where a custom plan hashes the list and
            # uses the unique index; and index probes priced as cached pages (`_LOCK_PARENTS`).
            self._lock_parents(event for event, _ in planned)
        for account_id in sorted(emails.keys() | identities.keys()):
            self._load_account(account_id, sorted(emails[account_id]), sorted(identities[account_id]))
        self._load_projects()

    def _lock_parents(self, events: Iterable[Event]) -> None:
        """Lock the batch's projects and their accounts FOR KEY SHARE until it commits: they stay
        while the batch writes rows that point at them (customers, project and timeline rows), and
        a deletion waits for the batch, then takes those rows with it. On PostgreSQL these are
        what the foreign keys' per-row checks were (migration 0015). The same statement sets the
        transaction's `plan_cache_mode` and `random_page_cost` (`_LOCK_PARENTS`)."""
        projects = sorted({event.project_id for event in events})
        self.session.execute(_LOCK_PARENTS, {"projects": projects})

    def _load_account(self, account_id: str, emails: list[str], identities: list[tuple[str, str]]) -> None:
        others: list[str] = []
        if identities:
            others += self._load_identities(account_id, identities)
            others += self._load_tombstones(account_id, identities)
        postgres = is_postgres(self.session)
        unheld: list[str] = []
        if emails:
            # Whether an address is anyone's, and on PostgreSQL its lock if nobody's (see
            # new_customers.py); on SQLite the batch's write lock keeps it free.
            lookup = new_customers.lock_unheld if postgres else new_customers.unheld
            unheld = lookup(self.session, account_id, emails)
        if emails or others:
            # Addresses nobody holds now may be someone's past one (see `resolve_customer`).
            self._lock_customers(account_id, emails, others, past=unheld)
        if emails:
            self._create(account_id, emails, set(unheld))

    def _create(self, account_id: str, emails: list[str], locked: set[str]) -> None:
        """A new customer, in memory, for each of `emails` that no locked customer holds: its row
        is written once, at write-back, with what the batch merged into it."""
        missing = [email for email in emails if (account_id, email) not in self.by_email]
        late = [email for email in missing if email not in locked]
        if late:
            # Held when read, free once locked: a rename, merge or erasure committed in between
            # (PostgreSQL; on SQLite nothing commits while the batch holds the write lock).
            # Rare, so locked here, out of the usual order (a deadlock, which PostgreSQL breaks,
            # fails the batch, and workers/isolation.py applies it again in halves).
            if is_postgres(self.session):
                new_customers.lock_addresses(self.session, account_id, late)
            self._lock_customers(account_id, late, [], past=late)
            missing = [email for email in missing if (account_id, email) not in self.by_email]
        for email in missing:
            customer = NewCustomer.create(account_id, email, self.now)
            self._hold(customer)
            self.created.add(customer.id)

    def materialize(self, customer_ids: set[str]) -> None:
        """Give the new customers among `customer_ids` their row now, under a
        placeholder address unique to each (the final one is written with every other customer's):
        a merge moves rows onto them and records them before write-back reaches the customers.
        Rare, so through the ORM."""
        rows = []
        for customer_id in sorted(customer_ids):
            new = self.customers.get(customer_id)
            if isinstance(new, NewCustomer):
                row = new.to_row()
                row.email = f"~creating~{customer_id}"
                self.customers[customer_id] = row
                rows.append(row)
        if rows:
            self.session.add_all(rows)
            self.session.flush()

    def row(self, customer_id: str) -> Customer:
        """A customer's ORM row; a new customer must have been given one (`materialize`)."""
        customer = self.customers[customer_id]
        if isinstance(customer, NewCustomer):
            raise RuntimeError(f"customer {customer_id} has no row yet")
        return customer

    def _load_identities(self, account_id: str, identities: list[tuple[str, str]]) -> list[str]:
        rows = self.session.execute(
            select(Identity.source, Identity.external_id, Identity.customer_id).where(
                Identity.account_id == account_id,
                pairs_in(Identity.source, Identity.external_id, identities),
            )
        )
        linked = []
        for source, external_id, customer_id in rows:
            self.by_identity[(account_id, source, external_id)] = customer_id
            linked.append(customer_id)
        return linked

    def _load_tombstones(self, account_id: str, identities: list[tuple[str, str]]) -> list[str]:
        # Deleted identities still route older events to their customer, which is locked too.
        rows = self.session.execute(
            select(
                IdentityTombstone.source,
                IdentityTombstone.external_id,
                IdentityTombstone.customer_id,
                IdentityTombstone.forgotten_at,
                IdentityTombstone.event_id,
                IdentityTombstone.event_type,
            ).where(
                IdentityTombstone.account_id == account_id,
                pairs_in(IdentityTombstone.source, IdentityTombstone.external_id, identities),
            )
        )
        owners = []
        for source, external_id, owner, forgotten_at, event_id, event_type in rows:
            self.tombstones[(account_id, source, external_id)] = Tombstone(
                owner, forgotten_at, event_id, event_type
            )
            if owner is not None:
                owners.append(owner)
        return owners

    def _lock_customers(self, account_id: str, emails: list[str], ids: list[str], past: list[str]) -> None:
        """Load (and on PostgreSQL lock) the customers holding `emails`, those with `ids` and those
        whose past addresses hold any of `past`."""
        stmt = load_statements.customers(is_postgres(self.session), bool(emails), bool(ids), bool(past))
        params: dict[str, Any] = {"account": account_id}
        if emails:
            params["emails"] = emails
        if ids:
            params["ids"] = ids
        if past:
            params["past"] = past
        for customer in self.session.scalars(stmt, params):
            self._hold(customer)

    def _hold(self, customer: Customer | NewCustomer) -> None:
        """Make a loaded (or new) customer the batch's: found by address, merged from what it holds."""
        self.customers[customer.id] = customer
        self.by_email[(customer.account_id, customer.email)] = customer.id
        self.records[customer.id] = CustomerRecord(
            name=customer.name, clock=customer.clock, last_activity_at=customer.last_activity_at
        )
        address = EmailRecord.load(customer.email, customer.past_emails, customer.clock)
        self.note_addresses({customer.id: address})

    def _load_projects(self) -> None:
        if not self.customers:
            return
        rows = self.session.scalars(
            load_statements.project_rows(is_postgres(self.session)), {"ids": list(self.customers)}
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

    def earlier_holder(self, account_id: str, email: str, t: int) -> str | None:
        """The customer whose identity asserted `email` at or after `t` and has since moved on: a
        change from `t` naming that address is that person's, as it would have been in order (the
        identity joins or merges whoever held the address then; identity_resolution.py)."""
        # Only a customer whose past holds the address can have held it: looking at the few with past
        # addresses alone keeps a batch linear in its size (and an event time at or before 1970, 0 or
        # less, no longer matches every customer).
        candidates = [
            (-past[email], customer_id)
            for customer_id in self.with_past
            if email in (past := self.addresses[customer_id].past)
            and past[email] >= t
            and self.customers[customer_id].account_id == account_id
        ]
        return min(candidates)[1] if candidates else None

    def live(self, ref: Ref) -> str | None:
        """The customer an identity is linked to now (forgotten links are gone from both maps)."""
        return self.new_identities.get(ref) or self.by_identity.get(ref)

    def known_identities(self) -> dict[str, set[tuple[str, str]]]:
        """Per account, the identities this batch made known: new links, and deletions whose
        customer an older event just named (deferred events waiting for them can be applied)."""
        known: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for ref in self.new_identities:
            known[ref[0]].add((ref[1], ref[2]))
        for ref in self.tombstones_changed:
            if self.tombstones[ref].customer_id is not None:
                known[ref[0]].add((ref[1], ref[2]))
        return known
