"""Auth0 Log Streams ("Custom Webhook"): tenant log events in batches.

Docs: https://auth0.com/docs/customize/log-streams/custom-log-streams (delivery, formats, the
optional Authorization token) and https://auth0.com/docs/deploy-monitor/logs/log-event-type-codes
(type codes; per-type schemas in github.com/auth0/auth0-log-schemas). Nothing is signed: the
stream sends the configured "Authorization Token" verbatim as the `Authorization` header, which
must match a source secret.

A delivery is a JSON array, JSON lines or a single JSON object, depending on the stream's content
format, so it is parsed defensively. Each record (`{"log_id", "data": {…}}`, or the bare log event)
becomes its own stored event, deduplicated by `log_id`. Log events carry no names; emails come
from `user_name` (which may also be a phone number or a username, then ignored).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from tributary.connectors.base import (
    Connector,
    Envelope,
    EventIgnored,
    InboundRequest,
    MalformedPayload,
    NormalizeContext,
    SourceConfig,
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import (
    check_event_time,
    clean_email,
    full_name,
    load_json,
    mapping_at,
    parse_time,
    person_change,
    text_at,
)
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.verification import verify_shared_secret

__all__ = ["Auth0Connector", "split_records"]

DOCS = "https://auth0.com/docs/deploy-monitor/logs/log-event-type-codes"

NAME = "auth0"
SIGNUP_STATUS = "free"
MAX_RECORDS = 1000
_USER_PATH = re.compile(r"^/api/v2/users/([^/?#]+)$")


def split_records(body: bytes) -> list[Any]:
    """A JSON array, one JSON object, or JSON lines (one object per non-empty line)."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MalformedPayload("the body is not UTF-8 text") from None
    if not text:
        raise MalformedPayload("the body is empty")
    if text.startswith("["):
        records = load_json(body)
        if not isinstance(records, list):
            raise MalformedPayload("expected a JSON array of log records")
        return records
    try:
        return [load_json(text)]
    except MalformedPayload:
        pass  # more than one line: JSON lines
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(load_json(line))
        except MalformedPayload as exc:
            raise MalformedPayload(f"line {number}: {exc}") from None
    return records


def _log_of(record: Any, index: int) -> tuple[str, dict[str, Any]]:
    """(log_id, log event) from a stream record, wrapped (`{"log_id", "data"}`) or bare."""
    if not isinstance(record, dict):
        raise MalformedPayload(f"record {index} is not a JSON object")
    data = record.get("data")
    log = data if isinstance(data, dict) and "type" in data else record
    log_id = text_at(record, "log_id") or text_at(log, "log_id") or text_at(log, "_id")
    if log_id is None or text_at(log, "type") is None:
        raise MalformedPayload(f"record {index} has no log_id or no type")
    return log_id, log


def _user_id(log: Mapping[str, Any], *candidates: str | None) -> str | None:
    """The Auth0 user id, with its connection prefix (`auth0|…`). Some signup logs carry the bare
    database id; the strategy (`auth0`) is the prefix the other logs for that user use."""
    for candidate in candidates:
        if candidate:
            if "|" not in candidate and (strategy := text_at(log, "strategy")):
                return f"{strategy}|{candidate}"
            return candidate
    return None


class Auth0Connector(Connector):
    name = "auth0"
    title = "Auth0 Log Streams (signups, logins, email changes, deletions)"

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        verify_shared_secret(request.headers, "authorization", source.secrets)

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        records = split_records(request.body)
        if not records:
            raise MalformedPayload("the delivery holds no log records")
        if len(records) > MAX_RECORDS:
            raise MalformedPayload(f"more than {MAX_RECORDS} log records in one delivery")
        envelopes = []
        for index, record in enumerate(records):
            log_id, log = _log_of(record, index)
            occurred_at = check_event_time(parse_time(log.get("date"), f"record {index} date"))
            # A Management API log's user_name is the admin who called it, not the person.
            email = None if log["type"] == "sapi" else clean_email(log.get("user_name"))
            envelopes.append(Envelope(log_id, str(log["type"]), occurred_at, log, email=email))
        return envelopes

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"Auth0 log type {envelope.type!r} is not tracked (see {DOCS})")
        return handler(envelope.payload, envelope.occurred_at)


# -- the executable mapping table: {log type code: handler}, each docstring says what it does -------


def _identity(log: Mapping[str, Any], *candidates: str | None) -> IdentityRef | None:
    user_id = _user_id(log, *candidates)
    return IdentityRef(NAME, user_id) if user_id else None


def _signup(log: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """successful signup: email; status `free` unless the customer has one in the project"""
    body = mapping_at(log, "details", "body")
    email = clean_email(body.get("email")) or clean_email(log.get("user_name"))
    if email is None:
        raise EventIgnored("the signup carries no email address")
    identity = _identity(log, text_at(log, "user_id"))
    return [person_change(at, email=email, identity=identity, status_if_absent=SIGNUP_STATUS)]


def _login(log: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """successful login (`s`) or silent authentication (`ssa`): activity"""
    identity = _identity(log, text_at(log, "user_id"))
    email = clean_email(log.get("user_name"))
    if identity is None and email is None:
        raise EventIgnored("the login names no user")
    return [person_change(at, email=email, identity=identity, activity=True)]


def _email_changed(log: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """successful change email: the new address is an email change (rename or merge)"""
    body = mapping_at(log, "details", "body")
    identity = _identity(log, text_at(body, "user_id"), text_at(log, "user_id"))
    email = clean_email(body.get("newEmail"))
    if identity is None or email is None:
        raise EventIgnored("the email change names no user id or no new address")
    return [person_change(at, email=email, identity=identity)]


def _deleted(log: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """successful user deletion (`sdu`) or deleted user (`du`): the Auth0 user id is removed from
    the customer, who is kept"""
    body = mapping_at(log, "details", "body")
    identity = _identity(log, text_at(log, "user_id"), text_at(body, "user_id"))
    if identity is None:
        raise EventIgnored("the deletion names no user id")
    return [CustomerChange(occurred_at=at, identity=identity, forget_identity=True)]


def _management_api(log: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """Management API PATCH/PUT /api/v2/users/{id}: name and email; DELETE: like sdu"""
    # Only user updates and deletions say something about a person.
    request = mapping_at(log, "details", "request")
    method = str(request.get("method") or "").lower()
    match = _USER_PATH.match(str(request.get("path") or ""))
    if match is None or method not in ("patch", "put", "delete"):
        raise EventIgnored("a Management API call that does not update or delete a user")
    identity = IdentityRef(NAME, unquote(match.group(1)))
    if method == "delete":
        return [CustomerChange(occurred_at=at, identity=identity, forget_identity=True)]
    # The response is the updated user; the request body is what was asked (may be partial).
    user = mapping_at(log, "details", "response", "body") or mapping_at(request, "body")
    email = clean_email(user.get("email"))
    name = text_at(user, "name") or full_name(user.get("given_name"), user.get("family_name"))
    if email is None and name is None:
        raise EventIgnored("the user update changes neither the email nor the name")
    return [person_change(at, email=email, identity=identity, name=name)]


Handler = Callable[[Mapping[str, Any], datetime], list[CustomerChange]]

# Codes: https://auth0.com/docs/deploy-monitor/logs/log-event-type-codes
HANDLERS: Mapping[str, Handler] = {
    "ss": _signup,
    "s": _login,
    "ssa": _login,
    "sce": _email_changed,
    "sapi": _management_api,
    "sdu": _deleted,
    "du": _deleted,
}
Auth0Connector.event_types = describe_handlers(HANDLERS)
