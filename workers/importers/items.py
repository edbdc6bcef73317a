"""What an import source yields, and the offline normalization shared by every provider.

A provider module turns each listed object into `ImportEvent`s shaped like the provider's own
webhook events, so the connector that normalizes webhooks normalizes imports too. Normalizing once
offline here (no database, no network) tells which objects say nothing Tributary tracks (skipped
with the connector's reason) and gives each event a digest of the changes it carries: the digest
is the dedup key, so an unchanged object is a duplicate on the next run and a changed one is new.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tributary.connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    MalformedPayload,
    OfflineContext,
    SourceConfig,
)
from tributary.connectors.changes import CustomerChange
from tributary.workers.connector_changes import NormalizeError, normalized_email

__all__ = [
    "IMPORT_CHANNEL",
    "ImportEvent",
    "Listed",
    "Skip",
    "changes_digest",
    "offline_changes",
    "reason_category",
]

IMPORT_CHANNEL = "import"


class Skip(Exception):
    """An object that will not be imported, with the reason shown in the summary."""


@dataclass(frozen=True, slots=True)
class ImportEvent:
    """One synthetic event: `payload` is what the worker's `import` channel normalizes."""

    object_id: str
    type: str
    occurred_at: datetime
    payload: dict[str, Any]
    changes: tuple[CustomerChange, ...]
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """One listed object (its events, or why it is skipped) and the checkpoint cursor that is
    stored with it. `done` marks the end of a stream instead of an object."""

    stream: str
    cursor: str
    events: tuple[ImportEvent, ...] = ()
    skip: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class ConnectorEvents:
    """Builds `ImportEvent`s for one source: provider event payloads normalized by its connector."""

    connector: Connector
    source: SourceConfig
    offline: OfflineContext = field(init=False)

    def __post_init__(self) -> None:
        # Offline means offline: no email lookups through the provider's API from here.
        options = {k: v for k, v in self.source.options.items() if k not in self.connector.secret_options}
        config = SourceConfig(
            id=self.source.id, connector=self.source.connector, project=self.source.project, options=options
        )
        object.__setattr__(self, "offline", OfflineContext(config))

    def event(
        self, object_id: str, event_type: str, occurred_at: datetime, payload: Mapping[str, Any]
    ) -> ImportEvent:
        """Raises `Skip` when the connector ignores or cannot read the event."""
        envelope = Envelope(f"import_{object_id}", event_type, occurred_at, payload)
        changes = offline_changes(self.connector, envelope, self.offline)
        email = next((c.email for c in changes if c.email), None)
        return ImportEvent(
            object_id=object_id,
            type=event_type,
            occurred_at=occurred_at,
            payload={"connector": self.connector.name, "event": dict(payload)},
            changes=tuple(changes),
            email=email,
        )


def offline_changes(
    connector: Connector, envelope: Envelope, context: OfflineContext
) -> list[CustomerChange]:
    try:
        changes = connector.normalize(envelope, context)
        return [normalized_email(change, connector.name) for change in changes]
    except (EventIgnored, MalformedPayload, NormalizeError) as exc:
        raise Skip(reason_category(str(exc)) or type(exc).__name__) from None


def changes_digest(changes: tuple[CustomerChange, ...] | list[CustomerChange]) -> str:
    text = json.dumps([c.to_json() for c in changes], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# Provider ids (`cus_9s6…`, `user_29w…`), UUIDs and addresses make every reason unique; the summary
# counts reasons, so they are blanked out.
_SPECIFIC = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|\b[a-z]+_[0-9A-Za-z_]{6,}\b"
    r"|\S+@\S+"
)


def reason_category(reason: str) -> str:
    return _SPECIFIC.sub("…", reason).strip()[:200]
