#!/usr/bin/env python
"""`python bench/event_insert.py --against <revision>`: the ingest's shared write on PostgreSQL
(app/pg_event_writes.py `BATCH`, the statement every identify, ping, batch and webhook ends in) on
a database migrated to head beside one migrated only to `<revision>`, so a schema change to
`events` (a key, an index, a trigger) is measured on the statement alone, without the web's noise.

Both databases get one account, project and ingest key and `--seed` stored events (a grown table,
as the bench's batch point meets it), then run the same statement with fresh rows, alternating
which goes first, `--statements` times at each row count (`--rows`, default 100 as a `/v1/batch`
request and 4 as a group commit of identify calls), on one connection each, in autocommit: the
time a statement takes the client to send, PostgreSQL to run and commit, and the client to read
back the ids (medians and quartiles), and, when the server runs on this machine, the CPU its
backend spent on them (from /proc: the commit's wait for the disk is in the time, not in the CPU).
Both databases are dropped afterwards.

The rows are small identify events unless `--body FILE` names a webhook body (say
tests/fixtures/stripe/invoice.paid.json, 6.4 KB as Stripe sends it): then each row is a delivery
of that file, stored as the web stores one, its raw bytes and its parsed payload.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import make_url

from tributary.app import pg_event_writes
from tributary.app.event_rows import event_row
from tributary.models.base import utcnow
from tributary.runtime.migrate import upgrade

SEED = """
INSERT INTO events (id, account_id, project_id, channel, type, dedup_key, email, occurred_at,
                    received_at, body, headers, payload, status, attempts)
SELECT 'evt_seed' || lpad(g::text, 18, '0'), 'acct_bench', 'prj_bench', 'identify', 'identify',
       'api:' || md5(g::text), md5(g::text) || '@example.com', now(), now(), '\\x7b7d', '{}',
       '{"email": "seed@example.com"}', 'processed', 1
FROM generate_series(1, %s) AS g
"""


@contextmanager
def database(server: str, name: str, revision: str, seed: int) -> Iterator[psycopg.Connection[Any]]:
    """A database of its own at `revision`, seeded, dropped on exit."""
    admin = psycopg.connect(server, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(drivername="postgresql+psycopg", database=name)
    try:
        upgrade(url.render_as_string(hide_password=False), revision)
        conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        conn.autocommit = True
        conn.execute("INSERT INTO accounts (id, name, created_at) VALUES ('acct_bench', 'bench', now())")
        conn.execute(
            "INSERT INTO projects (id, account_id, slug, name, created_at) "
            "VALUES ('prj_bench', 'acct_bench', 'default', 'Default', now())"
        )
        conn.execute(
            "INSERT INTO api_keys (id, account_id, name, prefix, secret_hash, scopes, created_at) "
            "VALUES ('key_bench', 'acct_bench', 'bench', 'trb_bench', %s, '[\"ingest\"]', now())",
            (secrets.token_hex(32),),
        )
        if seed:
            conn.execute(SEED, (seed,))
            conn.execute("VACUUM ANALYZE events")
        with conn:
            yield conn
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def backend_cpu(conn: psycopg.Connection[Any]) -> float | None:
    """Seconds of CPU the connection's backend has used, if its process is on this machine."""
    pid = conn.info.backend_pid
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def payload(rows: int, webhook: tuple[bytes, dict[str, Any]] | None = None) -> tuple[bytes, str]:
    """`rows` new events, built as the web builds them, as the shared write sends them: identify
    calls, or deliveries of the `webhook` body (its bytes and what they parse to, parsed once)."""
    now = utcnow()
    made = []
    for _ in range(rows):
        email = f"{secrets.token_hex(6)}@example.com"
        if webhook is None:
            message = {"email": email, "name": "Bench User", "status": "trial", "params": {"plan": "pro"}}
            body, channel, kind = json.dumps(message).encode(), "identify", "identify"
            provider_id, dedup_key = None, f"api:{secrets.token_hex(8)}"
        else:
            body, message = webhook
            channel, kind = "stripe", str(message.get("type", "webhook"))
            provider_id = f"evt_{secrets.token_hex(8)}"
            dedup_key = f"{channel}:{provider_id}"
        row = event_row(
            account_id="acct_bench",
            project_id="prj_bench",
            channel=channel,
            type=kind,
            occurred_at=now,
            received_at=now,
            body=body,
            email=email,
            dedup_key=dedup_key,
            provider_event_id=provider_id,
            payload=message,
        )
        made.append(row)
    return pg_event_writes.parameters(made, ["key_bench"] * rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", required=True, help="The revision to compare head with.")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", default="100,4", help="Rows per statement (comma separated).")
    parser.add_argument("--statements", type=int, default=600, help="Statements per row count and database.")
    parser.add_argument("--seed", type=int, default=300_000, help="Events stored beforehand.")
    parser.add_argument("--body", type=Path, help="A webhook body for every row (default: identify calls).")
    args = parser.parse_args()
    raw = args.body.read_bytes() if args.body else None
    webhook = (raw, json.loads(raw)) if raw is not None else None
    stamp = secrets.token_hex(3)
    with (
        database(args.pg, f"tributary_insert_head_{stamp}", "head", args.seed) as head,
        database(args.pg, f"tributary_insert_before_{stamp}", args.against, args.seed) as before,
    ):
        conns = {"head": head, args.against: before}
        for rows in (int(n) for n in args.rows.split(",")):
            sent = {name: [payload(rows, webhook) for _ in range(args.statements)] for name in conns}
            took: dict[str, list[float]] = {name: [] for name in conns}
            cpu = {name: backend_cpu(conn) for name, conn in conns.items()}
            for n in range(args.statements):
                order = list(conns) if n % 2 == 0 else list(conns)[::-1]
                for name in order:
                    started = time.perf_counter()
                    stored = conns[name].execute(pg_event_writes.BATCH, sent[name][n]).fetchall()
                    took[name].append(time.perf_counter() - started)
                    assert len(stored) == rows, (name, len(stored))
            for name, times in took.items():
                times.sort()
                quartiles = statistics.quantiles(times, n=4)
                started_cpu, ended_cpu = cpu[name], backend_cpu(conns[name])
                used = ""
                if started_cpu is not None and ended_cpu is not None:
                    used = f"{1000 * (ended_cpu - started_cpu) / len(times):.3f}"
                print(
                    f"{rows:>4} rows  {name:<32} median {1000 * statistics.median(times):.3f} ms"
                    f"  (quartiles {1000 * quartiles[0]:.3f}-{1000 * quartiles[2]:.3f})"
                    + (f"  backend CPU {used} ms a statement" if used else "")
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
