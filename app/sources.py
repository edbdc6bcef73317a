"""Sources: configured inbound webhook endpoints (connector + project + secrets + options).

The operations the admin API and the CLI share, the JSON shape both print, and the short-lived
cache the webhook route reads sources through. Secrets are stored as records with their own ids
so rotation is "add the new one, then remove the old one by id"; they are never shown again,
only a masked hint.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tributary.app.domain_errors import Conflict, Invalid, NotFound
from tributary.connectors.base import Connector, InvalidOptions, SourceConfig
from tributary.connectors.registry import UnknownConnector, registry
from tributary.connectors.safe_json import bad_text
from tributary.models import Project, Source
from tributary.models.base import isoformat, random_token, utcnow
from tributary.runtime.process import Runtime

__all__ = [
    "MAX_SECRETS",
    "ResolvedSource",
    "SourceCache",
    "add_secret",
    "create_source",
    "delete_source",
    "find_source",
    "list_sources",
    "mask_secret",
    "parse_option_pairs",
    "remove_secret",
    "source_json",
    "source_url",
]

# Two active secrets: the old and the new one while a provider's signing secret is rotated.
MAX_SECRETS = 2
MAX_SECRET_CHARS = 1024
MAX_OPTIONS_BYTES = 16 * 1024
SOURCE_ID = re.compile(r"^src_[0-9A-Za-z]{24}$")


def mask_secret(value: str) -> str:
    """A hint to recognise a secret by, revealing at most its last four characters (and a
    non-secret scheme prefix such as `whsec_`)."""
    if len(value) < 12:
        return "…"
    head, sep, _ = value.partition("_")
    prefix = head + sep if sep and len(head) <= 8 else ""
    return f"{prefix}…{value[-4:]}"


# Documentation placeholders pasted as if they were secrets (`whsec_…`, `<secret>`, `whsec_xxxx`):
# accepted, they would make every delivery fail verification with no hint why.
_PLACEHOLDER = re.compile(r"…|\.\.\.|[<>{}]|^(?:[a-z]+_)?(?:x+|\*+|changeme|placeholder|secret)$", re.I)


def _clean_secret(secret: str) -> str:
    # Secrets are pasted from dashboards: surrounding whitespace is never part of them.
    value = secret.strip()
    if not value:
        raise Invalid("invalid_secret", "a secret cannot be empty")
    if _PLACEHOLDER.search(value):
        raise Invalid(
            "invalid_secret",
            "this looks like a placeholder, not a secret: paste the signing secret from the provider's "
            "dashboard",
        )
    if len(value) > MAX_SECRET_CHARS:
        raise Invalid("invalid_secret", f"a secret is at most {MAX_SECRET_CHARS} characters")
    return value


def _secret_record(value: str) -> dict[str, str]:
    return {"id": f"sec_{random_token(12)}", "value": value, "created_at": isoformat(utcnow()) or ""}


def _connector(name: str) -> Connector:
    try:
        return registry().get(name)
    except UnknownConnector as exc:
        raise Invalid("unknown_connector", str(exc)) from None


def parse_option_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """`k=v` strings (the CLI's `--option`) to a mapping; the connector interprets the values."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise Invalid("invalid_options", f"options are written key=value, got {pair!r}")
        options[key.strip()] = value
    return options


def _validated_options(connector: Connector, options: Mapping[str, Any]) -> dict[str, Any]:
    try:
        cleaned = connector.validate_options(dict(options))
    except InvalidOptions as exc:
        raise Invalid("invalid_options", str(exc) or "the options are invalid") from None
    if len(json.dumps(cleaned, default=str)) > MAX_OPTIONS_BYTES:
        raise Invalid("invalid_options", f"options are limited to {MAX_OPTIONS_BYTES} bytes of JSON")
    return dict(cleaned)


def create_source(
    session: Session,
    account_id: str,
    *,
    connector: str,
    project: Project,
    secrets: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    name: str = "",
) -> Source:
    """Create a source after its connector has accepted the options. Secrets may be added later:
    most providers show the signing secret only once the endpoint URL is registered with them."""
    impl = _connector(connector)
    values = [_clean_secret(s) for s in secrets]
    if len(values) > MAX_SECRETS:
        raise Invalid("too_many_secrets", f"a source holds at most {MAX_SECRETS} secrets")
    if len(set(values)) != len(values):
        raise Invalid("invalid_secret", "the same secret is given twice")
    source = Source(
        account_id=account_id,
        project_id=project.id,
        connector=connector,
        name=name,
        secrets=[_secret_record(v) for v in values],
        options=_validated_options(impl, options or {}),
    )
    session.add(source)
    session.flush()
    return source


def find_source(session: Session, account_id: str, source_id: str, project_id: str | None = None) -> Source:
    """An active source of the account (and of `project_id`, for project-bound keys), else 404."""
    stmt = select(Source).where(
        Source.id == source_id, Source.account_id == account_id, Source.deleted_at.is_(None)
    )
    if project_id is not None:
        stmt = stmt.where(Source.project_id == project_id)
    # An id with NUL names no source, and PostgreSQL would refuse to even compare it.
    source = None if bad_text(source_id) else session.scalar(stmt)
    if source is None:
        raise NotFound("source_not_found", f"no source with id {source_id!r}")
    return source


def list_sources(session: Session, account_id: str, project_id: str | None = None) -> list[Source]:
    stmt = select(Source).where(Source.account_id == account_id, Source.deleted_at.is_(None))
    if project_id is not None:
        stmt = stmt.where(Source.project_id == project_id)
    return list(session.scalars(stmt.order_by(Source.created_at, Source.id)))


def delete_source(session: Session, source: Source) -> Source:
    """Stop accepting deliveries (404 from now on). The row stays, without its secrets, so events
    already stored keep their source and the worker can still read its options."""
    source.deleted_at = utcnow()
    source.secrets = []
    return source


def add_secret(session: Session, source: Source, secret: str) -> dict[str, str]:
    value = _clean_secret(secret)
    current = list(source.secrets)
    if any(record["value"] == value for record in current):
        raise Conflict("secret_exists", "this secret is already active on the source")
    if len(current) >= MAX_SECRETS:
        raise Conflict(
            "too_many_secrets",
            f"a source holds at most {MAX_SECRETS} secrets; remove the old one first",
            details={"secrets": [_secret_json(r) for r in current]},
        )
    record = _secret_record(value)
    source.secrets = [*current, record]
    return record


def remove_secret(session: Session, source: Source, secret_id: str) -> None:
    current = list(source.secrets)
    remaining = [r for r in current if r["id"] != secret_id]
    if len(remaining) == len(current):
        raise NotFound("secret_not_found", f"the source has no secret with id {secret_id!r}")
    source.secrets = remaining


def source_url(public_url: str, source_id: str) -> str:
    return f"{public_url.rstrip('/')}/webhooks/{source_id}"


def _secret_json(record: Mapping[str, str]) -> dict[str, str]:
    return {"id": record["id"], "hint": mask_secret(record["value"]), "created_at": record["created_at"]}


def _masked_options(connector_name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    try:
        secret_names: Iterable[str] | None = registry().get(connector_name).secret_options
    except UnknownConnector:
        secret_names = None  # cannot tell which values are credentials: hide them all
    return {
        key: mask_secret(str(value)) if secret_names is None or key in secret_names else value
        for key, value in options.items()
    }


def source_json(session: Session, source: Source, public_url: str) -> dict[str, Any]:
    project = session.get(Project, source.project_id)
    return {
        "id": source.id,
        "url": source_url(public_url, source.id),
        "connector": source.connector,
        "project": project.slug if project else None,
        "name": source.name,
        "secrets": [_secret_json(r) for r in source.secrets],
        "options": _masked_options(source.connector, source.options),
        "created_at": isoformat(source.created_at),
        "deleted_at": isoformat(source.deleted_at),
    }


# -- the webhook route's view of a source ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """An active source as the webhook route needs it: ids for the event rows, and the
    connector's view (`config`)."""

    id: str
    account_id: str
    project_id: str
    config: SourceConfig


class SourceCache:
    """Source id -> active source for `ttl` seconds, so a burst of deliveries reads the sources
    table once. A rotated secret or a deleted source takes effect in other processes within `ttl`;
    this process invalidates on its own changes. Unknown ids are remembered for at most a second,
    so a flood of bogus ids stays cheap without delaying a new source much."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ResolvedSource | None]] = {}
        self._lock = threading.Lock()

    def get(self, runtime: Runtime, source_id: str) -> ResolvedSource | None:
        if not SOURCE_ID.match(source_id):
            return None  # cannot exist: not worth a query
        now = time.monotonic()
        entry = self._entries.get(source_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        resolved = self._load(runtime, source_id)
        ttl = self.ttl if resolved is not None else min(self.ttl, 1.0)
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[source_id] = (now + ttl, resolved)
        return resolved

    def invalidate(self, source_id: str | None = None) -> None:
        with self._lock:
            if source_id is None:
                self._entries.clear()
            else:
                self._entries.pop(source_id, None)

    @staticmethod
    def _load(runtime: Runtime, source_id: str) -> ResolvedSource | None:
        with runtime.db.session() as session:
            row = session.execute(
                select(Source, Project.slug)
                .join(Project, Project.id == Source.project_id)
                .where(Source.id == source_id, Source.deleted_at.is_(None))
            ).first()
        if row is None:
            return None
        source, slug = row
        return ResolvedSource(
            id=source.id,
            account_id=source.account_id,
            project_id=source.project_id,
            config=SourceConfig(
                id=source.id,
                connector=source.connector,
                project=slug,
                secrets=tuple(record["value"] for record in source.secrets),
                options=dict(source.options),
            ),
        )
