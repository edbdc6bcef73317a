"""Where PostgreSQL's time goes in a drain: `python bench/drain_profile.py triggers`.

The drain is bound by the database (bench/README.md, "Drain"): most of a batch's wall time is its
few set-based statements running in PostgreSQL. This runs one in-process drain with PostgreSQL's
`auto_explain` loaded in the worker's session, at NOTICE level so the plans come back to this
process (no access to the server's log needed), and sums, per statement kind, its execution time
and the time of every trigger it fired: foreign-key checks (`RI_ConstraintTrigger…`, one call per
row), and the event tallies' statement triggers (models/event_tally.py).

`LOAD 'auto_explain'` needs a superuser (the bench's `postgres`). Timing every plan node slows the
statements, so the events/s of this run mean nothing; the shares are what it is for.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event

# Set on every connection of the drain's engine; NOTICE sends each plan to the client.
SESSION = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_triggers = on",
    "SET auto_explain.log_format = json",
    "SET auto_explain.log_level = notice",
)


def _modify_node(plan: dict[str, Any]) -> dict[str, Any] | None:
    """The first ModifyTable node (a statement's own write, or a CTE's)."""
    if plan.get("Node Type") == "ModifyTable":
        return plan
    for child in plan.get("Plans", []):
        if (found := _modify_node(child)) is not None:
            return found
    return None


def _kind(plan: dict[str, Any]) -> str:
    node = _modify_node(plan)
    if node is None:
        # LockRows: FOR UPDATE (the claim, the customers) or FOR KEY SHARE (the batch's parents).
        return "SELECT" + (" … locking rows" if plan.get("Node Type") == "LockRows" else "")
    return f"{node.get('Operation', '?').upper()} {node.get('Relation Name', '?')}"


@dataclass
class Tally:
    """One kind of statement over the drain: how many, PostgreSQL's time, and its triggers'
    calls and time by trigger (or constraint) name."""

    statements: int = 0
    ms: float = 0.0
    triggers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))


def trigger_profile(runtime: Any, batch_size: int, events: int) -> None:
    """Drain every pending event of `runtime`'s database in-process, and print the tallies."""
    from tributary.workers import jobs

    totals: dict[str, Tally] = defaultdict(Tally)

    def on_notice(diag: Any) -> None:
        message = diag.message_primary or ""
        start = message.find("{")
        if "plan:" not in message or start < 0:
            return
        # "duration: 12.345 ms  plan:\n{…}": the statement's whole time, its triggers included.
        duration = float(message.split("duration:", 1)[1].split("ms", 1)[0])
        explained = json.loads(message[start:])
        tally = totals[_kind(explained["Plan"])]
        tally.statements += 1
        tally.ms += duration
        for trigger in explained.get("Triggers", []):
            name = trigger.get("Constraint Name") or trigger.get("Trigger Name", "?")
            tally.triggers[name][0] += int(trigger.get("Calls", 0))
            tally.triggers[name][1] += float(trigger.get("Time", 0.0))

    @event.listens_for(runtime.db.engine, "connect")
    def _explain(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.add_notice_handler(on_notice)
        with dbapi_conn.cursor() as cursor:
            for statement in SESSION:
                cursor.execute(statement)
        dbapi_conn.commit()

    runtime.db.engine.dispose()  # connections made before the listener would not explain
    batches = 0
    t0 = time.perf_counter()
    while jobs.drain_batch(runtime):
        batches += 1
    total = time.perf_counter() - t0
    runtime.db.dispose()
    print(f"{events} events, {batches} batches of up to {batch_size}, {total:.2f} s (timed plans: slow)")
    print("PostgreSQL's execution time per batch, by statement, and the triggers each fired:")
    all_ms = sum(tally.ms for tally in totals.values())
    trigger_ms = 0.0
    for kind, tally in sorted(totals.items(), key=lambda kv: -kv[1].ms):
        print(f"  {kind:40s} {tally.statements / batches:5.1f} statements {tally.ms / batches:8.2f} ms")
        for name, (calls, tms) in sorted(tally.triggers.items(), key=lambda kv: -kv[1][1]):
            trigger_ms += tms
            print(f"      trigger {name:50s} {calls / batches:7.1f} calls {tms / batches:8.2f} ms")
    if all_ms:
        share = trigger_ms / all_ms
        print(f"  all statements {all_ms / batches:.2f} ms per batch, of which triggers {share:.0%}")
