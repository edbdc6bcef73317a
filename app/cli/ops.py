"""`tributary events list|show|replay|purge`, `tributary jobs failed|show|retry|delete` and
`tributary replays show|cancel`: the operator's API (app/api/events.py, app/api/jobs.py) on the
database and Redis directly, with the same filters, checks and shapes. Long operations (bulk replay,
retry --all, purge) show click's progress bar with counts and rate, and end with a summary."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
from flask import current_app
from sqlalchemy import func, select

from tributary.app.accounts import ensure_account
from tributary.app.cli import cli, emit, runtime
from tributary.app.customer_args import DEFAULT_LIMIT
from tributary.app.customer_query import Reader
from tributary.app.domain_errors import DomainError
from tributary.app.events_query import (
    FILTER_ARGS,
    event_detail,
    find_event,
    list_events,
    parse_filters,
    parse_page,
)
from tributary.app.failed_jobs import delete_failed, find_failed, list_failed, retry_failed
from tributary.app.replays import create_replay, find_replay, plan_replay, replay_json, replay_results
from tributary.models import Event, Replay
from tributary.models.base import utcnow
from tributary.workers.replay import cancel_replay, enqueue_replay, replay_step
from tributary.workers.replay_watch import foreground_lease, renew
from tributary.workers.retention import expired, purge

T = TypeVar("T")


def _reader() -> Reader:
    with runtime().db.session() as session, session.begin():
        account, _ = ensure_account(session)
        return Reader(account.id)


def _filter_options(f: Callable[..., T]) -> Callable[..., T]:
    for name, described in reversed(
        [
            ("status", "pending, processed, ignored, failed or deferred."),
            ("source", "Source id (src_…)."),
            ("connector", "Connector name, or identify/ping."),
            ("type", "Event type, exactly."),
            ("email", "Events naming this email or touching its customer."),
            ("project", "Project slug."),
            ("since", "Received at or after (ISO 8601)."),
            ("until", "Received before (ISO 8601)."),
        ]
    ):
        f = click.option(f"--{name}", help=described)(f)
    return f


def _args(options: dict[str, Any]) -> dict[str, list[str]]:
    return {name: [str(value)] for name, value in options.items() if value is not None}


def _event_line(e: dict[str, Any]) -> str:
    error = f"\t{e['last_error'][:80]}" if e["last_error"] else ""
    return (
        f"{e['id']}\t{e['received_at']}\t{e['connector']}\t{e['type']}\t{e['status']}\t{e['attempts']}{error}"
    )


def _event_text(e: dict[str, Any]) -> str:
    lines = [
        f"{e['id']}  {e['connector']} {e['type']}  ({e['status']}, {e['attempts']} attempts)",
        f"  source:       {e['source'] or '-'}   project: {e['project'] or '-'}",
        f"  provider id:  {e['provider_event_id'] or '-'}",
        f"  occurred:     {e['occurred_at']}   received: {e['received_at']}",
        f"  processed:    {e['processed_at'] or '-'}",
    ]
    if e.get("awaiting"):
        lines.append(f"  awaiting:     {e['awaiting']} (deferred until an event names this person)")
    if e["ignore_reason"]:
        lines.append(f"  ignored:      {e['ignore_reason']}")
    elif e["last_error"]:
        lines.append(f"  last error:   {e['last_error']}")
    lines += [
        f"  attempt {a['number']}: {a['at']} {a['outcome']} {a['error'] or ''}" for a in e["attempt_history"]
    ]
    for c in e["changes"]:
        lines.append(
            f"  change → {c['customer']['email'] or c['customer']['id']} [{c['project']}]: {c['data']}"
        )
    if e["purged_at"]:
        lines.append(f"  raw body purged by retention at {e['purged_at']}")
    return "\n".join(lines)


def _diff_text(result: dict[str, Any]) -> str:
    head = f"{result['event_id']}: {result['status_before']} → {result['status']}"
    if result["error"]:
        head += f" ({result['error']})"
    lines = [head]
    lines += [
        f"  {d['email'] or d['customer_id']} {d['field']}: {d['before']!r} → {d['after']!r}"
        for d in result["diff"]
    ]
    if not result["diff"]:
        lines.append("  no change")
    return "\n".join(lines)


@cli.group("events")
def events() -> None:
    """Stored events: list, inspect, replay, purge (the same filters as GET /v1/events)."""


@events.command("list")
@_filter_options
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, help="Page size, 1 to 200.")
@click.option("--cursor", help="Continue from a previous page's next_cursor.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output ({data, next_cursor}).")
def events_list(as_json: bool, limit: int, cursor: str | None, **filters: str | None) -> None:
    """List events, newest first."""
    reader = _reader()
    with runtime().db.session() as session:
        query, limit, cursor = parse_page(_args({**filters, "limit": limit, "cursor": cursor}))
        page = list_events(
            session,
            reader,
            query,
            limit=limit,
            cursor=cursor,
            secret_key=str(current_app.config["SECRET_KEY"]),
        )
    human = "\n".join(_event_line(e) for e in page.events) or "no events"
    if page.next_cursor:
        human += f"\n(more: --cursor {page.next_cursor})"
    emit({"data": page.events, "next_cursor": page.next_cursor}, as_json, human)


@events.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def events_show(event_id: str, as_json: bool) -> None:
    """An event: raw body (with --json), attempts, errors and the changes it produced."""
    reader = _reader()
    with runtime().db.session() as session:
        data = event_detail(session, find_event(session, reader, event_id))
    emit(data, as_json, _event_text(data))


@events.command("replay")
@click.argument("event_id", required=False)
@_filter_options
@click.option("--dry-run", is_flag=True, help="Show the diff; write nothing.")
@click.option("--background", is_flag=True, help="Bulk: leave it to the workers and print the replay id.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def events_replay(
    event_id: str | None, dry_run: bool, background: bool, as_json: bool, **filters: str | None
) -> None:
    """Replay one event (EVENT_ID) or every event the filters select, with today's connector code."""
    reader = _reader()
    rt = runtime()
    given = {k: v for k, v in filters.items() if v is not None}
    if event_id is not None:
        if given:
            raise click.UsageError("give an EVENT_ID or filters, not both")
        with rt.db.session() as session:
            target = find_event(session, reader, event_id).id
        result = replay_results(rt, [target], dry_run)[0]
        emit(result, as_json, _diff_text(result))
        return
    if not given:
        raise click.UsageError(
            f"give an EVENT_ID or at least one filter ({', '.join('--' + f for f in FILTER_ARGS)})"
        )
    query = parse_filters(_args(given))
    with rt.db.session() as session:
        bound = query.bind(session, reader)
    if dry_run:
        plan = plan_replay(rt, bound)
        human = f"{plan['count']} events would be replayed; sample of {len(plan['sample'])}:\n"
        emit(plan, as_json, human + "\n".join(_diff_text(r) for r in plan["sample"]))
        return
    with rt.db.write_session() as session, session.begin():
        data = replay_json(create_replay(session, bound, None))
    if background:
        enqueue_replay(rt, data["id"])
        emit(
            data,
            as_json,
            f"replay {data['id']} queued: {data['total']} events (tributary replays show {data['id']})",
        )
        return
    emit(_run_replay(data["id"], data["total"], quiet=as_json), as_json, "")


