"""Supabase: Database Webhooks on `auth.users`, and the `before-user-created` Auth Hook.

Docs: https://supabase.com/docs/guides/database/webhooks (Database Webhooks: a trigger posts
`{type, table, schema, record, old_record}` through pg_net; not signed) and
https://supabase.com/docs/guides/auth/auth-hooks (Auth Hooks: Standard Webhooks signatures, the
secret shown as `v1,whsec_…`). One source can receive both; the request tells them apart:

- with `webhook-signature`: an Auth Hook, verified with `standardwebhooks` against the source
  secrets that are hook secrets (`v1,whsec_…` or `whsec_…`, as the dashboard shows them);
- otherwise: a Database Webhook, whose trigger must send a source secret in a header (option
  `header`, default `Authorization`; `Bearer <secret>` is accepted too).

**Secrets in rows.** An `auth.users` row carries `encrypted_password` and confirmation, recovery
and email-change tokens. They never reach storage: `envelopes` keeps only the columns Tributary
reads (`ROW_COLUMNS`, an allowlist, so a column Supabase adds later is dropped too), and
`stored_body` makes the stored event's body that redacted payload (canonical JSON) instead of
the bytes received (`Connector.stored_body`, connectors/base.py). The raw body is only ever held
in memory while the request is verified. The Auth Hook payload (`user`,
`metadata`) carries no credentials, but the same allowlist applies to its `user`.

Only `before-user-created` can usefully point at Tributary: the other hooks (custom access token,
send email, …) expect an answer that changes Supabase's behaviour, which a CRM cannot give. It is a
signup *intent* (Supabase may still refuse the user); Tributary records it as a signup, and the
`INSERT` that follows confirms it. Prefer Database Webhooks where both are possible.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
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
)
from tributary.connectors.changes import CustomerChange, IdentityRef
from tributary.connectors.fields import (
    check_event_time,
    clean_email,
    full_name,
    load_object,
    mapping_at,
    parse_time,
    person_change,
    text_at,
)
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.verification import verify_shared_secret, verify_standard_webhook

__all__ = ["ROW_COLUMNS", "SupabaseConnector", "redact_row"]

DOCS = "https://supabase.com/docs/guides/database/webhooks"

NAME = "supabase"
SIGNUP_STATUS = "free"
DEFAULT_HEADER = "authorization"

# The `auth.users` columns kept from a row. Everything else, credentials first among them
# (`encrypted_password`, `confirmation_token`, `recovery_token`, `email_change_token_*`,
# `phone_change_token`, `reauthentication_token`), is dropped before anything is stored.
ROW_COLUMNS = frozenset(
    {
        "id",
        "aud",
        "role",
        "email",
        "phone",
        "created_at",
        "updated_at",
        "last_sign_in_at",
        "email_confirmed_at",
        "confirmed_at",
        "deleted_at",
        "banned_until",
        "is_anonymous",
        "is_sso_user",
        "raw_user_meta_data",
        "raw_app_meta_data",
        # The hook's `user` object names the metadata without the `raw_` prefix.
        "user_metadata",
        "app_metadata",
    }
)
# Row changes that say nothing Tributary tracks (a token refresh, a confirmation email sent).
TRACKED_COLUMNS = ("email", "raw_user_meta_data", "last_sign_in_at", "deleted_at")


def redact_row(row: Any) -> dict[str, Any] | None:
    """Keep only the allowlisted columns of a user row (None stays None)."""
    if not isinstance(row, Mapping):
        return None
    return {key: value for key, value in row.items() if key in ROW_COLUMNS}


def _name(row: Mapping[str, Any]) -> str | None:
    meta = mapping_at(row, "raw_user_meta_data") or mapping_at(row, "user_metadata")
    return (
        text_at(meta, "full_name")
        or text_at(meta, "name")
        or full_name(meta.get("first_name"), meta.get("last_name"))
    )


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


class SupabaseConnector(Connector):
    name = "supabase"
    title = "Supabase (Database Webhooks on auth.users, before-user-created Auth Hook)"
    stored_headers = ("content-type", "user-agent", "webhook-id", "webhook-timestamp")
    secret_options = frozenset({"api_key"})

    def stored_body(self, request: InboundRequest, envelope: Envelope) -> bytes:
        # See the module docstring: the bytes received may hold password hashes and tokens.
        return _canonical(envelope.payload)

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - {"header"} - API_OPTIONS)
        if unknown:
            raise InvalidOptions(
                f"unknown option(s) for supabase: {', '.join(unknown)} (known: header, api_key, api_url)"
            )
        # api_key (service role key) and api_url (project URL): only `tributary import supabase`.
        cleaned = validate_api_options(self.name, options)
        if "header" not in options:
            return cleaned
        header = options["header"]
        if not isinstance(header, str) or not header.strip() or any(c in header for c in " :\r\n"):
            raise InvalidOptions("header must be an HTTP header name such as Authorization")
        return {**cleaned, "header": header.strip()}

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        if "webhook-signature" in request.headers:
            verify_standard_webhook(request.body, request.headers, source.secrets)
            return
        header = source.options.get("header")
        verify_shared_secret(
            request.headers, header if isinstance(header, str) and header else DEFAULT_HEADER, source.secrets
        )

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        if "webhook-signature" in request.headers:
            return [self._hook_envelope(request, body)]
        return [self._row_envelope(body)]

    def _hook_envelope(self, request: InboundRequest, body: Mapping[str, Any]) -> Envelope:
        message_id = request.headers.get("webhook-id")
        user = redact_row(body.get("user"))
        metadata = mapping_at(body, "metadata")
        hook = text_at(metadata, "name")
        if not message_id or user is None or hook is None:
            raise MalformedPayload("an Auth Hook call needs webhook-id, metadata.name and a user object")
        stamp = metadata.get("time") or request.headers.get("webhook-timestamp")
        occurred_at = check_event_time(parse_time(stamp, "metadata.time"))
        payload = {
            "metadata": {k: metadata[k] for k in ("uuid", "time", "name") if k in metadata},
            "user": user,
        }
        return Envelope(
            message_id, f"hook.{hook}", occurred_at, payload, email=clean_email(user.get("email"))
        )

    def _row_envelope(self, body: Mapping[str, Any]) -> Envelope:
        operation = body.get("type")
        schema, table = body.get("schema"), body.get("table")
        if (
            operation not in ("INSERT", "UPDATE", "DELETE")
            or not isinstance(schema, str)
            or not isinstance(table, str)
        ):
            raise MalformedPayload("a Database Webhook needs type INSERT/UPDATE/DELETE, schema and table")
        record, old_record = redact_row(body.get("record")), redact_row(body.get("old_record"))
        row = (old_record if operation == "DELETE" else record) or {}
        users = (schema, table) == ("auth", "users")
        if users and not text_at(row, "id"):
            side = "old_record" if operation == "DELETE" else "record"
            raise MalformedPayload(f"an auth.users {operation} without {side}.id")
        payload = {
            "type": operation,
            "schema": schema,
            "table": table,
            "record": record,
            "old_record": old_record,
        }
        # pg_net sends no delivery id and does not retry; a digest of what is kept deduplicates
        # a trigger that fires twice for the same row state without merging distinct changes.
        event_id = "row_" + hashlib.sha256(_canonical(payload)).hexdigest()[:40]
        # Other tables are stored and ignored; their rows' columns are unknown, so receipt time.
        occurred_at = self._row_time(operation, row) if users else datetime.fromtimestamp(time.time(), UTC)
        return Envelope(
            event_id,
            f"{schema}.{table}.{operation.lower()}",
            occurred_at,
            payload,
            email=clean_email(row.get("email")),
        )

    @staticmethod
    def _row_time(operation: str, row: Mapping[str, Any]) -> datetime:
        if operation == "DELETE":
            # The row's times are from before the deletion; pg_net posts at once, so receipt is
            # the best available time of the deletion itself.
            return datetime.fromtimestamp(time.time(), UTC)
        times = (
            [row.get("updated_at"), row.get("last_sign_in_at")]
            if operation == "UPDATE"
            else [row.get("created_at")]
        )
        parsed = [parse_time(t, f"record.{operation.lower()}_at") for t in times if t is not None]
        if not parsed:
            raise MalformedPayload(f"{operation} record without created_at/updated_at")
        return check_event_time(max(parsed))

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        handler = HANDLERS.get(envelope.type)
        if handler is None:
            raise EventIgnored(f"Supabase event {envelope.type!r} is not tracked (see {DOCS})")
        return handler(envelope.payload, envelope.occurred_at)


# -- the executable mapping table: {event type: handler}, each docstring says what it does ----------
# Database Webhooks: https://supabase.com/docs/guides/database/webhooks
# Auth Hooks: https://supabase.com/docs/guides/auth/auth-hooks/before-user-created-hook


def _identity(row: Mapping[str, Any]) -> IdentityRef:
    return IdentityRef(NAME, str(row.get("id")))


def _signup(user: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    email = clean_email(user.get("email"))
    if email is None:
        raise EventIgnored("the Supabase user has no email address (phone or anonymous sign-up)")
    return [
        person_change(
            at,
            email=email,
            identity=_identity(user),
            name=_name(user),
            status_if_absent=SIGNUP_STATUS,
        )
    ]


def _inserted(payload: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """signup: email, name; status `free` unless the customer has one in the project"""
    return _signup(mapping_at(payload, "record"), at)


def _updated(payload: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """name; a new email is an email change; a new last_sign_in_at is activity; deleted_at set is
    a deletion"""
    record, old = mapping_at(payload, "record"), mapping_at(payload, "old_record")
    if old and all(record.get(c) == old.get(c) for c in TRACKED_COLUMNS):
        raise EventIgnored("no tracked column changed (email, name metadata, last_sign_in_at, deleted_at)")
    identity = _identity(record)
    if record.get("deleted_at") and not old.get("deleted_at"):
        return [CustomerChange(occurred_at=at, identity=identity, forget_identity=True)]
    signed_in = record.get("last_sign_in_at") is not None and record.get("last_sign_in_at") != old.get(
        "last_sign_in_at"
    )
    return [
        person_change(
            at,
            email=clean_email(record.get("email")),
            identity=identity,
            name=_name(record),
            activity=signed_in,
        )
    ]


def _deleted(payload: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """the Supabase user id is removed from the customer, who is kept"""
    old = mapping_at(payload, "old_record")
    return [CustomerChange(occurred_at=at, identity=_identity(old), forget_identity=True)]


def _before_user_created(payload: Mapping[str, Any], at: datetime) -> list[CustomerChange]:
    """signup (intent; the INSERT confirms it), as auth.users.insert"""
    return _signup(mapping_at(payload, "user"), at)


Handler = Callable[[Mapping[str, Any], datetime], list[CustomerChange]]

HANDLERS: Mapping[str, Handler] = {
    "auth.users.insert": _inserted,
    "auth.users.update": _updated,
    "auth.users.delete": _deleted,
    "hook.before-user-created": _before_user_created,
}
SupabaseConnector.event_types = describe_handlers(HANDLERS)
