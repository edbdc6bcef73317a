"""`tributary connectors list`, `tributary connectors show <connector>` and
`tributary connectors test <connector> <payload file>`.

`show` (and `list --events`) prints each event type a connector maps and what Tributary does with
it: the docstring of its handler (connectors/handlers.py).

`test` runs a delivery through a connector offline: verify (when a secret is given), split into
envelopes, normalize each, and print the changes the worker would apply. Nothing is written;
identity lookups answer "unknown" (an event without an email shows a change naming only the
identity, which the worker would resolve through the identities table).
"""

from __future__ import annotations

import json
from typing import IO, Any

import click

from tributary.app.cli import cli, emit
from tributary.connectors.base import (
    Connector,
    EventIgnored,
    Headers,
    InboundRequest,
    InvalidOptions,
    MalformedPayload,
    OfflineContext,
    SourceConfig,
    VerificationFailed,
)
from tributary.connectors.registry import DISABLED_ENV, UnknownConnector, registry
from tributary.models.base import isoformat
from tributary.workers.connector_changes import normalized_email


@cli.group("connectors")
def connectors_group() -> None:
    """Installed connectors: built-in, from packages (entry points) and app-local modules."""


@connectors_group.command("list")
@click.option("--events", is_flag=True, help="Also list each connector's event types and what they do.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def connectors_list(events: bool, as_json: bool) -> None:
    reg = registry()
    rows: list[dict[str, Any]] = []
    lines = []
    for registration in reg:
        row: dict[str, Any] = registration.to_json()
        provenance = f"{row['distribution'] or row['module']} {row['version'] or ''}".strip()
        lines.append(f"{row['name']:<12} {row['origin']:<12} {provenance:<24} {row['title']}")
        if events:
            row["event_types"] = dict(registration.connector.event_types)
            lines.extend(f"    {line}" for line in _event_lines(registration.connector))
        rows.append(row)
    if reg.blocked:
        lines.append(f"disabled ({DISABLED_ENV}): {', '.join(sorted(reg.blocked))}")
    emit(rows, as_json, "\n".join(lines) or "no connectors")


def _event_lines(connector: Connector) -> list[str]:
    if not connector.event_types:
        return ["no fixed event types"]
    return [f"{kind}: {effect}" for kind, effect in connector.event_types.items()]


@connectors_group.command("show")
@click.argument("connector_name", metavar="CONNECTOR")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def connectors_show(connector_name: str, as_json: bool) -> None:
    """One connector: where it comes from, and every event type it maps with what Tributary does.

    Event types it does not list are stored and marked `ignored` with the reason.
    """
    try:
        registration = registry().registration(connector_name)
    except UnknownConnector as exc:
        raise click.ClickException(str(exc)) from None
    connector = registration.connector
    data: dict[str, Any] = {
        **registration.to_json(),
        "secret_options": sorted(connector.secret_options),
        "event_types": dict(connector.event_types),
    }
    provenance = f"{data['distribution'] or data['module']} {data['version'] or ''}".strip()
    lines = [
        f"{data['name']}: {data['title']}",
        f"origin: {data['origin']} ({provenance})",
        "event types:",
        *(f"  {line}" for line in _event_lines(connector)),
    ]
    emit(data, as_json, "\n".join(lines))


def _parse_header(value: str) -> tuple[str, str]:
    # `Name=value` or `Name: value`, split at whichever comes first (values may contain both).
    cut = min((i for i in (value.find("="), value.find(":")) if i > 0), default=-1)
    if cut < 0:
        raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint="--header")
    return value[:cut].strip(), value[cut + 1 :].strip()


def _read_delivery(raw: bytes, extra_headers: tuple[str, ...]) -> InboundRequest:
    """The payload file is the raw body, or `{"headers": {...}, "body": "<raw body>"}`."""
    headers: dict[str, str] = {}
    body = raw
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if isinstance(document, dict) and "body" in document and set(document) <= {"body", "headers"}:
        given = document.get("headers", {})
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise click.BadParameter("`headers` must be an object of strings", param_hint="PAYLOAD_FILE")
        headers.update(given)
        content = document["body"]
        # A string is the body exactly as sent; an object is re-serialized (signatures won't match).
        body = content.encode() if isinstance(content, str) else json.dumps(content).encode()
    headers.update(_parse_header(h) for h in extra_headers)
    headers.setdefault("Content-Type", "application/json")
    return InboundRequest(body=body, headers=Headers(headers))


