"""Provider identities in a batch (SPEC §4, "Email change" and "Deletion"); the pure rules are in
`workers/merge_customers.py`.

- A change flagged `email_change` carries a provider user id and the address that user had at the
  event time. It resolves through the identity first: a newer address renames the customer (the
  old one joins `past_emails`) or, when another customer has it, merges the two into the
  identity's customer; an older one ("stale") is remembered as a past address.
- A stale assertion of address E at t merges the customer O that holds E into the identity's
  customer only when O provably had E by t: O was known with E at or before t (`EmailRecord.since`,
  the earliest event time of any change that named O by E, or of E's assertion or rename) and no
  identity asserted E on O after the identity's current address (asserted at T > t). Delivered in
  order, the identity's first event at t would have found O by its address and joined it, and the
  later rename would have taken O along: the merge gives that record. A customer first known with E
  after t, or whose E another identity asserted after T, may be a person who got E once this
  identity had left it, so it is never merged on (E is only remembered). Rows written before
  `since` was recorded have none and are never merged on this way.
- The mirror case: a change naming E by address alone, at t, delivered when nobody holds E but an
  identity's customer has E among its past addresses asserted at or after t, goes to that customer
  (`Working.earlier_holder`): in order it would have created the customer that the identity then
  joined or merged. A change after every such assertion creates a customer of its own.
- `forget_identity` removes the link and leaves a tombstone (models/merges.py), so events from
  before the deletion that arrive after it still reach the same customer without linking again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, update
from sqlalchemy.orm.attributes import set_committed_value

from connectors.changes import CustomerChange
from models import Customer, CustomerMerge, CustomerProject, Event, Identity, IdentityTombstone
from models import CustomerChange as ChangeRow
from models.base import from_micros, to_micros
from models.sql import dialect_insert
from workers.batch_state import ApplyError, PlannedMerge, Ref, Tombstone, Working, change_row
from workers.merge import CustomerRecord, ProjectRecord
from workers.merge_customers import EMAIL_CLOCK, EmailRecord, unite_customers, unite_projects


class EventIdentities:
    def __init__(
        self,
        work: Working,
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

    def ghost(self, ref: Ref, change: CustomerChange) -> Tombstone | None:
        """The identity's tombstone when `change` belongs to the deleted identity's customer (see
        `Working.routes_to_tombstone`): such a change never links the identity again."""
        tombstone = self.tombstone(ref)
        if tombstone is None or not self.work.routes_to_tombstone(ref, change, tombstone):
            return None
        return tombstone

    def placeholder(self, customer_id: str) -> bool:
        """Created by this batch's load for an address no applied change has used: not a person."""
        work = self.work
        return customer_id in work.created and customer_id not in work.used and customer_id not in self.used

    # -- the three operations ----------------------------------------------------------------------

    def assert_email(self, ref: Ref, change: CustomerChange, data: dict[str, Any]) -> str:
        """Resolve a change that states the identity's address at its event time (`email_change`)."""
        assert change.email is not None
        email, t = change.email, to_micros(change.occurred_at)
        ghost = self.ghost(ref, change)
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
            # address now may have got it afterwards, so it is only remembered, unless that
            # customer provably had it by `t`: then in order this identity would have joined it.
            if email not in current.past:
                data["past_email_added"] = email
            other = self.address(owner) if owner is not None and owner != holder else None
            assert current.asserted_at is not None
            if owner is not None and other is not None and not self.placeholder(owner):
                if other.held_for(t, current.asserted_at):
                    self._merge(owner, holder, email, change, data)
                    self.owners[(self.event.account_id, email)] = None
                    return holder
            elif owner is not None and other is not None:
                self.displaced.add(owner)
            self.addresses[holder] = current.remembered(email, t)
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
            change_row(work, self.event, absorbed, change, {"merged_into": survivor, "email": email})
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
            self.rows.append(change_row(self.work, self.event, customer_id, change, data))
        return {"customer_id": customer_id, "change": change.to_json(), **data}

    def resolved(self, ref: Ref | None, change: CustomerChange, customer_id: str) -> bool:
        """Note that `change` applies to `customer_id`; True when it predates the deletion of its
        identity. If that deletion did not know its customer yet, this change names it: the
        tombstone and the timeline learn it now."""
        self.used.add(customer_id)
        address = self.address(customer_id)
        if change.email == address.email:
            self.addresses[customer_id] = address.held(to_micros(change.occurred_at))
        if ref is None:
            return False
        tombstone = self.ghost(ref, change)
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


def clock_with_email(clock: Any, address: EmailRecord) -> dict[str, Any]:
    merged = {key: value for key, value in dict(clock).items() if key != EMAIL_CLOCK}
    if (entry := address.clock_entry()) is not None:
        merged[EMAIL_CLOCK] = entry
    return merged


def write_identity_changes(work: Working) -> None:
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


def _write_merge(work: Working, merge: PlannedMerge) -> None:
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


def write_tombstones(work: Working) -> None:
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
