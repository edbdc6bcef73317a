"""Okta Event Hooks: user lifecycle, profile changes and sign-ins, in batches.

Docs: https://developer.okta.com/docs/concepts/event-hooks/ (verification handshake, delivery,
retries) and https://developer.okta.com/docs/reference/api/event-types/ (event catalogue). Okta
does not sign deliveries: the hook is registered with a header (by default `Authorization`) and a
secret value, which must match a source secret. Before the first delivery Okta sends one `GET`
carrying `X-Okta-Verification-Challenge`, answered by `challenge` with `{"verification": value}`.

A delivery carries `data.events[]`, System Log events; each becomes its own stored event,
deduplicated by its `uuid`. The subject user is the `target` of type `User` (the `actor` for
sign-ins); its `alternateId` is the login, usually the email, and `id` the Okta user id. Okta
sends no profile attributes beyond `displayName`.

Option: `header` - the header name configured on the hook (default `Authorization`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tributary.connectors.base import (
    Challenge,
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import (
    check_event_time,
    clean_email,
    full_name,
    load_object,
    parse_time,
    person_change,
    text_at,
)
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.verification import verify_shared_secret

__all__ = ["OktaConnector"]

DOCS = "https://developer.okta.com/docs/reference/api/event-types/"
CHALLENGE_HEADER = "x-okta-verification-challenge"
DEFAULT_HEADER = "authorization"
MAX_CHALLENGE_CHARS = 512

SIGNUP_STATUS = "free"
# Okta's own account state is provider-native data: it goes to a prefixed param, never to the
# project status, which belongs to billing (a deactivated Okta user may still be a paying customer).
OKTA_STATUS = {
    "user.lifecycle.activate": "active",
    "user.lifecycle.reactivate": "active",
    "user.lifecycle.unsuspend": "active",
    "user.lifecycle.deactivate": "deactivated",
    "user.lifecycle.suspend": "suspended",
}
SIGNUPS = ("user.lifecycle.create", "user.lifecycle.activate")


def _subject(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The user an event is about: its first `User` target, or the actor for sign-ins."""
    if event.get("eventType") == "user.session.start":
        actor = event.get("actor")
        return actor if isinstance(actor, Mapping) and text_at(actor, "id") else None
    targets = event.get("target")
    if isinstance(targets, list):
        for target in targets:
            if isinstance(target, Mapping) and target.get("type") == "User" and text_at(target, "id"):
                return target
    return None


def _refusal(message: str) -> Challenge:
    """A refused handshake, in the API's error shape (the GET has no other way to say 400)."""
    return Challenge(400, {"error": {"code": "invalid_verification", "message": message}})


class OktaConnector(Connector):
    name = "okta"
    title = "Okta Event Hooks (user lifecycle, profile, sign-ins)"

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - {"header"})
        if unknown:
            raise InvalidOptions(f"unknown option(s) for okta: {', '.join(unknown)} (known: header)")
        header = options.get("header", "Authorization")
        if not isinstance(header, str) or not header.strip() or any(c in header for c in " :\r\n"):
            raise InvalidOptions("header must be an HTTP header name such as Authorization")
        return {"header": header.strip()} if "header" in options else {}

    def _header(self, source: SourceConfig) -> str:
        header = source.options.get("header")
        return header if isinstance(header, str) and header else DEFAULT_HEADER

    def challenge(self, request: InboundRequest, source: SourceConfig) -> Challenge | None:
        if request.method != "GET":
            return None
        value = (request.headers.get(CHALLENGE_HEADER) or "").strip()
        if not value:
            return None  # not Okta's handshake: the endpoint answers as for any GET
        if len(value) > MAX_CHALLENGE_CHARS:
            return _refusal(f"{CHALLENGE_HEADER} is longer than {MAX_CHALLENGE_CHARS} characters")
        # Echoing the challenge reveals nothing, and Okta does not document sending the secret on
        # this GET, so it is not required; a secret that is sent must still be the right one.
        if self._header(source) in request.headers:
            try:
                verify_shared_secret(request.headers, self._header(source), source.secrets)
            except VerificationFailed as exc:
                return _refusal(str(exc))
        return Challenge(200, {"verification": value})

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        verify_shared_secret(request.headers, self._header(source), source.secrets)

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        data = body.get("data")
        events = data.get("events") if isinstance(data, Mapping) else None
        if not isinstance(events, list):
            raise MalformedPayload("an Okta event hook delivery needs data.events (a list)")
        envelopes = []
        for index, event in enumerate(events):
            if not isinstance(event, dict):
                raise MalformedPayload(f"data.events[{index}] is not an object")
            uuid, kind = text_at(event, "uuid"), text_at(event, "eventType")
            if uuid is None or kind is None:
                raise MalformedPayload(f"data.events[{index}] needs a string uuid and eventType")
            occurred_at = check_event_time(
                parse_time(event.get("published"), f"data.events[{index}].published")
            )
            subject = _subject(event)
            email = clean_email(subject.get("alternateId")) if subject else None
            envelopes.append(Envelope(uuid, kind, occurred_at, event, email=email))
        return envelopes

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        kind = envelope.type
        handler = HANDLERS.get(kind)
        if handler is None:
            raise EventIgnored(f"Okta event {kind!r} is not tracked (see {DOCS})")
        event = envelope.payload
        outcome = text_at(event, "outcome", "result")
        if outcome is not None and outcome != "SUCCESS":
            raise EventIgnored(f"outcome {outcome}: nothing happened to the user")
        subject = _subject(event)
        if subject is None:
            raise EventIgnored(f"{kind} names no user")
        return handler(envelope, subject, context)


