"""Fixture payloads (tests/fixtures/<connector>/) and small helpers for the provider tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tributary.app.accounts import ensure_account, get_project
from tributary.app.sources import create_source
from tributary.connectors.base import Envelope, EventIgnored, InboundRequest, OfflineContext, SourceConfig
from tributary.connectors.changes import CustomerChange
from tributary.connectors.registry import registry
from tributary.models import Event
from tributary.runtime.process import Runtime

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(path: str) -> Any:
    """A fresh copy of tests/fixtures/<path> (callers may edit it)."""
    return copy.deepcopy(json.loads((FIXTURES / path).read_text()))


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def source_config(connector: str, secrets: tuple[str, ...] = ("secret",), **options: Any) -> SourceConfig:
    impl = registry().get(connector)
    return SourceConfig("src_test", connector, "default", secrets, impl.validate_options(options))


def envelopes(connector: str, request: InboundRequest, source: SourceConfig | None = None) -> list[Envelope]:
    return registry().get(connector).envelopes(request, source or source_config(connector))


def normalize(connector: str, envelope: Envelope, source: SourceConfig | None = None) -> list[CustomerChange]:
    source = source or source_config(connector)
    return registry().get(connector).normalize(envelope, OfflineContext(source))


def ignored_reason(connector: str, envelope: Envelope) -> str:
    try:
        normalize(connector, envelope)
    except EventIgnored as exc:
        return str(exc)
    raise AssertionError(f"{envelope.type} was not ignored")


def make_source(runtime: Runtime, connector: str, secrets: list[str], **options: Any) -> str:
    with runtime.db.session() as session, session.begin():
        account, _ = ensure_account(session)
        project = get_project(session, account.id, "default")
        return create_source(
            session, account.id, connector=connector, project=project, secrets=secrets, options=options
        ).id


def stored_events(runtime: Runtime, source_id: str) -> list[Event]:
    with runtime.db.session() as session:
        return list(session.scalars(select(Event).where(Event.source_id == source_id).order_by(Event.id)))
