"""Whose change is it: which customer each change of an event resolves to, by address, provider
identity or a deleted identity's tombstone (SPEC §4, "Email change" and "Deletion"). No I/O: the
functions read and write one event's `EventOverlay` (workers/batch/overlay.py); the address clocks are
in workers/batch/email_record.py and the union of two customers in workers/batch/customer_union.py.

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
  (`BatchState.earlier_holder`): in order it would have created the customer that the identity then
  joined or merged. A change after every such assertion creates a customer of its own.
- `forget_identity` removes the link and leaves a tombstone (models/merges.py), so events from
  before the deletion that arrive after it still reach the same customer without linking again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tributary.connectors.changes import CustomerChange
from tributary.models.base import from_micros, to_micros
from tributary.workers.batch.overlay import EventOverlay
from tributary.workers.batch.state import BatchState, Ref, Tombstone

__all__ = [
    "ApplyError",
    "IdentityUnknown",
    "assert_email",
    "forget_identity",
    "note_resolved",
    "resolve_customer",
    "routes_to_tombstone",
]


class ApplyError(Exception):
    """A change that cannot be applied (for example, no way to tell whom it is about)."""


class IdentityUnknown(ApplyError):
    """No email and an identity nothing has linked yet: the event waits for the person
    (`deferred`, workers/deferred.py) instead of failing."""

    def __init__(self, ref: Ref) -> None:
        self.ref = ref
        super().__init__(
            f"no customer is known for {ref[1]} id {ref[2]!r} yet and the event carries no email; "
            "it is applied as soon as an event names this person"
        )


def routes_to_tombstone(state: BatchState, ref: Ref, change: CustomerChange, tombstone: Tombstone) -> bool:
    """Whether `change` about a deleted identity belongs to the customer it had. Events up to the
    deletion's time do; so does a later event without an email while the id is not linked again
    (nothing else could name the person). Only a later event with an email links a re-created id
    again (tests/workers/test_email_change.py)."""
    if to_micros(change.occurred_at) <= tombstone.forgotten_at:
        return True
    return not change.email and state.live(ref) is None


def resolve_customer(overlay: EventOverlay, change: CustomerChange) -> str:
    """The customer a change that does not assert an address belongs to. It reads the batch as the
    events before this one left it: the event's own earlier changes do not move an address."""
    state, account_id = overlay.state, overlay.event.account_id
    if change.identity and not change.email:
        # A deleted identity still names its customer: for events from before the deletion, from
        # the same second (Stripe's cascade cancels subscriptions as it deletes the customer) and,
        # while nothing has linked the id again, from after it.
        ref = (account_id, change.identity.source, change.identity.external_id)
        tombstone = state.tombstones.get(ref)
        if tombstone and tombstone.customer_id and routes_to_tombstone(state, ref, change, tombstone):
            return tombstone.customer_id
    if change.email:
        customer_id = state.by_email.get((account_id, change.email))
        if customer_id is None:
            raise ApplyError(f"customer {change.email!r} could not be created")
        if customer_id in state.created and customer_id not in state.used:
            # Nobody had the address yet: an identity that had it by then may have moved on.
            earlier = state.earlier_holder(account_id, change.email, to_micros(change.occurred_at))
            if earlier is not None:
                overlay.displaced.add(customer_id)
                return earlier
        return customer_id
    if change.identity:
        ref = (account_id, change.identity.source, change.identity.external_id)
        customer_id = state.live(ref)
        if customer_id is None:
            raise IdentityUnknown(ref)
        return customer_id
    raise ApplyError("the change names neither an email nor an identity")


def _ghost(overlay: EventOverlay, ref: Ref, change: CustomerChange) -> Tombstone | None:
    """The identity's tombstone when `change` belongs to the deleted identity's customer (see
    `routes_to_tombstone`): such a change never links the identity again."""
    tombstone = overlay.tombstone(ref)
    if tombstone is None or not routes_to_tombstone(overlay.state, ref, change, tombstone):
        return None
    return tombstone


