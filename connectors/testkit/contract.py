"""The connector contract suite: the tests every connector passes, and what a connector author
supplies to run it (a `WebhookCase`).

Part of the public connector test kit (`tributary.connectors.testkit`). The suite posts real signed
deliveries to `POST /webhooks/<source id>` and runs the real worker through a `Harness`, a
protocol: Tributary's app layer provides one (`tributary.app.testing.AppHarness`) as the pytest fixture
`tributary_harness`, so nothing here imports the app or the workers. Tributary's own tests
provide it on their database (tests/connectors/conftest.py); a third-party package gets an
embedded one by adding `pytest_plugins = ["tributary.app.testing"]` to its `conftest.py`.

This module needs pytest (it is a test kit); connectors never import it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import pytest

from tributary.connectors.base import (
    TIMESTAMP_TOLERANCE_SECONDS,
    Connector,
    EventIgnored,
    Headers,
    InboundRequest,
    MalformedPayload,
    OfflineContext,
    SourceConfig,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import registry
from tributary.connectors.testkit.signers import _now

__all__ = ["ConnectorContract", "Harness", "StoredEvent", "WebhookCase", "registered"]


# -- what a connector author supplies ------------------------------------------------------------------


class WebhookCase:
    """One connector's deliveries, for the contract suite. Subclass and fill in the blanks."""

    # The registered connector name.
    connector: ClassVar[str]
    # A valid secret in the connector's format, and a second, different one.
    secret: ClassVar[str]
    other_secret: ClassVar[str]
    # Source options the deliveries below need (validated by the connector like any source's).
    options: ClassVar[Mapping[str, Any]] = {}
    # False for schemes without a signed timestamp (a static shared secret): skips the window tests.
    signed_timestamps: ClassVar[bool] = True
    # False when the signature does not cover the body (a static shared secret): skips tampering.
    signs_body: ClassVar[bool] = True
    # What the worker leaves the valid delivery's events as.
    expected_status: ClassVar[str] = "processed"
    content_type: ClassVar[str] = "application/json"

    def body(self, *, event_id: str, timestamp: int) -> bytes:
        """A delivery of one tracked event, with an email, whose provider event id is `event_id`
        (ignored if the scheme carries the id in a header) and whose time is `timestamp`."""
        raise NotImplementedError

    def unknown_type_body(self, *, event_id: str, timestamp: int) -> bytes:
        """A well-formed delivery of an event type the connector does not track."""
        raise NotImplementedError

    def sign(self, body: bytes, *, secret: str, event_id: str, timestamp: int) -> dict[str, str]:
        """The authentication headers for `body` (timestamp in Unix seconds)."""
        raise NotImplementedError

    def malformed_bodies(self) -> Sequence[bytes]:
        """Bodies that must be refused with 400 even when correctly signed."""
        return [b"", b"not json", b'{"unterminated": ', b"[]", b"null", b'"text"', b"{}", b"\xff\xfe\x00"]

    def new_event_id(self) -> str:
        return f"evt_{secrets.token_hex(12)}"

    def request(
        self, body: bytes, *, event_id: str, timestamp: int | None = None, secret: str | None = None
    ) -> InboundRequest:
        t = _now() if timestamp is None else timestamp
        headers = {"Content-Type": self.content_type}
        headers.update(self.sign(body, secret=secret or self.secret, event_id=event_id, timestamp=t))
        return InboundRequest(body=body, headers=Headers(headers))

    def delivery(
        self, *, event_id: str | None = None, timestamp: int | None = None, secret: str | None = None
    ) -> InboundRequest:
        """A signed delivery of `body()`."""
        event_id = event_id or self.new_event_id()
        t = _now() if timestamp is None else timestamp
        return self.request(
            self.body(event_id=event_id, timestamp=t), event_id=event_id, timestamp=t, secret=secret
        )

    def unknown_type_delivery(self) -> InboundRequest:
        event_id, t = self.new_event_id(), _now()
        return self.request(
            self.unknown_type_body(event_id=event_id, timestamp=t), event_id=event_id, timestamp=t
        )

    def source_config(self, secrets: Sequence[str] | None = None) -> SourceConfig:
        connector = registry().get(self.connector)
        return SourceConfig(
            id="src_contract",
            connector=self.connector,
            project="default",
            secrets=(self.secret,) if secrets is None else tuple(secrets),
            options=connector.validate_options(dict(self.options)),
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: str
    provider_event_id: str | None
    type: str
    status: str
    last_error: str | None
    # customer_changes rows the event produced: its effect on customer records.
    effects: int


class Harness(Protocol):
    def create_source(
        self, connector: str, *, secrets: Sequence[str] = (), options: Mapping[str, Any] | None = None
    ) -> str: ...

    def post(self, source_id: str, request: InboundRequest) -> tuple[int, Any]: ...

    def drain(self) -> None: ...

    def events(self, source_id: str) -> list[StoredEvent]: ...


@contextmanager
def registered(cls: type[Connector]) -> Iterator[Connector]:
    """Register a connector class in the process registry for the duration of a block."""
    target = registry()
    registration = target.register(cls, origin="manual")
    if registration is None:
        raise RuntimeError(f"connector {cls.name!r} is disabled in this process")
    try:
        yield registration.connector
    finally:
        target.unregister(cls.name)


# -- the contract --------------------------------------------------------------------------------------


class ConnectorContract:
    """The tests every connector passes. Subclass with `case = YourCase()`."""

    case: ClassVar[WebhookCase]
    # Threads posting the same delivery at once in the concurrency test.
    concurrent_posts: ClassVar[int] = 6

    def _source(self, harness: Harness, secrets: Sequence[str] | None = None) -> str:
        chosen = [self.case.secret] if secrets is None else list(secrets)
        return harness.create_source(self.case.connector, secrets=chosen, options=self.case.options)

    def _rejected(self, harness: Harness, source_id: str, request: InboundRequest, why: str) -> None:
        status, body = harness.post(source_id, request)
        assert status == 400, f"{why}: expected 400, got {status} {body}"
        assert isinstance(body, dict) and body.get("error", {}).get("message"), (
            f"{why}: no error message: {body}"
        )
        assert harness.events(source_id) == [], f"{why}: the rejected delivery was stored"

    # -- offline: the connector alone ----------------------------------------------------------------

    def test_connector_is_registered_and_accepts_the_case_options(self) -> None:
        connector = registry().get(self.case.connector)
        assert connector.name == self.case.connector
        cleaned = connector.validate_options(dict(self.case.options))
        assert connector.validate_options(cleaned) == cleaned, "validate_options must be idempotent"

    def test_envelopes_are_deterministic_and_well_formed(self) -> None:
        connector = registry().get(self.case.connector)
        source = self.case.source_config()
        request = self.case.delivery()
        connector.verify(request, source)
        first, second = connector.envelopes(request, source), connector.envelopes(request, source)
        assert first, "a valid delivery yields at least one envelope"
        assert [e.event_id for e in first] == [e.event_id for e in second], "event ids must not be random"
        for envelope in first:
            assert envelope.event_id and len(envelope.event_id) <= 255
            assert envelope.type and envelope.occurred_at.tzinfo is not None
            changes = connector.normalize(envelope, OfflineContext(source))
            assert all(isinstance(c, CustomerChange) and c.occurred_at.tzinfo for c in changes)

    def test_unknown_type_normalizes_to_event_ignored(self) -> None:
        connector = registry().get(self.case.connector)
        source = self.case.source_config()
        request = self.case.unknown_type_delivery()
        connector.verify(request, source)
        for envelope in connector.envelopes(request, source):
            with pytest.raises(EventIgnored) as caught:
                connector.normalize(envelope, OfflineContext(source))
            assert str(caught.value), "EventIgnored must say why"

    def test_verify_raises_only_verification_failed_or_malformed(self) -> None:
        connector = registry().get(self.case.connector)
        source = self.case.source_config()
        bodies = [b"", b"\xff", b"{}", b"x" * 1000]
        header_sets: list[dict[str, str]] = [{}, *({k: "garbage"} for k in self._signature_header_names())]
        for body in bodies:
            for headers in header_sets:
                with pytest.raises((VerificationFailed, MalformedPayload)):
                    connector.verify(InboundRequest(body=body, headers=Headers(headers)), source)

    def _signed_at(self, signed_at: int) -> InboundRequest:
        """A delivery whose events happened now but whose signature carries `signed_at`: the
        connector's own timestamp check must catch it (the endpoint's event-time check cannot)."""
        event_id = self.case.new_event_id()
        body = self.case.body(event_id=event_id, timestamp=_now())
        return self.case.request(body, event_id=event_id, timestamp=signed_at)

    def _signature_header_names(self) -> list[str]:
        event_id = self.case.new_event_id()
        return list(self.case.sign(b"{}", secret=self.case.secret, event_id=event_id, timestamp=_now()))

    # -- through the webhook endpoint and the worker ----------------------------------------------

    def test_valid_delivery_is_stored_then_applied(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        status, body = tributary_harness.post(source_id, self.case.delivery())
        assert status == 200, body
        assert body["received"] >= 1 and body["duplicates"] == 0, body
        stored = tributary_harness.events(source_id)
        assert len(stored) == body["received"] and {e.status for e in stored} == {"pending"}
        tributary_harness.drain()
        applied = tributary_harness.events(source_id)
        assert {e.status for e in applied} == {self.case.expected_status}, applied
        if self.case.expected_status == "processed":
            assert all(e.effects >= 1 for e in applied), applied

    def test_missing_signature_is_rejected(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        signed = self.case.delivery()
        names = {name.lower() for name in self._signature_header_names()}
        bare = {k: v for k, v in signed.headers.items() if k.lower() not in names}
        self._rejected(
            tributary_harness,
            source_id,
            InboundRequest(body=signed.body, headers=Headers(bare)),
            "no signature",
        )

    def test_wrong_secret_is_rejected(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        request = self.case.delivery(secret=self.case.other_secret)
        self._rejected(tributary_harness, source_id, request, "signed with another secret")

    def test_tampered_body_is_rejected(self, tributary_harness: Harness) -> None:
        if not self.case.signs_body:
            pytest.skip("the scheme does not sign the body")
        source_id = self._source(tributary_harness)
        signed = self.case.delivery()
        tampered = InboundRequest(body=signed.body + b" ", headers=signed.headers)
        self._rejected(tributary_harness, source_id, tampered, "body changed after signing")

    def test_a_source_without_secrets_rejects_everything(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness, secrets=[])
        self._rejected(tributary_harness, source_id, self.case.delivery(), "source has no secret")

    def test_either_of_two_active_secrets_verifies(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness, secrets=[self.case.other_secret, self.case.secret])
        for secret in (self.case.secret, self.case.other_secret):
            status, body = tributary_harness.post(source_id, self.case.delivery(secret=secret))
            assert status == 200, (secret, body)

    def test_stale_timestamp_is_rejected(self, tributary_harness: Harness) -> None:
        if not self.case.signed_timestamps:
            pytest.skip("the scheme has no signed timestamp")
        source_id = self._source(tributary_harness)
        stale = self._signed_at(_now() - TIMESTAMP_TOLERANCE_SECONDS - 60)
        self._rejected(tributary_harness, source_id, stale, "signed 6 minutes ago")

    def test_future_timestamp_is_rejected(self, tributary_harness: Harness) -> None:
        if not self.case.signed_timestamps:
            pytest.skip("the scheme has no signed timestamp")
        source_id = self._source(tributary_harness)
        future = self._signed_at(_now() + TIMESTAMP_TOLERANCE_SECONDS + 60)
        self._rejected(tributary_harness, source_id, future, "signed 6 minutes ahead")

    def test_timestamps_inside_the_window_are_accepted(self, tributary_harness: Harness) -> None:
        if not self.case.signed_timestamps:
            pytest.skip("the scheme has no signed timestamp")
        source_id = self._source(tributary_harness)
        for skew in (-(TIMESTAMP_TOLERANCE_SECONDS - 60), TIMESTAMP_TOLERANCE_SECONDS - 60):
            status, body = tributary_harness.post(source_id, self._signed_at(_now() + skew))
            assert status == 200, (skew, body)

    def test_duplicate_delivery_has_one_effect(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        delivery = self.case.delivery()
        status, first = tributary_harness.post(source_id, delivery)
        assert status == 200 and first["received"] >= 1, first
        tributary_harness.drain()
        effects = sorted(e.effects for e in tributary_harness.events(source_id))
        status, again = tributary_harness.post(source_id, delivery)
        assert status == 200 and again == {"received": 0, "duplicates": first["received"]}, again
        tributary_harness.drain()
        after = tributary_harness.events(source_id)
        assert len(after) == first["received"]
        assert sorted(e.effects for e in after) == effects, "a redelivery changed customer records"

    def test_concurrent_duplicates_store_one_event(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        delivery = self.case.delivery()
        barrier = threading.Barrier(self.concurrent_posts)
        results: list[tuple[int, Any]] = []
        lock = threading.Lock()

        def post() -> None:
            barrier.wait()
            outcome = tributary_harness.post(source_id, delivery)
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=post) for _ in range(self.concurrent_posts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [status for status, _ in results] == [200] * self.concurrent_posts, results
        stored = tributary_harness.events(source_id)
        assert sum(body["received"] for _, body in results) == len(stored) >= 1, results
        assert len({e.provider_event_id for e in stored}) == len(stored)

    def test_unknown_type_is_stored_and_ignored(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        status, body = tributary_harness.post(source_id, self.case.unknown_type_delivery())
        assert status == 200 and body["received"] >= 1, body
        tributary_harness.drain()
        events = tributary_harness.events(source_id)
        assert events and all(e.status == "ignored" and e.last_error for e in events), events
        assert all(e.effects == 0 for e in events)

    def test_malformed_bodies_are_rejected(self, tributary_harness: Harness) -> None:
        source_id = self._source(tributary_harness)
        for raw in self.case.malformed_bodies():
            event_id = self.case.new_event_id()
            request = self.case.request(raw, event_id=event_id)
            self._rejected(tributary_harness, source_id, request, f"malformed body {raw[:40]!r}")
