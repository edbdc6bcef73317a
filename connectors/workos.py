"""WorkOS: AuthKit users and sessions, and Directory Sync users.

Docs: https://workos.com/docs/events/data-syncing/webhooks (delivery and manual verification),
https://workos.com/docs/events (event catalogue). The signature header is
`WorkOS-Signature: t=<milliseconds>, v1=<hex>` where the hex is HMAC-SHA256, keyed with the
endpoint secret as UTF-8 text (not base64-decoded), over `"{t}.{raw body}"`. The WorkOS SDK allows
180 s; Tributary applies SPEC §7's ±300 s to every scheme.

AuthKit user ids (`user_…`) and directory user ids (`directory_user_…`) are both identities of
source `workos`: the prefixes keep them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tributary.connectors.api_options import API_OPTIONS, validate_api_options
from tributary.connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
    VerificationFailed,
    check_timestamp,
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
from tributary.connectors.verification import any_matches, hmac_digest, keyed_signature_header

__all__ = ["WorkOSConnector", "parse_signature_header", "verify_workos_signature"]

DOCS = "https://workos.com/docs/events"

NAME = "workos"
SIGNUP_STATUS = "free"
SIGNATURE_HEADER = "workos-signature"


def parse_signature_header(value: str) -> tuple[str, list[str]]:
    """`t=<ms>, v1=<hex>[, v1=<hex>…]` -> (t, [hex…]). Spaces around commas are optional."""
    return keyed_signature_header(value, ",", "t", "v1")


def verify_workos_signature(
    body: bytes, header: str | None, secrets: tuple[str, ...] | list[str], *, now: float | None = None
) -> None:
    if not header:
        raise VerificationFailed("missing WorkOS-Signature header")
    timestamp, signatures = parse_signature_header(header)
    if not timestamp.isdigit() or len(timestamp) > 16 or not signatures:
        raise VerificationFailed("WorkOS-Signature must look like `t=<milliseconds>, v1=<hex>`")
    check_timestamp(int(timestamp) / 1000, now=now)
    keys = [s for s in secrets if s]
    if not keys:
        raise VerificationFailed("the source has no signing secret configured")
    offered: list[bytes] = []
    for signature in signatures:
        try:
            offered.append(bytes.fromhex(signature))
        except ValueError:
            continue
    message = timestamp.encode() + b"." + body
    for key in keys:
        if any_matches(hmac_digest("sha256", key.encode(), message), offered):
            return
    raise VerificationFailed("WorkOS-Signature does not match the source's secret")


def _directory_email(user: Mapping[str, Any]) -> str | None:
    """Directory users carry `emails: [{primary, type, value}]`; newer payloads also `email`."""
    emails = user.get("emails")
    if isinstance(emails, list):
        for entry in emails:
            if isinstance(entry, Mapping) and entry.get("primary") is True:
                return clean_email(entry.get("value"))
    return clean_email(user.get("email"))


class WorkOSConnector(Connector):
    name = "workos"
    title = "WorkOS (AuthKit users, sessions, sign-ins, memberships and invitations; Directory Sync users)"
    secret_options = frozenset({"api_key"})

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        # Only `tributary import workos` reads them: the API key and base URL.
        if unknown := sorted(set(options) - API_OPTIONS):
            raise InvalidOptions(
                f"unknown option(s) for workos: {', '.join(unknown)} (known: api_key, api_url)"
            )
        return validate_api_options(self.name, options)

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        verify_workos_signature(request.body, request.headers.get(SIGNATURE_HEADER), source.secrets)

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        event_id = text_at(body, "id")
        event_type = text_at(body, "event")
        data = body.get("data")
        if event_id is None or event_type is None or not isinstance(data, dict):
            raise MalformedPayload(
                "a WorkOS event needs a string `id`, a string `event` and an object `data`"
            )
        occurred_at = check_event_time(parse_time(body.get("created_at"), "created_at"))
        if event_type in _NEEDS:
            field = _NEEDS[event_type]
            if text_at(data, field) is None:
                raise MalformedPayload(f"{event_type} without data.{field}")
        email = None
        if event_type.startswith(("user.", "invitation.", "authentication.")):
            email = clean_email(data.get("email"))
        elif event_type.startswith("dsync.user."):
            email = _directory_email(data)
        return [Envelope(event_id, event_type, occurred_at, body, email=email)]

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        data = envelope.payload.get("data")
        if not isinstance(data, Mapping):
            raise MalformedPayload("the stored WorkOS event has no data object")
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"WorkOS event {envelope.type!r} is not tracked (see {DOCS})")
        return handler(envelope, data)


# -- the executable mapping table: {event type: handler}, each docstring says what it does -----------


def _user(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """created: signup (email, name; status `free` unless the customer has one in the project);
    updated: name, and a new email address is an email change (rename or merge)"""
    kind = envelope.type
    directory = kind.startswith("dsync.")
    email = _directory_email(data) if directory else clean_email(data.get("email"))
    if email is None and kind.endswith(".created"):
        raise EventIgnored("the WorkOS user has no email address")
    return [
        person_change(
            envelope.occurred_at,
            email=email,
            identity=IdentityRef(NAME, str(data["id"])),
            name=full_name(data.get("first_name"), data.get("last_name")),
            status_if_absent=SIGNUP_STATUS if kind.endswith(".created") else None,
        )
    ]


def _user_deleted(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """the WorkOS user id is removed from the customer, who is kept"""
    # Carries the whole user, but the deletion is about the WorkOS id, not the address.
    identity = IdentityRef(NAME, str(data["id"]))
    return [CustomerChange(occurred_at=envelope.occurred_at, identity=identity, forget_identity=True)]


def _session(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """activity, at the session's creation time"""
    at = envelope.occurred_at
    started = data.get("created_at")
    when = parse_time(started, "data.created_at") if started is not None else at
    # Never later than the event itself, whose time was checked against the clock.
    identity = IdentityRef(NAME, str(data["user_id"]))
    return [CustomerChange(occurred_at=min(when, at), identity=identity, activity=True)]