def assert_email(overlay: EventOverlay, ref: Ref, change: CustomerChange, data: dict[str, Any]) -> str:
    """Resolve a change that states the identity's address at its event time (`email_change`):
    rename, merge or remember, and return the identity's customer."""
    assert change.email is not None
    email, t, account_id = change.email, to_micros(change.occurred_at), overlay.event.account_id
    ghost = _ghost(overlay, ref, change)
    holder = ghost.customer_id if ghost is not None and ghost.customer_id else overlay.state.live(ref)
    if holder is None:
        # An identity we do not know yet: the address decides, as for any change.
        owner = overlay.owner(email)
        if owner is None:
            raise ApplyError(f"customer {email!r} could not be created")
        overlay.addresses[owner] = overlay.address(owner).asserted(t)
        return owner
    current = overlay.address(holder)
    verdict = current.verdict(email, t)
    if verdict == "same":
        overlay.addresses[holder] = current.asserted(t)
        return holder
    owner = overlay.owner(email)
    if verdict == "stale":
        # The identity's address before a change we have already applied. Whoever holds that
        # address now may have got it afterwards, so it is only remembered, unless that customer
        # provably had it by `t`: then in order this identity would have joined it.
        if email not in current.past:
            data["past_email_added"] = email
        other = overlay.address(owner) if owner is not None and owner != holder else None
        assert current.asserted_at is not None
        if owner is not None and other is not None and not overlay.placeholder(owner):
            if other.held_for(t, current.asserted_at):
                overlay.unite(owner, holder, email, change, data)
                overlay.owners[(account_id, email)] = None
                return holder
        elif owner is not None and other is not None:
            overlay.displaced.add(owner)
        overlay.addresses[holder] = current.remembered(email, t)
        return holder
    if owner is not None and owner != holder and not overlay.placeholder(owner):
        overlay.unite(owner, holder, email, change, data)
    else:
        if owner is not None and owner != holder:
            overlay.displaced.add(owner)
        overlay.addresses[holder] = current.renamed(email, t)
    data["email_changed"] = [current.email, email]
    overlay.owners[(account_id, current.email)] = None
    overlay.owners[(account_id, email)] = holder
    overlay.renamed.add(holder)
    return holder


def forget_identity(
    overlay: EventOverlay, ref: Ref, change: CustomerChange, data: dict[str, Any]
) -> dict[str, Any]:
    """Retire the identity and return the event report's entry. Without a known customer (the
    deletion arrived before everything else about the user) only the tombstone is written."""
    t = to_micros(change.occurred_at)
    live = overlay.state.live(ref)
    tombstone = overlay.tombstone(ref)
    customer_id = live or (tombstone.customer_id if tombstone else None)
    if live is not None:
        overlay.forgets.add(ref)
        data["identity_removed"] = [ref[1], ref[2]]
    if tombstone is None or t >= tombstone.forgotten_at:
        overlay.tombstones[ref] = Tombstone(customer_id, t, overlay.event.id, overlay.event.type)
    elif customer_id != tombstone.customer_id:
        overlay.tombstones[ref] = replace(tombstone, customer_id=customer_id)
    if customer_id is None:
        data["identity_removed"] = [ref[1], ref[2]]
        data["pending"] = (
            "no customer is linked to this identity yet; the deletion is recorded on the "
            "customer that the first older event of this user names"
        )
    else:
        overlay.record_timeline(customer_id, change, data)
    return {"customer_id": customer_id, "change": change.to_json(), **data}


def note_resolved(overlay: EventOverlay, ref: Ref | None, change: CustomerChange, customer_id: str) -> bool:
    """Note that `change` applies to `customer_id`; True when it predates the deletion of its
    identity. If that deletion did not know its customer yet, this change names it: the
    tombstone and the timeline learn it now."""
    overlay.used.add(customer_id)
    address = overlay.address(customer_id)
    if change.email == address.email:
        overlay.addresses[customer_id] = address.held(to_micros(change.occurred_at))
    if ref is None:
        return False
    tombstone = _ghost(overlay, ref, change)
    if tombstone is None:
        return False
    if tombstone.customer_id is None:
        overlay.tombstones[ref] = replace(tombstone, customer_id=customer_id)
        overlay.timeline.append(
            {
                "customer_id": customer_id,
                "project_id": None,
                "event_id": tombstone.event_id,
                "kind": tombstone.event_type or "identity.removed",
                "data": {"identity_removed": [ref[1], ref[2]]},
                "occurred_at": from_micros(tombstone.forgotten_at),
                "recorded_at": overlay.state.now,
            }
        )
    return True