# -- the executable mapping table: {event type: handler}, each docstring says what it does -----------


def _identity(subject: Mapping[str, Any]) -> IdentityRef:
    return IdentityRef("okta", str(subject["id"]))


def _deleted(
    envelope: Envelope, subject: Mapping[str, Any], context: NormalizeContext
) -> list[CustomerChange]:
    """the Okta user id is removed from the customer, who is kept"""
    return [
        CustomerChange(occurred_at=envelope.occurred_at, identity=_identity(subject), forget_identity=True)
    ]


def _session(
    envelope: Envelope, subject: Mapping[str, Any], context: NormalizeContext
) -> list[CustomerChange]:
    """activity (successful sign-ins only); the actor's displayName as name"""
    # The actor is the user signing in: its displayName is that user's full name.
    email = clean_email(subject.get("alternateId"))
    name = full_name(subject.get("displayName"))
    return [
        person_change(
            envelope.occurred_at, email=email, identity=_identity(subject), name=name, activity=True
        )
    ]


def _person(
    envelope: Envelope, subject: Mapping[str, Any], context: NormalizeContext
) -> list[CustomerChange]:
    """create/activate: signup (email, name; status `free` unless set; links the Okta user id);
    deactivate/suspend/unsuspend/reactivate: param `okta_status` (the Tributary status is left
    alone); update_profile: name, and a new login email is an email change (rename or merge)"""
    kind = envelope.type
    identity = _identity(subject)
    email = clean_email(subject.get("alternateId"))
    if email is None and kind in SIGNUPS and context.email_for(identity) is None:
        raise EventIgnored("the Okta login is not an email address")
    params = {"okta_status": OKTA_STATUS[kind]} if kind in OKTA_STATUS else {}
    return [
        person_change(
            envelope.occurred_at,
            email=email,
            identity=identity,
            name=full_name(subject.get("displayName")),
            status_if_absent=SIGNUP_STATUS if kind in SIGNUPS else None,
            params=params,
        )
    ]


Handler = Callable[[Envelope, Mapping[str, Any], NormalizeContext], list[CustomerChange]]

# Catalogue: https://developer.okta.com/docs/reference/api/event-types/
HANDLERS: Mapping[str, Handler] = {
    "user.lifecycle.create": _person,
    "user.lifecycle.activate": _person,
    "user.lifecycle.reactivate": _person,
    "user.lifecycle.unsuspend": _person,
    "user.lifecycle.deactivate": _person,
    "user.lifecycle.suspend": _person,
    "user.lifecycle.delete.initiated": _deleted,
    "user.account.update_profile": _person,
    "user.session.start": _session,
}
OktaConnector.event_types = describe_handlers(HANDLERS)