def _rate(done: int, started: float) -> str:
    elapsed = time.monotonic() - started
    return f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""


def _run_replay(replay_id: str, total: int, *, quiet: bool) -> dict[str, Any]:
    """Replay in this process, batch by batch, with a progress bar. Ctrl-C (or `tributary replays
    cancel` elsewhere) stops it after the batch in flight."""
    rt = runtime()
    started = time.monotonic()
    done = 0
    with (
        foreground_lease(rt, replay_id),
        click.progressbar(
            length=total, label="replaying", show_pos=True, file=io.StringIO() if quiet else None
        ) as bar,
    ):
        try:
            while replay_step(rt, replay_id):
                renew(rt, replay_id)
                with rt.db.session() as session:
                    replay = session.get(Replay, replay_id)
                    now = replay.done if replay else done
                bar.label = f"replaying ({_rate(now, started)})"
                bar.update(now - done)
                done = now
        except KeyboardInterrupt:
            with rt.db.write_session() as session, session.begin():
                replay = session.get(Replay, replay_id)
                if replay is not None:
                    cancel_replay(session, replay)
    with rt.db.session() as session:
        replay = session.get(Replay, replay_id)
        assert replay is not None
        data = replay_json(replay)
    if not quiet:
        click.echo(
            f"replay {data['id']} {data['state']}: {data['done']} of {data['total']} events replayed, "
            f"{data['failed']} failed, in {time.monotonic() - started:.1f} s ({_rate(data['done'], started)})"
        )
    return data


