"""Tributary's own vocabulary for what an event says about a person.

Connectors translate provider payloads into `CustomerChange`s; the identify/ping API produces them
directly; the worker applies them with the rules in `workers/batch/merge_rules.py`. Nothing here touches the
database or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tributary.models.base import from_micros, to_micros

__all__ = ["CustomerChange", "IdentityRef"]


@dataclass(frozen=True, slots=True)
class IdentityRef:
    """A person's id in another system: (`stripe`, `cus_9s6…`), (`clerk`, `user_29w…`).

    `source` is the connector's name, not a source (endpoint) id: ids from every source of one
    connector in an account are one namespace (stored as `identities.source`, models/customer.py).
    """

    source: str
    external_id: str


@dataclass(frozen=True, slots=True)
class CustomerChange:
    """One event's effect on one person in one project.

    `email` is the merge key; when it is absent the worker resolves the person through `identity`.
    `occurred_at` is the provider's event time and orders every write (see workers/batch/merge_rules.py).
    """

    occurred_at: datetime
    email: str | None = None
    identity: IdentityRef | None = None
    name: str | None = None
    status: str | None = None
    # A signup's status: written only while the person has no status in the project.
    status_if_absent: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    params_once: Mapping[str, Any] = field(default_factory=dict)
    params_unset: tuple[str, ...] = ()
    # Moves last_activity_at forward to occurred_at.
    activity: bool = False
    # `email` is the identity's new primary address: rename (or merge into) rather than create.
    email_change: bool = False
    # The provider deleted its user: drop the identity, keep the person.
    forget_identity: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"occurred_at": to_micros(self.occurred_at)}
        for name in ("email", "name", "status", "status_if_absent"):
            if (value := getattr(self, name)) is not None:
                data[name] = value
        if self.identity is not None:
            data["identity"] = [self.identity.source, self.identity.external_id]
        for name in ("params", "params_once"):
            if value := getattr(self, name):
                data[name] = dict(value)
        if self.params_unset:
            data["params_unset"] = list(self.params_unset)
        for name in ("activity", "email_change", "forget_identity"):
            if getattr(self, name):
                data[name] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CustomerChange:
        identity = data.get("identity")
        return cls(
            occurred_at=from_micros(int(data["occurred_at"])),
            email=data.get("email"),
            identity=IdentityRef(identity[0], identity[1]) if identity else None,
            name=data.get("name"),
            status=data.get("status"),
            status_if_absent=data.get("status_if_absent"),
            params=dict(data.get("params") or {}),
            params_once=dict(data.get("params_once") or {}),
            params_unset=tuple(data.get("params_unset") or ()),
            activity=bool(data.get("activity")),
            email_change=bool(data.get("email_change")),
            forget_identity=bool(data.get("forget_identity")),
        )