def _authentication(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """activity (a successful sign-in: password, OAuth, SSO, magic auth, passkey, MFA, email
    verification); the user's email when the event carries it"""
    user_id = text_at(data, "user_id")
    email = clean_email(data.get("email"))
    if user_id is None and email is None:
        raise EventIgnored("the authentication names no user")
    identity = IdentityRef(NAME, user_id) if user_id else None
    return [CustomerChange(occurred_at=envelope.occurred_at, email=email, identity=identity, activity=True)]


def _membership(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """params `organization:<org id>` = the member's role slug; removed when the membership is
    deleted"""
    org_id = text_at(data, "organization_id")
    if org_id is None:
        raise EventIgnored("the organization membership names no organization")
    key = f"organization:{org_id}"
    identity = IdentityRef(NAME, str(data["user_id"]))
    at = envelope.occurred_at
    if envelope.type == "organization_membership.deleted":
        return [CustomerChange(occurred_at=at, identity=identity, params_unset=(key,))]
    role = text_at(data, "role", "slug") or "member"
    return [CustomerChange(occurred_at=at, identity=identity, params={key: role})]


def _invitation_accepted(envelope: Envelope, data: Mapping[str, Any]) -> list[CustomerChange]:
    """signup: the invited email (status `free` unless the customer has one); the accepting user
    id linked as identity when the event names it; activity"""
    email = clean_email(data.get("email"))
    if email is None:
        raise EventIgnored("the invitation has no email address")
    user_id = text_at(data, "accepted_user_id")
    return [
        CustomerChange(
            occurred_at=envelope.occurred_at,
            email=email,
            identity=IdentityRef(NAME, user_id) if user_id else None,
            status_if_absent=SIGNUP_STATUS,
            activity=True,
        )
    ]


Handler = Callable[[Envelope, Mapping[str, Any]], list[CustomerChange]]

_AUTHENTICATIONS = ("email_verification", "magic_auth", "mfa", "oauth", "passkey", "password", "sso")
HANDLERS: Mapping[str, Handler] = {
    "user.created": _user,
    "user.updated": _user,
    "user.deleted": _user_deleted,
    "session.created": _session,
    # https://workos.com/docs/directory-sync/understanding-events
    "dsync.user.created": _user,
    "dsync.user.updated": _user,
    "dsync.user.deleted": _user_deleted,
    "organization_membership.created": _membership,
    "organization_membership.updated": _membership,
    "organization_membership.deleted": _membership,
    "invitation.accepted": _invitation_accepted,
    **{f"authentication.{kind}_succeeded": _authentication for kind in _AUTHENTICATIONS},
}
# Fields an event must carry to be stored (checked in the web process).
_NEEDS: Mapping[str, str] = {
    **{kind: "id" for kind in HANDLERS if kind.startswith(("user.", "dsync.user."))},
    "session.created": "user_id",
    **{kind: "user_id" for kind in HANDLERS if kind.startswith("organization_membership.")},
}
WorkOSConnector.event_types = describe_handlers(HANDLERS)