def _change_json(change: Any) -> dict[str, Any]:
    return {**change.to_json(), "occurred_at": isoformat(change.occurred_at)}


def _envelope_report(connector: Connector, source: SourceConfig, envelope: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "event_id": envelope.event_id,
        "type": envelope.type,
        "occurred_at": isoformat(envelope.occurred_at),
        "email": envelope.email,
    }
    try:
        changes = [
            normalized_email(c, connector.name) for c in connector.normalize(envelope, OfflineContext(source))
        ]
    except EventIgnored as exc:
        report["ignored"] = str(exc) or "event type not tracked"
    except Exception as exc:  # report whatever the worker would record as the failure
        report["error"] = f"{type(exc).__name__}: {exc}"
    else:
        report["changes"] = [_change_json(c) for c in changes]
    return report


def _human(report: dict[str, Any]) -> str:
    lines = [f"connector: {report['connector']}", f"signature: {report['signature']}"]
    if "error" in report:
        lines.append(f"error: {report['error']}")
    for i, env in enumerate(report.get("envelopes", []), 1):
        lines.append(f"[{i}] {env['event_id']} {env['type']} at {env['occurred_at']}")
        if "ignored" in env:
            lines.append(f"    ignored: {env['ignored']}")
        elif "error" in env:
            lines.append(f"    would fail: {env['error']}")
        elif not env["changes"]:
            lines.append("    no changes")
        else:
            lines.extend(f"    {json.dumps(c, sort_keys=True)}" for c in env["changes"])
    return "\n".join(lines)


@connectors_group.command("test")
@click.argument("connector_name", metavar="CONNECTOR")
@click.argument("payload_file", type=click.File("rb"))
@click.option("--secret", "secrets", multiple=True, help="Verify with this secret (repeatable).")
@click.option(
    "--header", "headers", multiple=True, metavar="NAME=VALUE", help="A request header (repeatable)."
)
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE", help="A source option (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def connectors_test(
    connector_name: str,
    payload_file: IO[bytes],
    secrets: tuple[str, ...],
    headers: tuple[str, ...],
    options: tuple[str, ...],
    as_json: bool,
) -> None:
    """Verify and normalize a delivery offline; print the changes it would make.

    PAYLOAD_FILE ("-" for stdin) is the raw body, with headers given as --header, or a JSON file
    {"headers": {...}, "body": "<the raw body as a string>"}. Exit status 1 when the signature
    fails, the body is malformed, or an event would fail.
    """
    try:
        connector = registry().get(connector_name)
    except UnknownConnector as exc:
        raise click.ClickException(str(exc)) from None
    pairs: dict[str, str] = {}
    for pair in options:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        pairs[key] = value
    try:
        cleaned = connector.validate_options(pairs)
    except InvalidOptions as exc:
        raise click.ClickException(f"invalid options: {exc}") from None
    request = _read_delivery(payload_file.read(), headers)
    source = SourceConfig(
        "src_offline", connector.name, "default", tuple(s.strip() for s in secrets), cleaned
    )

    report: dict[str, Any] = {"connector": connector.name}
    failed = False
    if secrets:
        try:
            connector.verify(request, source)
            report["signature"] = "valid"
        except (VerificationFailed, MalformedPayload) as exc:
            report["signature"] = f"FAILED: {exc}"
            failed = True
    else:
        report["signature"] = "not checked (no --secret)"
    try:
        envelopes = connector.envelopes(request, source)
    except MalformedPayload as exc:
        report["error"] = f"malformed body: {exc}"
        envelopes = []
        failed = True
    report["envelopes"] = [_envelope_report(connector, source, e) for e in envelopes]
    failed = failed or any("error" in e for e in report["envelopes"])
    emit(report, as_json, _human(report))
    if failed:
        click.get_current_context().exit(1)
