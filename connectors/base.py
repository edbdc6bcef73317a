"""The connector contract.

A connector owns one provider's webhook dialect. In the web process it `verify`s a raw request
(bytes and headers only, no network, constant-time comparisons) and splits it into `Envelope`s;
each envelope is stored as an event before the provider gets its 2xx. In the worker, `normalize`
turns one stored envelope into `CustomerChange`s in Tributary's vocabulary.

Nothing here imports Flask: a connector sees an `InboundRequest`, so it can be exercised offline
(`tributary connectors test`) and by the public test kit (`tributary.connectors.testkit`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from tributary.connectors.changes import CustomerChange, IdentityRef

__all__ = [
    "TIMESTAMP_TOLERANCE_SECONDS",
    "Challenge",
    "Connector",
    "Envelope",
    "EventIgnored",
    "Headers",
    "InboundRequest",
    "InvalidOptions",
    "MalformedPayload",
    "NormalizeContext",
    "OfflineContext",
    "SourceConfig",
    "VerificationFailed",
    "check_timestamp",
    "option_flag",
]

# SPEC §7: a signed timestamp is accepted within this many seconds of now, past or future.
TIMESTAMP_TOLERANCE_SECONDS = 300


class VerificationFailed(Exception):
    """Missing or wrong signature/secret, or a timestamp outside the tolerance: HTTP 400."""


def check_timestamp(
    timestamp: float, *, now: float | None = None, tolerance: float = TIMESTAMP_TOLERANCE_SECONDS
) -> None:
    """Reject a signed timestamp (Unix seconds) more than `tolerance` seconds from now, either way.

    Old timestamps are replays; future ones would let a captured request be replayed later, and
    several provider libraries (stripe's among them) only check the past.
    """
    skew = timestamp - (time.time() if now is None else now)
    if skew < -tolerance:
        raise VerificationFailed(f"the signed timestamp is {int(-skew)} s old (tolerance {int(tolerance)} s)")
    if skew > tolerance:
        raise VerificationFailed(
            f"the signed timestamp is {int(skew)} s in the future (tolerance {int(tolerance)} s)"
        )


class MalformedPayload(Exception):
    """The body cannot be parsed into envelopes: HTTP 400."""


class InvalidOptions(ValueError):
    """A source's options are not acceptable to its connector; raised when the source is created."""


_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def option_flag(value: Any, name: str) -> bool:
    """A yes/no source option: a JSON boolean, or a word as the CLI's `--option k=v` gives it."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE | _FALSE:
        return word in _TRUE
    raise InvalidOptions(f"{name} must be true or false, got {value!r}")


class EventIgnored(Exception):
    """A valid event that says nothing Tributary tracks: stored and marked `ignored` with the
    message as the reason, never a failure."""


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only request headers."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """What a connector may look at: never a framework request object."""

    body: bytes
    headers: Headers = field(default_factory=Headers)
    method: str = "POST"
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """A configured endpoint as a connector sees it. `secrets` holds one or two active secrets
    (rotation): verification passes if either matches."""

    id: str
    connector: str
    project: str
    secrets: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One provider event inside a delivery. `event_id` deduplicates redeliveries (unique per
    source, no time window); `occurred_at` is the provider's event time."""

    event_id: str
    type: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    # When the web process can see it for free: lets ops filter events by email before the worker runs.
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """A handshake answered directly (Okta's verification GET), not stored as an event."""

    status: int
    body: Mapping[str, Any]


class NormalizeContext(Protocol):
    """What `normalize` may use in the worker besides the envelope."""

    @property
    def source(self) -> SourceConfig: ...

    def email_for(self, identity: IdentityRef) -> str | None:
        """The email of the customer this identity is linked to, if any."""


@dataclass(frozen=True, slots=True)
class OfflineContext:
    """A `NormalizeContext` without a database: identities resolve only through `emails`
    (empty: every lookup answers "unknown"). Used by `tributary connectors test` and tests."""

    source: SourceConfig
    emails: Mapping[IdentityRef, str] = field(default_factory=dict)

    def email_for(self, identity: IdentityRef) -> str | None:
        return self.emails.get(identity)


class Connector:
    """Base class for connectors. Subclasses set `name` and implement `verify`, `envelopes` and
    `normalize`; `validate_options` and `challenge` have safe defaults."""

    name: ClassVar[str]
    # One line for `tributary connectors list` and the docs.
    title: ClassVar[str] = ""
    # Provider event type -> what Tributary does with it (documentation and tests; see anymail).
    event_types: ClassVar[Mapping[str, str]] = {}
    # Request headers worth keeping on the stored event (signatures are not among them).
    stored_headers: ClassVar[tuple[str, ...]] = ("content-type", "user-agent")
    # Option names whose values are credentials (an API key): masked whenever a source is shown.
    secret_options: ClassVar[frozenset[str]] = frozenset()

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check and normalize a source's options; raise `InvalidOptions` with the reason."""
        if options:
            raise InvalidOptions(f"the {self.name} connector takes no options (got {sorted(options)})")
        return {}

    def challenge(self, request: InboundRequest, source: SourceConfig) -> Challenge | None:
        """Answer a provider handshake, or return None for an ordinary delivery."""
        return None

    def stored_body(self, request: InboundRequest, envelope: Envelope) -> bytes:
        """The bytes kept as the stored event's body for `envelope`. By default the delivery
        exactly as received, so audits and replays see what the provider sent. A connector whose
        deliveries can carry credentials (Supabase's `auth.users` rows hold password hashes and
        tokens) returns a redacted form instead; it is never re-verified, only re-normalized."""
        return request.body

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        raise NotImplementedError

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        raise NotImplementedError

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        raise NotImplementedError
