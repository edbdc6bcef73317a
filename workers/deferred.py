"""Events that wait for a person (SPEC §3 `deferred`).

An event that names a person only by a provider id nothing has linked yet (a Clerk session of a
user whose signup had no email, a Stripe subscription of a customer never seen with an email and
no `api_key` to ask) cannot be attributed *yet*. That is not a failure: retrying it changes
nothing until another event names the person. So it is parked with status `deferred` and the
awaited identity in `events.awaiting`, and:

- the batch that links that identity (or gives a deletion's tombstone its customer) claims the
  events waiting for it and applies them in the same transaction (`claim_woken`);
- the sweeper wakes any deferred event whose identity became known without waking it (two
  workers committing concurrently on PostgreSQL can miss each other) (`wake_known`);
- after `TRIBUTARY_DEFER_SECONDS` (default 7 days) the sweeper marks what still waits `ignored`,
  with the reason (`expire_deferred`). A replay applies it again should the person turn up later.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, literal, select, update
from sqlalchemy.orm import Session

from models import Event, Identity, IdentityTombstone
from models.sql import is_postgres
from workers.batch_state import Ref, Working

__all__ = ["awaiting_key", "claim_woken", "count_deferred", "expire_deferred", "known_refs", "wake_known"]

DEFERRED = "deferred"
# Bounds one statement's IN list.
_CHUNK = 500


def awaiting_key(ref: Ref) -> str:
    """`<source>:<external id>`: connector names never contain a colon (connectors/registry.py)."""
    return f"{ref[1]}:{ref[2]}"


def known_refs(work: Working) -> dict[str, set[str]]:
    """Per account, the identities this batch made known: new links, and deletions whose customer
    an older event just named."""
    known: dict[str, set[str]] = defaultdict(set)
    for ref in work.new_identities:
        known[ref[0]].add(awaiting_key(ref))
    for ref in work.tombstones_changed:
        if work.tombstones[ref].customer_id is not None:
            known[ref[0]].add(awaiting_key(ref))
    return known


def claim_woken(session: Session, known: Mapping[str, Iterable[str]]) -> list[Event]:
    """Lock the deferred events waiting for any of `known`, oldest first. Rows another worker
    holds are skipped on PostgreSQL: whoever holds them applies them."""
    found: list[Event] = []
    for account_id, keys in sorted(known.items()):
        ordered = sorted(keys)
        for start in range(0, len(ordered), _CHUNK):
            stmt = (
                select(Event)
                .where(
                    Event.account_id == account_id,
                    Event.awaiting.in_(ordered[start : start + _CHUNK]),
                    Event.status == DEFERRED,
                )
                .order_by(Event.id)
            )
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            found.extend(session.scalars(stmt))
    for event in found:
        event.awaiting = None
    return sorted(found, key=lambda e: e.id)


def _identity_known() -> ColumnElement[bool]:
    linked = exists().where(
        Identity.account_id == Event.account_id,
        Identity.source + literal(":") + Identity.external_id == Event.awaiting,
    )
    remembered = exists().where(
        IdentityTombstone.account_id == Event.account_id,
        IdentityTombstone.source + literal(":") + IdentityTombstone.external_id == Event.awaiting,
        IdentityTombstone.customer_id.is_not(None),
    )
    return linked | remembered


def wake_known(session: Session) -> int:
    """Put back to `pending` every deferred event whose identity is known now; returns how many."""
    result = session.execute(
        update(Event)
        .where(Event.status == DEFERRED, _identity_known())
        .values(status="pending", awaiting=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def expire_deferred(session: Session, max_wait: timedelta, now: datetime) -> int:
    """Mark `ignored` the deferred events received more than `max_wait` ago; returns how many."""
    cutoff = now - max_wait
    expired = 0
    while True:
        batch = list(
            session.scalars(
                select(Event)
                .where(Event.status == DEFERRED, Event.received_at <= cutoff)
                .order_by(Event.id)
                .limit(_CHUNK)
            )
        )
        for event in batch:
            event.status = "ignored"
            event.last_error = (
                f"no event named {event.awaiting or 'its person'} within "
                f"{int(max_wait.total_seconds())} s (TRIBUTARY_DEFER_SECONDS); nothing to attribute "
                "it to. Replay it if the person turns up later."
            )[:2000]
            event.awaiting = None
            event.processed_at = now
        session.flush()
        expired += len(batch)
        if len(batch) < _CHUNK:
            return expired


def count_deferred(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Event).where(Event.status == DEFERRED)) or 0)
