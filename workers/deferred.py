"""Events that wait for a person (SPEC §3 `deferred`).

An event that names a person only by a provider id nothing has linked yet (a Clerk session of a
user whose signup had no email, a Stripe subscription of a customer never seen with an email and
no `api_key` to ask) cannot be attributed *yet*. That is not a failure: retrying it changes
nothing until another event names the person. So it is parked with status `deferred` and the
awaited identity in `events.awaiting_source` / `awaiting_id` (written with the event's outcome by
workers/batch/write_back.py), and:

- the batch that links that identity (or gives a deletion's tombstone its customer) claims the
  events waiting for it (`BatchState.known_identities`) and applies them in the same transaction
  (`claim_woken`);
- the sweeper wakes any deferred event whose identity became known without waking it (two
  workers committing concurrently on PostgreSQL can miss each other) (`wake_known`);
- after `TRIBUTARY_DEFER_SECONDS` (default 7 days) the sweeper marks what still waits `ignored`,
  with the reason (`expire_deferred`). A replay applies it again should the person turn up later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.orm import Session

from tributary.models import Event, Identity, IdentityTombstone
from tributary.models.sql import is_postgres, pairs_in

__all__ = ["claim_woken", "count_deferred", "expire_deferred", "wake_known"]

DEFERRED = "deferred"
# Bounds one statement's IN list.
_CHUNK = 500


def claim_woken(session: Session, known: Mapping[str, Iterable[tuple[str, str]]]) -> list[Event]:
    """Lock the deferred events waiting for any of `known`, oldest first. Rows another worker
    holds are skipped on PostgreSQL: whoever holds them applies them."""
    found: list[Event] = []
    for account_id, refs in sorted(known.items()):
        ordered = sorted(refs)
        for start in range(0, len(ordered), _CHUNK):
            stmt = (
                select(Event)
                .where(
                    Event.account_id == account_id,
                    pairs_in(Event.awaiting_source, Event.awaiting_id, ordered[start : start + _CHUNK]),
                    Event.status == DEFERRED,
                )
                .order_by(Event.id)
            )
            if is_postgres(session):
                stmt = stmt.with_for_update(skip_locked=True)
            found.extend(session.scalars(stmt))
    for event in found:
        event.awaiting_source = event.awaiting_id = None
    return sorted(found, key=lambda e: e.id)


def _identity_known() -> ColumnElement[bool]:
    # Equalities on (account, source, external id): the unique indexes of both tables answer.
    linked = exists().where(
        Identity.account_id == Event.account_id,
        Identity.source == Event.awaiting_source,
        Identity.external_id == Event.awaiting_id,
    )
    remembered = exists().where(
        IdentityTombstone.account_id == Event.account_id,
        IdentityTombstone.source == Event.awaiting_source,
        IdentityTombstone.external_id == Event.awaiting_id,
        IdentityTombstone.customer_id.is_not(None),
    )
    return linked | remembered


def wake_known(session: Session) -> int:
    """Put back to `pending` every deferred event whose identity is known now; returns how many."""
    result = session.execute(
        update(Event)
        .where(Event.status == DEFERRED, _identity_known())
        .values(status="pending", awaiting_source=None, awaiting_id=None)
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
            event.awaiting_source = event.awaiting_id = None
            event.processed_at = now
        session.flush()
        expired += len(batch)
        if len(batch) < _CHUNK:
            return expired


def count_deferred(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Event).where(Event.status == DEFERRED)) or 0)