@events.command("purge")
@click.option(
    "--older-than-days", type=click.IntRange(min=0), help="Default: TRIBUTARY_EVENT_RETENTION_DAYS."
)
def events_purge(older_than_days: int | None) -> None:
    """Purge the raw bodies of processed and ignored events now (retention; failed and pending never)."""
    rt = runtime()
    days = older_than_days if older_than_days is not None else rt.settings.event_retention_days
    with rt.db.session() as session:
        total = session.scalar(
            select(func.count()).select_from(Event).where(*expired(utcnow() - timedelta(days=days)))
        )
    started = time.monotonic()
    with click.progressbar(length=int(total or 0), label="purging", show_pos=True) as bar:
        purged = purge(rt, timedelta(days=days), progress=bar.update)
    click.echo(f"purged the raw bodies of {purged} events older than {days} days ({_rate(purged, started)})")


@cli.group("jobs")
def jobs() -> None:
    """RQ's failed jobs: list, inspect, retry, delete (the same as /v1/jobs/failed)."""


def _job_line(j: dict[str, Any]) -> str:
    error = f"{j['exception_type'] or '-'}: {j['exception']}"
    return f"{j['id']}\t{j['failed_at']}\t{j['event_status'] or '-'}\t{j['attempts'] or '-'}\t{error}"


@jobs.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs_failed(as_json: bool) -> None:
    """Jobs whose automatic retries are spent, most recent first."""
    data = [view.to_json() for view in list_failed(runtime(), _reader())]
    emit({"data": data}, as_json, "\n".join(_job_line(j) for j in data) or "no failed jobs")


@jobs.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def jobs_show(job_id: str, as_json: bool) -> None:
    data = find_failed(runtime(), _reader(), job_id).to_json()
    emit(data, as_json, "\n".join(f"{k}: {v}" for k, v in data.items()))


@jobs.command("retry")
@click.argument("job_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Every failed job.")
def jobs_retry(job_id: str | None, retry_all: bool) -> None:
    """Requeue a failed job (or all of them): its event is applied again by a worker."""
    rt, reader = runtime(), _reader()
    if (job_id is None) == (not retry_all):
        raise click.UsageError("give a JOB_ID or --all")
    if job_id is not None:
        retry_failed(rt, find_failed(rt, reader, job_id))
        click.echo(f"requeued {job_id}")
        return
    views = list_failed(rt, reader)
    started, requeued, skipped = time.monotonic(), 0, 0
    with click.progressbar(views, label="requeueing", show_pos=True) as bar:
        for view in bar:
            try:
                retry_failed(rt, view)
                requeued += 1
            except DomainError:
                skipped += 1
    click.echo(
        f"requeued {requeued} failed jobs ({skipped} had left the registry) {_rate(requeued, started)}"
    )


@jobs.command("delete")
@click.argument("job_id")
def jobs_delete(job_id: str) -> None:
    """Forget a failed job; its event stays failed and listed."""
    delete_failed(find_failed(runtime(), _reader(), job_id))
    click.echo(f"deleted {job_id}")


@cli.group("replays")
def replays() -> None:
    """Background replays: progress and cancellation."""


def _replay_text(r: dict[str, Any]) -> str:
    progress = f"{r['done']}/{r['total']} done\t{r['failed']} failed"
    return f"{r['id']}\t{r['state']}\t{progress}\tfilters {r['filters']}"


@replays.command("show")
@click.argument("replay_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def replays_show(replay_id: str, as_json: bool) -> None:
    reader = _reader()
    with runtime().db.session() as session:
        data = replay_json(find_replay(session, reader, replay_id))
    emit(data, as_json, _replay_text(data))


@replays.command("cancel")
@click.argument("replay_id")
def replays_cancel(replay_id: str) -> None:
    """Stop a replay after the batch in flight."""
    reader = _reader()
    with runtime().db.write_session() as session, session.begin():
        replay = find_replay(session, reader, replay_id, lock=True)
        cancel_replay(session, replay)
        data = replay_json(replay)
    click.echo(_replay_text(data))
