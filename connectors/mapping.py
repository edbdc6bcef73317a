"""`mapping`: any app's webhooks, mapped declaratively (JMESPath) and verified by settings.

No code: a source's options say where the person's fields are in the JSON body and how requests
are authenticated. Reference and examples: docs/standard-webhooks.md ("Declarative mapping").
JMESPath: https://jmespath.org/specification.html

Field options (JMESPath expressions evaluated against the JSON body):

    email (required), name, status, params, params_once   -> the person
    event_id, event_type, occurred_at                      -> the stored event
    events        event types to apply (globs, list or comma-separated); others are ignored
    activity      whether a matching event is activity (default true, as with identify)

Verification options:

    verify             hmac-sha256 | hmac-sha1 | secret-header
    signature_header   (hmac) the header carrying the signature
    signature_encoding (hmac) hex (default) or base64
    signature_prefix   (hmac) text before the signature, e.g. `sha256=`
    signed_payload     (hmac) `body` (default) or `timestamp.body` ("<timestamp>.<body>")
    timestamp_header   (hmac, timestamp.body) Unix seconds or milliseconds, checked to ±300 s
    secret_header      (secret-header) the header carrying the secret (`Bearer <secret>` accepted)

The key is the source secret as UTF-8 text; with two secrets (rotation) either may match.
Everything is checked when the source is created (`validate_options` -> `InvalidOptions`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_errors

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
    option_flag,
)
from tributary.connectors.changes import CustomerChange
from tributary.connectors.fields import check_event_time, clean_email, load_object, parse_time
from tributary.connectors.handlers import describe_handlers
from tributary.connectors.verification import any_matches, hmac_digest, verify_shared_secret

__all__ = ["MappingConnector"]

EXPRESSIONS = ("email", "name", "status", "params", "params_once", "event_id", "event_type", "occurred_at")
VERIFY_METHODS = {"hmac-sha256": "sha256", "hmac-sha1": "sha1", "secret-header": None}
SETTINGS = (
    "verify",
    "signature_header",
    "signature_encoding",
    "signature_prefix",
    "signed_payload",
    "timestamp_header",
    "secret_header",
    "events",
    "activity",
)
HMAC_SETTINGS = (
    "signature_header",
    "signature_encoding",
    "signature_prefix",
    "signed_payload",
    "timestamp_header",
)
MAX_EXPRESSION_CHARS = 1000
STATUS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PARAM_KEY = re.compile(r"^[^\"\\\x00-\x1f\x7f]{1,128}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def _header_name(options: Mapping[str, Any], key: str) -> str:
    value = options.get(key)
    if value is None or value == "":
        raise InvalidOptions(f"{key} is required with verify={options.get('verify')}")
    if not isinstance(value, str) or not _HEADER_NAME.match(value.strip()):
        raise InvalidOptions(f"{key} must be an HTTP header name, got {value!r}")
    return value.strip()


def _expression(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOptions(f"{key} must be a JMESPath expression (text)")
    if len(value) > MAX_EXPRESSION_CHARS:
        raise InvalidOptions(f"{key} is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        compiled = jmespath.compile(value)
    except (jmespath_errors.JMESPathError, RecursionError) as exc:
        raise InvalidOptions(f"{key} is not a valid JMESPath expression: {exc}") from None
    try:
        # Unknown functions and wrong argument counts only show when evaluated.
        compiled.search({})
    except (jmespath_errors.UnknownFunctionError, jmespath_errors.ArityError) as exc:
        raise InvalidOptions(f"{key}: {exc}") from None
    except jmespath_errors.JMESPathError:
        pass  # a type error on an empty document says nothing about real payloads
    return value


def _patterns(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise InvalidOptions(
            "events must be a list of event types (globs allowed) or a comma-separated string"
        )
    patterns = [i.strip() for i in items if i.strip()]
    if not patterns:
        raise InvalidOptions("events is empty; leave it out to apply every event")
    return patterns


def _search(expression: str | None, body: Any, what: str) -> Any:
    if not expression:
        return None
    try:
        return jmespath.search(expression, body)
    except (jmespath_errors.JMESPathError, RecursionError) as exc:
        raise MalformedPayload(
            f"the {what} expression {expression!r} failed on this payload: {exc}"
        ) from None


def _object_of_params(value: Any, what: str) -> dict[str, Any]:
    """A params object from a mapping: nulls are dropped (they cannot be stored, SPEC §4) and
    keys that could not be queried later (`params.<key>=`) are refused."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedPayload(f"{what} must select a JSON object, got {type(value).__name__}")
    for key in value:
        if not PARAM_KEY.match(key):
            raise MalformedPayload(f"{what} key {key!r} must be 1-128 printable characters without quotes")
    return {key: item for key, item in value.items() if item is not None}


