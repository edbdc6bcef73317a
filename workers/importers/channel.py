"""The worker side of the `import` channel: a stored import event back into changes.

Provider imports stored `{"connector": name, "event": <a provider event>}`: the connector that
normalizes that provider's webhooks normalizes it here, in the worker, with the database at hand
(so a subscription can still find its customer's email through an identity). CSV rows and
reconcile fixes stored their changes directly: `{"changes": [<CustomerChange JSON>, …]}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tributary.connectors.base import Envelope, SourceConfig
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import UnknownConnector, registry
from tributary.models import Project, Source
from tributary.workers.connector_changes import NormalizeError, WorkerContext, normalized_email

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tributary.models import Event

__all__ = ["import_changes"]


def _config(session: Session, event: Event, connector: str) -> SourceConfig:
    """The event's source as its connector sees it, cached for the session: an import's batch has
    hundreds of events of one source, and the session's identity map holds rows only weakly."""
    cache: dict[tuple[str | None, str, str], SourceConfig] = session.info.setdefault("import_sources", {})
    key = (event.source_id, event.project_id, connector)
    if key not in cache:
        source = session.get(Source, event.source_id) if event.source_id else None
        project = session.get(Project, event.project_id)
        cache[key] = SourceConfig(
            id=source.id if source else "",
            connector=connector,
            project=project.slug if project else "",
            options=dict(source.options) if source else {},
        )
    return cache[key]


def import_changes(session: Session, event: Event) -> list[CustomerChange]:
    payload = event.payload or {}
    if isinstance(payload.get("changes"), list):
        return [normalized_email(CustomerChange.from_json(c), "import") for c in payload["changes"]]
    name, provider_event = payload.get("connector"), payload.get("event")
    if not isinstance(name, str) or not isinstance(provider_event, dict):
        raise NormalizeError("the import event names no connector and event")
    try:
        connector = registry().get(name)
    except UnknownConnector as exc:
        raise NormalizeError(f"{exc}; install or enable it, then replay the event") from None
    config = _config(session, event, name)
    envelope = Envelope(
        event_id=event.provider_event_id or event.id,
        type=event.type,
        occurred_at=event.occurred_at,
        payload=provider_event,
        email=event.email,
    )
    changes = connector.normalize(envelope, WorkerContext(session, event.account_id, config))
    return [normalized_email(change, name) for change in changes]
