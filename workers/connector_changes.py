"""A webhook event into `CustomerChange`s through its connector, and what every connector's output
goes through before the worker applies it: text made storable, the email normalized.

The import channel (workers/importers/channel.py) normalizes provider objects through the same
connectors and the same checks; workers/normalize.py dispatches an event to one or the other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tributary.connectors import safe_json
from tributary.connectors.base import Envelope, SourceConfig
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.event_rules import InvalidEmail, normalize_email
from tributary.connectors.registry import UnknownConnector, registry
from tributary.models import Customer, Identity, Project, Source

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tributary.models import Event

__all__ = [
    "NormalizeError",
    "WorkerContext",
    "connector_changes",
    "normalized_email",
    "source_config",
    "storable_change",
]


class NormalizeError(Exception):
    """The event cannot be turned into changes; the message is shown to operators."""


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """`NormalizeContext` in the worker: identity lookups read the batch's own session."""

    session: Session
    account_id: str
    source: SourceConfig

    def email_for(self, identity: IdentityRef) -> str | None:
        email: str | None = self.session.scalar(
            select(Customer.email)
            .join(Identity, Identity.customer_id == Customer.id)
            .where(
                Identity.account_id == self.account_id,
                Identity.source == identity.source,
                Identity.external_id == identity.external_id,
            )
        )
        return email


# `Session.info` key of `source_config`'s memo: one per session, so one per batch transaction.
_READ = "tributary.source_config"


def source_config(session: Session, event: Event) -> SourceConfig:
    """The event's source as its connector sees it.

    Each source and project is read once per session: the session's identity map holds loaded
    rows only while something references them, so without the memo every event of a batch paid
    two SELECTs for the same rows (a quarter of a worker's CPU at small batches)."""
    read: dict[tuple[type, str], Any] = session.info.setdefault(_READ, {})

    def once(model: type[Source] | type[Project], key: str) -> Any:
        if (model, key) not in read:
            read[model, key] = session.get(model, key)
        return read[model, key]

    # Secrets stay out of the worker: verification happened in the web process.
    source: Source | None = once(Source, event.source_id) if event.source_id else None
    project: Project | None = once(Project, event.project_id)
    return SourceConfig(
        id=source.id if source else "",
        connector=event.channel,
        project=project.slug if project else "",
        # Each event gets its own copy: a connector that changed them would change nothing for the next.
        options=dict(source.options) if source else {},
    )


def normalized_email(change: CustomerChange, connector: str) -> CustomerChange:
    """Emails are the merge key: one spelling per address (connectors/event_rules.py), whatever
    the connector produced."""
    if change.email is None:
        return change
    try:
        return replace(change, email=normalize_email(change.email))
    except InvalidEmail as exc:
        reason = str(exc).removeprefix("not a valid email address: ")
        message = f"the {connector} event names an invalid email {change.email!r}: {reason}"
        raise NormalizeError(message) from None


def _clean(value: str | None) -> str | None:
    return safe_json.clean_text(value) if value is not None else None


def storable_change(change: CustomerChange) -> CustomerChange:
    """`change` with NUL and lone surrogates removed from its text and non-finite numbers dropped
    from its params: a connector's output is provider data, scrubbed rather than refused
    (connectors/safe_json.py), whichever connector produced it."""
    identity = change.identity
    texts = [change.email, change.name, change.status, change.status_if_absent]
    parts: list[Any] = [texts, change.params, change.params_once, list(change.params_unset)]
    if identity is not None:
        parts.append([identity.source, identity.external_id])
    if safe_json.problem(parts) is None:
        return change
    if identity is not None:
        identity = IdentityRef(
            safe_json.clean_text(identity.source), safe_json.clean_text(identity.external_id)
        )
    return replace(
        change,
        email=_clean(change.email),
        name=_clean(change.name),
        status=_clean(change.status),
        status_if_absent=_clean(change.status_if_absent),
        identity=identity,
        params=safe_json.scrub(dict(change.params)),
        params_once=safe_json.scrub(dict(change.params_once)),
        params_unset=tuple(safe_json.clean_text(key) for key in change.params_unset),
    )


def connector_changes(session: Session, event: Event) -> list[CustomerChange]:
    try:
        connector = registry().get(event.channel)
    except UnknownConnector as exc:
        raise NormalizeError(f"{exc}; install or enable it, then replay the event") from None
    envelope = Envelope(
        event_id=event.provider_event_id or event.id,
        type=event.type,
        occurred_at=event.occurred_at,
        payload=event.payload or {},
        email=event.email,
    )
    context = WorkerContext(session, event.account_id, source_config(session, event))
    changes = connector.normalize(envelope, context)
    if not isinstance(changes, list) or not all(isinstance(c, CustomerChange) for c in changes):
        raise NormalizeError(
            f"the {event.channel} connector returned {type(changes).__name__}, not a list of changes"
        )
    return [normalized_email(storable_change(change), event.channel) for change in changes]