class MappingConnector(Connector):
    name = "mapping"
    title = "Custom app: JMESPath mapping and HMAC/secret settings, no code"

    def validate_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(EXPRESSIONS) - set(SETTINGS))
        if unknown:
            raise InvalidOptions(
                f"unknown option(s) for mapping: {', '.join(unknown)} "
                f"(known: {', '.join(EXPRESSIONS + SETTINGS)})"
            )
        if "email" not in options:
            raise InvalidOptions("email is required: a JMESPath expression selecting the person's address")
        clean: dict[str, Any] = {
            key: _expression(key, options[key]) for key in EXPRESSIONS if options.get(key) not in (None, "")
        }
        method = options.get("verify")
        if method not in VERIFY_METHODS:
            raise InvalidOptions(
                f"verify must be one of {', '.join(VERIFY_METHODS)} (unknown algorithm or method {method!r})"
            )
        clean["verify"] = method
        if method == "secret-header":
            clean["secret_header"] = _header_name(options, "secret_header")
            stray = [k for k in HMAC_SETTINGS if options.get(k) not in (None, "")]
            if stray:
                raise InvalidOptions(f"{', '.join(stray)} only apply to hmac verification")
        else:
            clean["signature_header"] = _header_name(options, "signature_header")
            encoding = options.get("signature_encoding") or "hex"
            if encoding not in ("hex", "base64"):
                raise InvalidOptions(f"signature_encoding must be hex or base64, got {encoding!r}")
            clean["signature_encoding"] = encoding
            prefix = options.get("signature_prefix") or ""
            if not isinstance(prefix, str) or len(prefix) > 32:
                raise InvalidOptions("signature_prefix must be short text such as sha256=")
            clean["signature_prefix"] = prefix
            signed = options.get("signed_payload") or "body"
            if signed not in ("body", "timestamp.body"):
                raise InvalidOptions(f"signed_payload must be body or timestamp.body, got {signed!r}")
            clean["signed_payload"] = signed
            if signed == "timestamp.body":
                clean["timestamp_header"] = _header_name(options, "timestamp_header")
            elif options.get("timestamp_header"):
                raise InvalidOptions("timestamp_header only applies with signed_payload=timestamp.body")
            if options.get("secret_header"):
                raise InvalidOptions("secret_header only applies with verify=secret-header")
        if options.get("events") is not None:
            clean["events"] = _patterns(options["events"])
        if options.get("activity") is not None:
            clean["activity"] = option_flag(options["activity"], "activity")
        return clean

    # -- web process ----------------------------------------------------------------------------

    def verify(self, request: InboundRequest, source: SourceConfig) -> None:
        options = source.options
        method = options.get("verify")
        if method == "secret-header":
            verify_shared_secret(request.headers, str(options["secret_header"]), source.secrets)
            return
        algorithm = VERIFY_METHODS.get(str(method))
        if algorithm is None:
            raise VerificationFailed("the source's verification settings are incomplete")
        self._verify_hmac(request, source, algorithm)

    def _verify_hmac(self, request: InboundRequest, source: SourceConfig, algorithm: str) -> None:
        options = source.options
        header = str(options["signature_header"])
        value = (request.headers.get(header) or "").strip()
        prefix = str(options.get("signature_prefix") or "")
        if not value:
            raise VerificationFailed(f"missing {header} header")
        if not value.startswith(prefix):
            raise VerificationFailed(f"{header} does not start with {prefix!r}")
        encoded = value[len(prefix) :].strip()
        try:
            offered = (
                bytes.fromhex(encoded)
                if options.get("signature_encoding", "hex") == "hex"
                else base64.b64decode(encoded, validate=True)
            )
        except (ValueError, binascii.Error):
            raise VerificationFailed(f"{header} is not {options.get('signature_encoding', 'hex')}") from None
        message = request.body
        if options.get("signed_payload") == "timestamp.body":
            stamp = self._timestamp(request, str(options["timestamp_header"]))
            message = stamp.encode() + b"." + request.body
        keys = [s for s in source.secrets if s]
        if not keys:
            raise VerificationFailed("the source has no secret configured")
        if not any(any_matches(hmac_digest(algorithm, key.encode(), message), [offered]) for key in keys):
            raise VerificationFailed(f"{header} does not match the source's secret")

    @staticmethod
    def _timestamp(request: InboundRequest, header: str) -> str:
        raw = (request.headers.get(header) or "").strip()
        if not raw.isdigit() or len(raw) > 16:
            raise VerificationFailed(f"{header} must carry a Unix timestamp")
        value = int(raw)
        check_timestamp(value / 1000 if value > 1e11 else value)
        return raw

    def envelopes(self, request: InboundRequest, source: SourceConfig) -> list[Envelope]:
        body = load_object(request.body)
        options = source.options
        event_id = _search(options.get("event_id"), body, "event_id")
        if options.get("event_id"):
            if not isinstance(event_id, str | int) or isinstance(event_id, bool) or str(event_id) == "":
                raise MalformedPayload(f"event_id ({options['event_id']}) selects no id in this payload")
            event_id = str(event_id)[:255]
        else:
            # No id in the payload: identical deliveries are the same event.
            event_id = "sha256:" + hashlib.sha256(request.body).hexdigest()
        event_type = _search(options.get("event_type"), body, "event_type")
        if not isinstance(event_type, str) or not event_type:
            event_type = "event" if not options.get("event_type") else "unknown"
        occurred_at = self._occurred_at(request, options, body)
        email = clean_email(_search(options.get("email"), body, "email"))
        return [Envelope(event_id, event_type[:200], occurred_at, body, email=email)]

    @staticmethod
    def _occurred_at(request: InboundRequest, options: Mapping[str, Any], body: Any) -> datetime:
        value = _search(options.get("occurred_at"), body, "occurred_at")
        if value is not None:
            return check_event_time(parse_time(value, "occurred_at"))
        header = options.get("timestamp_header")
        if header and (raw := (request.headers.get(str(header)) or "").strip()):
            return check_event_time(parse_time(raw, str(header)))
        return datetime.fromtimestamp(time.time(), UTC)

    # -- worker ---------------------------------------------------------------------------------

    def normalize(self, envelope: Envelope, context: NormalizeContext) -> list[CustomerChange]:
        options = context.source.options
        patterns = options.get("events")
        matched = not patterns or any(fnmatchcase(envelope.type, p) for p in patterns)
        return HANDLERS[MATCHED if matched else UNMATCHED](envelope, options)


