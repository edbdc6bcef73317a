"""Everything one event would change, kept apart from the batch until the event has merged cleanly.

An `EventOverlay` sits on top of the `BatchState` (workers/batch/state.py): reads go through it to
the state, writes stay in it. `commit` publishes them all at once, so an event that fails halfway
(an unknown identity, a change that cannot merge) leaves the batch exactly as it found it and fails
alone while the rest of the batch commits.

The decisions are made elsewhere: field merges by workers/batch/merge_rules.py, whose customer an
identity's change is by workers/batch/identity_resolution.py, the union of two customers by
workers/batch/customer_union.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tributary.connectors.changes import CustomerChange
from tributary.models import Event
from tributary.models.base import to_micros
from tributary.workers.batch.customer_union import unite_customers, unite_projects
from tributary.workers.batch.email_record import EmailRecord
from tributary.workers.batch.merge_rules import CustomerRecord, ProjectRecord
from tributary.workers.batch.state import BatchState, PlannedMerge, Ref, Tombstone

__all__ = ["EventOverlay"]


class EventOverlay:
    """One event's pending changes over the batch state."""

    def __init__(self, state: BatchState, event: Event) -> None:
        self.state = state
        self.event = event
        # Records as this event merged them.
        self.records: dict[str, CustomerRecord] = {}
        self.projects: dict[tuple[str, str], ProjectRecord] = {}
        self.addresses: dict[str, EmailRecord] = {}
        # (account, email) -> customer, or None once the address has left its customer.
        self.owners: dict[tuple[str, str], str | None] = {}
        self.tombstones: dict[Ref, Tombstone] = {}
        # Identity links made and retired, merges, renames and the event's timeline rows.
        self.links: dict[Ref, str] = {}
        self.forgets: set[Ref] = set()
        self.merges: list[PlannedMerge] = []
        self.absorbed: dict[str, str] = {}
        self.dropped_projects: set[tuple[str, str]] = set()
        self.renamed: set[str] = set()
        self.timeline: list[dict[str, Any]] = []
        # Customers whose creation this event puts on the timeline; see BatchState for the rest.
        self.announced: set[str] = set()
        self.used: set[str] = set()
        self.displaced: set[str] = set()

    # -- reads through to the batch ------------------------------------------------------------

    def customer(self, customer_id: str) -> CustomerRecord:
        return self.records.get(customer_id) or self.state.records[customer_id]

    def project(self, key: tuple[str, str]) -> ProjectRecord | None:
        return self.projects.get(key) or self.state.project_records.get(key)

    def address(self, customer_id: str) -> EmailRecord:
        return self.addresses.get(customer_id) or self.state.addresses[customer_id]

    def owner(self, email: str) -> str | None:
        key = (self.event.account_id, email)
        return self.owners[key] if key in self.owners else self.state.by_email.get(key)

    def tombstone(self, ref: Ref) -> Tombstone | None:
        return self.tombstones.get(ref) or self.state.tombstones.get(ref)

    def placeholder(self, customer_id: str) -> bool:
        """Created by this batch's load for an address no applied change has used: not a person."""
        state = self.state
        return customer_id in state.created and customer_id not in state.used and customer_id not in self.used

    # -- writes into the overlay ----------------------------------------------------------------

    def record_timeline(self, customer_id: str, change: CustomerChange, data: dict[str, Any]) -> None:
        """One timeline row (models `TimelineEntry`) of this event about `customer_id`."""
        self.timeline.append(
            {
                "customer_id": customer_id,
                "project_id": self.event.project_id,
                "event_id": self.event.id,
                "kind": self.event.type,
                "data": data,
                "occurred_at": change.occurred_at,
                "recorded_at": self.state.now,
            }
        )

    def unite(
        self, absorbed: str, survivor: str, email: str, change: CustomerChange, data: dict[str, Any]
    ) -> None:
        """`survivor` (the identity's customer) takes `email` from `absorbed`: the two become one.
        Every clocked field is joined (newer values win); the absorbed customer's identities,
        projects and timeline move to the survivor at write-back, and its row is deleted."""
        state, t = self.state, to_micros(change.occurred_at)
        self.records[survivor] = unite_customers(self.customer(survivor), self.customer(absorbed))
        self.records.pop(absorbed, None)
        self.addresses[survivor] = self.address(survivor).united(self.address(absorbed), email, t)
        for key in sorted({*state.project_records, *self.projects}):
            if key[0] != absorbed or key in self.dropped_projects:
                continue
            their_project = self.projects.get(key) or state.project_records[key]
            target = (survivor, key[1])
            our_project = self.project(target)
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
        self.record_timeline(absorbed, change, {"merged_into": survivor, "email": email})

    # -- the one way into the batch ---------------------------------------------------------------

    def commit(self) -> None:
        """Publish everything this event changed into the batch state, at once."""
        state = self.state
        state.records.update(self.records)
        state.project_records.update(self.projects)
        state.new_identities.update(self.links)
        for ref in self.forgets:
            state.forgotten.add(ref)
            state.new_identities.pop(ref, None)
            state.by_identity.pop(ref, None)
        state.timeline.extend(self.timeline)
        state.announced.update(self.announced)
        state.touched.update(row["customer_id"] for row in self.timeline if row["data"])
        state.note_addresses(self.addresses)
        for key, owner in self.owners.items():
            if owner is None:
                state.by_email.pop(key, None)
            else:
                state.by_email[key] = owner
        state.tombstones.update(self.tombstones)
        state.tombstones_changed.update(self.tombstones)
        state.used.update(self.used)
        state.displaced.update(self.displaced)
        state.renamed.update(self.renamed)
        state.merges.extend(self.merges)
        for key in self.dropped_projects:
            state.project_records.pop(key, None)
        for absorbed, survivor in self.absorbed.items():
            self._redirect(absorbed, survivor)

    def _redirect(self, absorbed: str, survivor: str) -> None:
        # Whatever the batch holds about the absorbed customer now points at the survivor.
        state = self.state
        state.absorbed[absorbed] = survivor
        state.records.pop(absorbed, None)
        state.drop_addresses(absorbed)
        state.renamed.discard(absorbed)
        for links in (state.by_identity, state.new_identities, state.by_email):
            for link, customer_id in links.items():
                if customer_id == absorbed:
                    links[link] = survivor  # type: ignore[index]
        for ref, tombstone in state.tombstones.items():
            if tombstone.customer_id == absorbed:
                state.tombstones[ref] = replace(tombstone, customer_id=survivor)
        for row in state.timeline:
            if row["customer_id"] == absorbed:
                row["customer_id"] = survivor
