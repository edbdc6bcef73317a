"""The query plans behind `GET /v1/customers`: run as a child with the product's environment,
`python -m bench.explain PATHS.json OUT.json`.

Each path is requested through the app's own test client (the WSGI app named in constants.py) with
the key in BENCH_READ_KEY; every SQL statement it executes is captured with a SQLAlchemy engine
event, and the list query (the longest SELECT on customers with a LIMIT: the walk down the sort
order; the page's customers are then read by id) is run again under `EXPLAIN (ANALYZE, BUFFERS)`
with the same parameters. Capturing what the app executes, rather than rebuilding the
query here, keeps the plans true to whatever the product's query code becomes.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from bench.constants import WSGI_APP

# A plan reads a big table without an index when it has one of these nodes.
_FULL_SCAN = re.compile(r"Seq Scan on (customers|customer_projects)\b")
_INDEX = re.compile(r"Index (Only )?Scan|Bitmap Index Scan")


def main() -> int:
    paths: dict[str, str] = json.loads(Path(sys.argv[1]).read_text())
    captured: list[tuple[Any, str, Any]] = []

    def capture(conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((conn.engine, statement, parameters))

    event.listen(Engine, "before_cursor_execute", capture)
    module, _, attribute = WSGI_APP.partition(":")
    app = getattr(importlib.import_module(module), attribute)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {os.environ['BENCH_READ_KEY']}"}
    out: dict[str, Any] = {}
    for family, path in paths.items():
        captured.clear()
        response = client.get(path, headers=headers)
        # The page's walk down the sort order: the SELECT on customers with a LIMIT (the page's
        # customers are then loaded by id, without one).
        selects = [
            c
            for c in captured
            if c[1].lstrip().upper().startswith("SELECT") and "customers" in c[1] and "LIMIT" in c[1]
        ]
        if response.status_code != 200 or not selects:
            out[family] = {"status": response.status_code, "plan": [], "uses_index": None}
            continue
        engine, statement, parameters = max(selects, key=lambda c: len(c[1]))
        # The planner settings the request's transaction ran with (`SET LOCAL …`), replayed in
        # the EXPLAIN's, so the plan is the one the app got.
        settings = [c for c in captured if c[1].lstrip().upper().startswith("SET ")]
        event.remove(Engine, "before_cursor_execute", capture)
        try:
            with engine.begin() as conn:
                for _, setting, setting_parameters in settings:
                    conn.exec_driver_sql(setting, setting_parameters)
                rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).all()
        finally:
            event.listen(Engine, "before_cursor_execute", capture)
        plan = [str(row[0]) for row in rows]
        text = "\n".join(plan)
        out[family] = {
            "status": response.status_code,
            "sql": statement,
            "plan": plan,
            "uses_index": bool(_INDEX.search(text)) and not _FULL_SCAN.search(text),
        }
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