# -- the mapping table ---------------------------------------------------------------------------------
# The event types are the source's to choose (its `events` option), so the table has the two
# outcomes a mapping source can have rather than provider event types.

MATCHED = "<types matching `events`>"
UNMATCHED = "<any other type>"


def _mapped(envelope: Envelope, options: Mapping[str, Any]) -> list[CustomerChange]:
    """identify-like: email, name, status, params, params_once; activity unless activity=false"""
    body = envelope.payload
    email = clean_email(_search(options.get("email"), body, "email"))
    if email is None:
        raise EventIgnored(f"no email address at {options.get('email')!r}")
    name = _search(options.get("name"), body, "name")
    name = name.strip()[:400] if isinstance(name, str) else None
    status = _search(options.get("status"), body, "status")
    if status is not None:
        status = str(status).strip().lower()
        if not STATUS.match(status):
            raise MalformedPayload(f"status {status!r} is not a slug ([a-z0-9][a-z0-9_-]*)")
    return [
        CustomerChange(
            occurred_at=envelope.occurred_at,
            email=email,
            name=name or None,
            status=status,
            params=_object_of_params(_search(options.get("params"), body, "params"), "params"),
            params_once=_object_of_params(
                _search(options.get("params_once"), body, "params_once"), "params_once"
            ),
            activity=bool(options.get("activity", True)),
        )
    ]


def _filtered_out(envelope: Envelope, options: Mapping[str, Any]) -> list[CustomerChange]:
    """stored and ignored"""
    raise EventIgnored(f"event type {envelope.type!r} is not in the source's events filter")


HANDLERS: Mapping[str, Callable[[Envelope, Mapping[str, Any]], list[CustomerChange]]] = {
    MATCHED: _mapped,
    UNMATCHED: _filtered_out,
}
MappingConnector.event_types = describe_handlers(HANDLERS)
