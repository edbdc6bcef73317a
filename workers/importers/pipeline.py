"""Store listed objects as events, checkpoint, apply, and tally what happened.

Events are inserted in batches with `ON CONFLICT DO NOTHING` on their dedup key (so a second run,
or the overlap after a resume, stores nothing twice) in the same transaction as the source's
checkpoint: after a crash the checkpoint never claims more than was stored. The import then helps
apply what it stored with the worker's own batch code (`drain_batch`), which keeps at most one
window of its events waiting, lets an import finish without a separate worker, and tells the
summary what each event did: `created` a customer, `updated` one, left it `unchanged`, or was
`skipped` by the connector (with its reason).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update

from tributary.models import Event, Import, ImportCheckpoint
from tributary.models.base import sortable_id, utcnow
from tributary.models.event import DEDUP_KEY
from tributary.models.imports import IMPORT_COUNTS
from tributary.models.sql import dialect_insert, insert_for
from tributary.runtime.doorbell import ring
from tributary.runtime.process import Runtime
from tributary.workers.importers.items import IMPORT_CHANNEL, ImportEvent, Listed, changes_digest
from tributary.workers.jobs import drain_batch

__all__ = ["COUNT_NAMES", "ImportTarget", "Tally", "load_checkpoints", "run_pipeline"]

COUNT_NAMES = IMPORT_COUNTS
MAX_ERRORS = 50
MAX_REASONS = 50
# `deferred` is finished for an import: it waits for its person, possibly for days (workers/deferred.py).
FINISHED = ("processed", "ignored", "failed", "deferred")


@dataclass(frozen=True, slots=True)
class ImportTarget:
    account_id: str
    project_id: str
    # None for CSV files; provider imports checkpoint per source.
    source_id: str | None
    kind: str
    import_id: str | None = None
    # Reconcile fixes read everything every time: they keep no checkpoint (and leave an
    # interrupted import's alone).
    checkpoints: bool = True


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def skip(self, reason: str, amount: int = 1) -> None:
        if reason not in self.skipped and len(self.skipped) >= MAX_REASONS:
            reason = "other reasons"
        self.skipped[reason] += amount
        self.counts["skipped"] += amount

    def error(self, entry: dict[str, Any]) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(entry)

    @property
    def rate(self) -> float:
        """Objects listed per second so far."""
        elapsed = time.monotonic() - self.started
        return self.counts["listed"] / elapsed if elapsed > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "counts": {name: self.counts[name] for name in COUNT_NAMES},
            "skipped": dict(self.skipped.most_common()),
            "errors": list(self.errors),
        }


def load_checkpoints(runtime: Runtime, source_id: str) -> dict[str, tuple[str, bool]]:
    with runtime.db.session() as session:
        rows = session.scalars(select(ImportCheckpoint).where(ImportCheckpoint.source_id == source_id))
        return {row.stream: (row.cursor, row.done) for row in rows}


def outcome(report: list[Any] | None) -> str:
    """What a processed event did, from the report the worker stored in `events.changes`."""
    entries = [e for e in (report or []) if isinstance(e, Mapping)]
    if any(e.get("created") for e in entries):
        return "created"
    if any(e.get("changed") or e.get("identity_linked") or e.get("joined_project") for e in entries):
        return "updated"
    return "unchanged"


class _Run:
    def __init__(
        self,
        runtime: Runtime,
        target: ImportTarget,
        *,
        dry_run: bool,
        batch_size: int,
        window: int,
        wait_seconds: float,
        on_progress: Callable[[Tally], None] | None,
    ) -> None:
        self.runtime = runtime
        self.target = target
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.window = window
        self.wait_seconds = wait_seconds
        self.on_progress = on_progress
        self.tally = Tally()
        self.rows: list[dict[str, Any]] = []
        self.cursors: dict[str, tuple[str, bool]] = {}
        self.inflight: dict[str, None] = {}
        self.saved_at = 0.0

    # -- storing ------------------------------------------------------------------------------

    def add(self, item: Listed) -> None:
        if item.done:
            self.cursors[item.stream] = (item.cursor, True)
            self.flush()
            return
        self.tally.counts["listed"] += 1
        if item.skip is not None:
            self.tally.skip(item.skip)
        else:
            self.rows.extend(self._row(event) for event in item.events)
        self.cursors[item.stream] = (item.cursor, False)
        if len(self.rows) >= self.batch_size:
            self.flush()

    def _row(self, event: ImportEvent) -> dict[str, Any]:
        scope = self.target.source_id or f"{self.target.kind}:{self.target.project_id}"
        digest = changes_digest(event.changes)
        return {
            "id": sortable_id("evt"),
            "account_id": self.target.account_id,
            "project_id": self.target.project_id,
            "source_id": self.target.source_id,
            "channel": IMPORT_CHANNEL,
            "type": event.type,
            "provider_event_id": f"{event.object_id}:{digest}"[:255],
            "dedup_key": f"import:{scope}:{event.object_id[:200]}:{event.type[:40]}:{digest}",
            "email": event.email,
            "occurred_at": event.occurred_at,
            "received_at": utcnow(),
            # What the provider's API said (as the payload the connector reads): an import's raw input.
            "body": json.dumps(event.payload, separators=(",", ":"), default=str).encode(),
            "headers": {},
            "payload": event.payload,
            "status": "pending",
            "attempts": 0,
        }

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        if self.dry_run:
            if rows:
                self._count_dry(rows)
            return
        stored: list[str] = []
        with self.runtime.db.write_session() as session, session.begin():
            if rows:
                stmt = insert_for(session.get_bind().dialect.name, Event)
                stmt = stmt.values(rows).on_conflict_do_nothing(index_elements=DEDUP_KEY).returning(Event.id)
                stored = [str(i) for i in session.scalars(stmt)]
            self._save_checkpoints(session)
            self._save_progress(session, force=False)
        self.tally.counts["stored"] += len(stored)
        self.tally.counts["duplicates"] += len(rows) - len(stored)
        self.tally.counts["unchanged"] += len(rows) - len(stored)
        if stored:
            self.inflight.update(dict.fromkeys(stored))
            ring(self.runtime)
        if len(self.inflight) >= self.window:
            self.settle(keep=self.window // 2)
        if self.on_progress is not None:
            self.on_progress(self.tally)

    def _count_dry(self, rows: list[dict[str, Any]]) -> None:
        keys = [row["dedup_key"] for row in rows]
        with self.runtime.db.session() as session:
            existing = set(
                session.scalars(
                    select(Event.dedup_key).where(
                        Event.account_id == self.target.account_id, Event.dedup_key.in_(keys)
                    )
                )
            )
        fresh = len({k for k in keys if k not in existing})
        self.tally.counts["stored"] += fresh
        self.tally.counts["duplicates"] += len(rows) - fresh

    def _save_checkpoints(self, session: Any) -> None:
        if self.target.source_id is None or not self.target.checkpoints or not self.cursors:
            return
        now = utcnow()
        stmt = dialect_insert(session, ImportCheckpoint)
        for stream, (cursor, done) in self.cursors.items():
            session.execute(
                stmt.values(
                    source_id=self.target.source_id,
                    stream=stream,
                    cursor=cursor[:255],
                    done=done,
                    updated_at=now,
                ).on_conflict_do_update(
                    index_elements=["source_id", "stream"],
                    set_={"cursor": cursor[:255], "done": done, "updated_at": now},
                )
            )
        self.cursors.clear()

    def _save_progress(self, session: Any, *, force: bool) -> None:
        if self.target.import_id is None or (not force and time.monotonic() - self.saved_at < 1.0):
            return
        self.saved_at = time.monotonic()
        data = self.tally.as_json()
        session.execute(
            update(Import)
            .where(Import.id == self.target.import_id)
            .values(
                counts=data["counts"], skipped=data["skipped"], errors=data["errors"], updated_at=utcnow()
            )
        )

    # -- applying -----------------------------------------------------------------------------

    def settle(self, keep: int = 0) -> None:
        """Apply and collect until at most `keep` of this run's events are unfinished. Gives up
        waiting after `wait_seconds` without progress: those events stay queued and are counted
        `pending` (a worker applies them later)."""
        idle_since = time.monotonic()
        while len(self.inflight) > keep:
            claimed = drain_batch(self.runtime)
            if self._collect():
                idle_since = time.monotonic()
            elif claimed == 0:
                if time.monotonic() - idle_since > self.wait_seconds:
                    break
                time.sleep(0.1)
            if self.on_progress is not None:
                self.on_progress(self.tally)

    def _collect(self) -> int:
        finished = 0
        ids = list(self.inflight)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with self.runtime.db.session() as session:
                rows = session.execute(
                    select(Event.id, Event.status, Event.last_error, Event.changes).where(
                        Event.id.in_(chunk), Event.status.in_(FINISHED)
                    )
                ).all()
            for event_id, status, error, report in rows:
                del self.inflight[event_id]
                finished += 1
                if status == "processed":
                    self.tally.counts[outcome(report)] += 1
                elif status == "ignored":
                    self.tally.skip(error or "ignored by the connector")
                else:
                    self.tally.counts["failed"] += 1
                    self.tally.error({"event_id": event_id, "error": error})
            if len(rows) < len(chunk):
                break  # events apply in id order: later chunks are not finished either
        return finished

    def finish(self, *, complete: bool) -> Tally:
        self.flush()
        if not self.dry_run:
            self.settle()
            self.tally.counts["pending"] = len(self.inflight)
            with self.runtime.db.write_session() as session, session.begin():
                if complete and self.target.source_id is not None and self.target.checkpoints:
                    # The whole source was read: the next run starts over (and deduplicates).
                    session.execute(
                        delete(ImportCheckpoint).where(ImportCheckpoint.source_id == self.target.source_id)
                    )
                self._save_progress(session, force=True)
        return self.tally


def run_pipeline(
    runtime: Runtime,
    target: ImportTarget,
    items: Iterable[Listed],
    *,
    dry_run: bool = False,
    batch_size: int = 200,
    window: int = 2000,
    wait_seconds: float = 60.0,
    on_progress: Callable[[Tally], None] | None = None,
) -> Tally:
    """Store, apply and tally `items`. An exception from `items` (the provider API failed for
    good) propagates after what was read so far is stored and checkpointed, so the next run
    resumes there; the tally so far is attached to the exception as `tally`."""
    run = _Run(
        runtime,
        target,
        dry_run=dry_run,
        batch_size=batch_size,
        window=window,
        wait_seconds=wait_seconds,
        on_progress=on_progress,
    )
    try:
        for item in items:
            run.add(item)
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt | SystemExit):
            run.finish(complete=False)
        exc.tally = run.tally  # type: ignore[attr-defined]
        raise
    return run.finish(complete=True)
