"""The drain on tables the planner has statistics for, and on tables it has none for:
`python bench/drain_profile.py stats`.

The PostgreSQL this bench runs on (CI's) has `autovacuum = off`, so a table it fills is never
analyzed by the server, where a production server's autovacuum analyzes it once some rows have
changed. This measures what that costs the worker: N pending events drained in-process in batches
of B, in two halves, the second half timed; once with no ANALYZE from the bench, once with an
ANALYZE between the halves (what autovacuum would have done by then). It prints the second halves'
rates and the plan of the worker's lookup of a batch's project rows by customer id.

Since the worker analyzes a table that doubled since its statistics (workers/table_statistics.py),
the two cases should now meet: before it, batches of 20 drained 806-1,027 events/s without an
ANALYZE and 1,155-2,022 with one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import text

# The batch's load of project rows (workers/batch/load_statements.py `project_rows`), for 20 ids.
LOOKUP = "EXPLAIN SELECT * FROM customer_projects WHERE customer_id IN ({ids})"


def _drain(runtime: Any, batch_size: int, batches: int | None) -> tuple[int, float]:
    """Drain up to `batches` batches (all, when None); returns (events, seconds)."""
    from tributary.workers import jobs

    events = done = 0
    started = time.perf_counter()
    while batches is None or done < batches:
        claimed = jobs.drain_batch(runtime, batch_size)
        if not claimed:
            break
        events += claimed
        done += 1
    return events, time.perf_counter() - started


def stats_profile(runtime: Any, batch_size: int, events: int, analyze: bool) -> float:
    """Drain half, ANALYZE if asked, time the second half; returns its events/s."""
    _drain(runtime, batch_size, events // batch_size // 2)
    with runtime.db.engine.connect() as conn:
        if analyze:
            conn.execute(text("ANALYZE"))
            conn.commit()
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id DESC LIMIT 20")).scalars().all()
        plan = conn.execute(text(LOOKUP.format(ids=", ".join(f"'{i}'" for i in ids)))).scalars().all()
        server = conn.execute(text("SHOW autovacuum")).scalar()
    drained, seconds = _drain(runtime, batch_size, None)
    rate = drained / seconds
    scan = next((line.strip() for line in plan if "customer_projects" in line), "?")
    label = "ANALYZE halfway" if analyze else "no bench ANALYZE"
    print(f"  {label:16s} second half: {drained} events in {seconds:.2f} s = {rate:.0f} events/s")
    print(f"  {'':16s} project rows looked up by: {scan} (server autovacuum {server})")
    return rate


def compare(
    fresh: Callable[[], AbstractContextManager[Any]], batch_size: int, events: int, repeat: int
) -> None:
    """Each case on a runtime from `fresh()`: a new database holding `events` pending events (an
    emptied one would keep an earlier ANALYZE's statistics)."""
    print(f"{events} events in batches of {batch_size}, the second half timed:", flush=True)
    for _ in range(repeat):
        for analyze in (False, True):
            with fresh() as runtime:
                stats_profile(runtime, batch_size, events, analyze)
