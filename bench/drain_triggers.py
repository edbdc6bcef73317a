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
import tempfile
import time
from collections import defaultdict
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
        return "SELECT" + (" … FOR UPDATE" if plan.get("Node Type") == "LockRows" else "")
    return f"{node.get('Operation', '?').upper()} {node.get('Relation Name', '?')}"


def trigger_profile(url: str, redis_url: str, batch_size: int, events: int) -> None:
    from tributary.runtime.config import Settings
    from tributary.runtime.process import Runtime, install
    from tributary.workers import jobs

    settings = Settings.load(
        {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "TRIBUTARY_BATCH_SIZE": batch_size,
            "TRIBUTARY_HOME": tempfile.mkdtemp(),
            "TRIBUTARY_SECRET_KEY": "drain-triggers",
        }
    )
    runtime = install(Runtime(settings))
    # kind -> [statements, execution ms, {trigger: [calls, ms]}]
    totals: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0, defaultdict(lambda: [0, 0.0])])

    def on_notice(diag: Any) -> None:
        message = diag.message_primary or ""
        start = message.find("{")
        if "plan:" not in message or start < 0:
            return
        # "duration: 12.345 ms  plan:\n{…}": the statement's whole time, its triggers included.
        duration = float(message.split("duration:", 1)[1].split("ms", 1)[0])
        explained = json.loads(message[start:])
        entry = totals[_kind(explained["Plan"])]
        entry[0] += 1
        entry[1] += duration
        for trigger in explained.get("Triggers", []):
            name = trigger.get("Constraint Name") or trigger.get("Trigger Name", "?")
            entry[2][name][0] += int(trigger.get("Calls", 0))
            entry[2][name][1] += float(trigger.get("Time", 0.0))

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
    all_ms = sum(entry[1] for entry in totals.values())
    trigger_ms = 0.0
    for kind, (count, ms, triggers) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:40s} {count / batches:5.1f} statements {ms / batches:8.2f} ms")
        for name, (calls, tms) in sorted(triggers.items(), key=lambda kv: -kv[1][1]):
            trigger_ms += tms
            print(f"      trigger {name:50s} {calls / batches:7.1f} calls {tms / batches:8.2f} ms")
    if all_ms:
        share = trigger_ms / all_ms
        print(f"  all statements {all_ms / batches:.2f} ms per batch, of which triggers {share:.0%}")
