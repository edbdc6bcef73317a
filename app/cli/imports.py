"""`tributary import stripe|clerk|workos|supabase --source S` and `tributary import csv FILE`.

Each prints a progress bar (objects read, stored, skipped, rate; ETA when the total is known) on
stderr while it runs, then a summary: created, updated, unchanged (including what an earlier run
already imported), skipped with reasons, failed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from tributary.app.accounts import ensure_account
from tributary.app.cli import cli, emit, runtime
from tributary.app.import_runs import create_import, import_json
from tributary.app.sources import find_source
from tributary.models import Import
from tributary.workers.importers.csv_rows import CsvInvalid, check_csv
from tributary.workers.importers.items import Listed
from tributary.workers.importers.pipeline import Tally
from tributary.workers.imports import PROVIDER_KINDS, ImportFailed, execute


def _create(**kwargs: Any) -> str:
    with runtime().db.write_session() as session, session.begin():
        account, _ = ensure_account(session)
        return create_import(session, account.id, state="running", **kwargs).id


def _show(import_id: str) -> dict[str, Any]:
    with runtime().db.session() as session:
        row = session.get(Import, import_id)
        assert row is not None
        return import_json(session, row)


def _progress(
    label: str, total: int | None = None
) -> tuple[Callable[[Iterable[Listed]], Iterator[Listed]], Callable[[Tally], None]]:
    latest: list[Tally] = []

    def status(_: Any) -> str:
        if not latest:
            return ""
        tally = latest[0]
        counts = tally.counts
        return (
            f"{counts['stored']} new · {counts['duplicates']} already imported · "
            f"{counts['skipped']} skipped · {tally.rate:.0f}/s"
        )

    def wrap(items: Iterable[Listed]) -> Iterator[Listed]:
        with click.progressbar(
            items, length=total, label=label, item_show_func=status, show_pos=True, file=sys.stderr
        ) as bar:
            yield from bar

    def on_progress(tally: Tally) -> None:
        latest[:] = [tally]

    return wrap, on_progress


def _summary(data: dict[str, Any], seconds: float) -> str:
    counts = data["counts"]
    read = counts["listed"]
    lines = [
        f"import {data['id']} ({data['kind']}{', dry run' if data['dry_run'] else ''}): {data['state']}, "
        f"{read} read in {seconds:.1f} s ({read / seconds if seconds > 0 else 0:.0f}/s)"
    ]
    if data["dry_run"]:
        lines.append(f"  would store  {counts['stored']}")
        lines.append(f"  already in   {counts['duplicates']}")
    else:
        for name in ("created", "updated", "unchanged", "failed", "pending"):
            if name in ("created", "updated", "unchanged") or counts[name]:
                lines.append(f"  {name:<10} {counts[name]}")
    lines.append(f"  {'skipped':<10} {counts['skipped']}")
    lines.extend(f"    {n:>6}  {reason}" for reason, n in data["skipped"].items())
    lines.extend(f"  error: {e.get('error')}" for e in data["errors"][:10])
    return "\n".join(lines)


def _run(import_id: str, label: str, as_json: bool, **kwargs: Any) -> None:
    wrap, on_progress = _progress(label, kwargs.pop("total", None))
    try:
        tally = execute(runtime(), import_id, wrap=wrap, on_progress=on_progress, **kwargs)
    except (ImportFailed, CsvInvalid) as exc:
        data = _show(import_id)
        if as_json:
            click.echo(_dump(data))
        hint = "" if data["kind"] == "csv" else "; run it again to resume"
        raise click.ClickException(f"{exc} (import {import_id}{hint})") from None
    data = _show(import_id)
    emit(data, as_json, _summary(data, time.monotonic() - tally.started))


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


@cli.group("import")
def import_group() -> None:
    """Bring existing customers in from a provider's API or a CSV file."""


def _provider_command(kind: str) -> None:
    @import_group.command(kind, help=f"Import {kind} customers through the source's API key.")
    @click.option("--source", "source_id", required=True, help=f"A {kind} source id (src_…).")
    @click.option("--dry-run", is_flag=True, help="Read and count; store nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
    def command(source_id: str, dry_run: bool, as_json: bool) -> None:
        import_id = _create(kind=kind, source_id=source_id, dry_run=dry_run)
        _run(import_id, f"{kind} {source_id}", as_json)

    del command


for _kind in PROVIDER_KINDS:
    _provider_command(_kind)


@import_group.command("csv")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", default="default", show_default=True, help="Project slug.")
@click.option("--dry-run", is_flag=True, help="Validate and count; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def import_csv(path: Path, project: str, dry_run: bool, as_json: bool) -> None:
    """Import FILE: columns email, name, status, params.<key> (JSON values), created_at. Every row
    is checked first; if any is bad, nothing is imported and the bad rows are listed."""

    def opener() -> Any:
        return path.open(encoding="utf-8-sig", newline="")

    try:
        total = check_csv(opener)
    except CsvInvalid as exc:
        for bad in exc.bad_rows:
            click.echo(f"row {bad.row}: {bad.reason}", err=True)
        if exc.total_bad > len(exc.bad_rows):
            click.echo(f"… and {exc.total_bad - len(exc.bad_rows)} more", err=True)
        raise click.ClickException(str(exc)) from None
    import_id = _create(kind="csv", project=project, dry_run=dry_run, filename=path.name[:255])
    _run(import_id, path.name, as_json, csv_opener=opener, total=total)


@cli.group("reconcile")
def reconcile_group() -> None:
    """Compare records with a provider's current state, and fix drift."""


@reconcile_group.command("stripe")
@click.option("--source", "source_id", required=True, help="A stripe source id (src_…) with an api_key.")
@click.option("--fix", is_flag=True, help="Apply Stripe's state (as events at the current time).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reconcile_stripe(source_id: str, fix: bool, as_json: bool) -> None:
    """Each Stripe customer's status, plan and MRR against Stripe's current subscriptions."""
    from tributary.workers.importers.reconcile import reconcile_source

    with runtime().db.session() as session:
        account, _ = ensure_account(session)
        source = find_source(session, account.id, source_id)
        if source.connector != "stripe":
            raise click.ClickException(f"source {source_id} is a {source.connector} source, not stripe")
    try:
        result = reconcile_source(runtime(), source_id, fix=fix)
    except ImportFailed as exc:
        raise click.ClickException(str(exc)) from None
    emit(result, as_json, _drift_table(result))


def _drift_table(result: dict[str, Any]) -> str:
    drift = result["drift"]
    if not drift:
        return "no drift: every Stripe customer matches"
    rows = [("STRIPE CUSTOMER", "EMAIL", "FIELD", "TRIBUTARY", "STRIPE")]
    rows += [
        (d["stripe_customer"], d["email"] or "", d["field"], _cell(d["tributary"]), _cell(d["stripe"]))
        for d in drift
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append(f"{len(drift)} difference(s)")
    if result["fixed"] is not None:
        counts = result["fixed"]["counts"]
        lines.append(
            f"fixed: {counts['updated'] + counts['created']} record(s) updated, {counts['failed']} failed"
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "—" if value is None else json.dumps(value) if isinstance(value, dict) else str(value)
