"""A read-side dataset generated inside PostgreSQL: 1,000,000 customers in three projects.

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/reads_1m tributary db upgrade
    DATABASE_URL=… python bench/readside_data.py [--customers 1000000]

Fills a migrated, otherwise empty database with `generate_series` (no rows travel through Python:
about a minute for a million customers here), then `VACUUM ANALYZE`s it, since the test server runs
with autovacuum off and a live server's autovacuum would have set the visibility map and statistics.

The shape, chosen to resemble a SaaS install a few years old:
- customers signed up over three years, more of them recently; ids are minted from the signup time
  as the product mints them, and rows are stored in signup order (the order the product writes them);
- 70 % of customers are in one project, 25 % in two, 5 % in all three (`default` 50 %, `shop` 35 %,
  `app` 15 % as the first), about 1.35 rows in `customer_projects` per customer;
- 3 % never active; the others' last activity skews recent (about a quarter within 30 days), and a
  customer's activity is the maximum of its projects' (the primary project's);
- status per project row: paid 38 %, free 28 %, canceled 14 %, trial 12 %, past_due 4 %, none 4 %;
- params per project row: `plan` (basic 35 %, pro 25 %, team 20 %, enterprise 5 %, absent 15 %),
  `seats` (a number, mostly small), `beta` (a boolean, 10 % true), `country`; 5 % have no params;
- names from 40 first and 100 last names (8 % without a name), emails `first.last<n>@<domain>`;
- an identity (Stripe 40 %, Clerk 20 %) for some customers, so the list's identity lookups read rows.

`FAMILIES` lists one request per filter family of `GET /v1/customers` that this dataset makes
meaningful (values that exist, in realistic proportions), for whoever times them.
"""

from __future__ import annotations

import argparse
import os
import time

from sqlalchemy import create_engine, text

from tributary.models.session import normalize_url

PROJECTS = ("default", "shop", "app")

# One query string per filter family. `page50` is reached by following `next_cursor` 49 times.
FAMILIES: dict[str, str] = {
    "project+status": "project=shop&status=paid",
    "project+rare status": "project=shop&status=past_due",
    "params (any project)": "params.plan=pro",
    "params rare (any project)": "params.plan=enterprise",
    # 0.6 % of project rows: too common for the GIN index to pay, too rare for the walk to be short.
    "params 0.6 % (any project)": "params.seats=50",
    "params typed (project)": "project=shop&params.beta=true&params.seats=1",
    "q email/name": "q=lovelace",
    "q rare": "q=ada.lovelace12",
    "active_since": "active_since={month_ago}",
    "sort last_activity_at": "sort=last_activity_at",
    "sort -last_activity_at": "sort=-last_activity_at",
    "sort created_at": "sort=created_at",
    "sort -created_at": "sort=-created_at",
    "project sort last_activity_at": "project=app&sort=last_activity_at",
    "page 50 (default sort)": "page50:",
    "page 50 (project+status)": "page50:project=shop&status=paid",
    "page 50 (never active, oldest first)": "page50:sort=last_activity_at",
}

# Each statement runs once, in order, with :account, :p0, :p1, :p2 (the project ids) and :customers.
STATEMENTS = (
    "SELECT setseed(0.42)",
    # A ULID's time part: 10 Crockford base-32 digits of a millisecond clock, most significant first
    # (one expression, so the planner inlines it).
    """CREATE FUNCTION pg_temp.crockford(ms bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
         SELECT """
    + " || ".join(
        f"substr('0123456789abcdefghjkmnpqrstvwxyz', ((ms >> {5 * (9 - k)}) & 31)::int + 1, 1)"
        for k in range(10)
    )
    + """ $$""",
    """CREATE TEMP TABLE gen AS
       SELECT n,
              'cus_' || pg_temp.crockford((extract(epoch FROM created_at) * 1000)::bigint)
                     || substr(md5(n::text), 1, 16) AS id,
              created_at,
              CASE WHEN random() < 0.03 THEN NULL
                   ELSE greatest(created_at, now() - interval '400 days' * power(random(), 2)) END
                AS active_at,
              CASE WHEN r < 0.50 THEN 0 WHEN r < 0.85 THEN 1 ELSE 2 END AS primary_project,
              CASE WHEN m < 0.70 THEN 1 WHEN m < 0.95 THEN 2 ELSE 3 END AS memberships,
              (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Ken','Dennis','Linus','Guido',
                     'Margaret','Frances','John','Radia','Tim','Sophie','Niklaus','Leslie','Shafi',
                     'Hedy','Katherine','Annie','Mary','Jean','Karen','Ivan','Butler','Fran','Adele',
                     'Joan','Evelyn','Lynn','Sally','Marta','Olga','Yuki','Amir','Chen','Priya','Lars']
              )[1 + floor(random() * 40)::int] AS first_name,
              1 + floor(random() * 100)::int AS last_index,
              random() AS r_name,
              (ARRAY['gmail.com','example.com','acme.io','fastmail.com','corp.example.org'])
                [1 + floor(random() * 5)::int] AS domain
       FROM (SELECT n, now() - interval '1095 days' * power(random(), 1.5) AS created_at,
                    random() AS r, random() AS m
             FROM generate_series(1, :customers) AS n) AS draws""",
    """CREATE TEMP TABLE surnames AS
       SELECT ordinality::int AS last_index, name AS last_name
       FROM unnest(ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Thompson','Ritchie',
         'Torvalds','Rossum','Hamilton','Allen','McCarthy','Perlman','Berners','Wilson','Wirth','Lamport',
         'Goldwasser','Lamarr','Johnson','Easley','Keller','Sammet','Jones','Sutherland','Lampson',
         'Bilas','Goldberg','Clarke','Berezin','Conway','Floyd','Tarjan','Hoare','Milner','Backus',
         'Naur','Kay','Engelbart','Cerf','Kahn','Postel','Metcalfe','Boggs','Stallman','Wall','Matsumoto',
         'Eich','Gosling','Stroustrup','Pike','Kernighan','Aho','Weinberger','Bourne','Joy','McIlroy',
         'Ossanna','Hellman','Diffie','Rivest','Shamir','Adleman','Merkle','Bernstein','Schneier',
         'Zimmermann','Neumann','Shannon','Hamming','Huffman','Church','Curry','Kleene','Post','Godel',
         'Cook','Karp','Levin','Valiant','Yao','Blum','Micali','Rabin','Scott','Hartmanis','Stearns',
         'Feigenbaum','Reddy','Minsky','Newell','Simon','Corbato','Kahan','Brooks','Iverson','Codd',
         'Gray','Stonebraker']) WITH ORDINALITY AS s(name, ordinality)""",
    """INSERT INTO customers (id, account_id, email, name, past_emails, clock, created_at, updated_at,
                              last_activity_at)
       SELECT g.id,
              :account,
              lower(g.first_name || '.' || s.last_name) || g.n || '@' || g.domain,
              CASE WHEN g.r_name < 0.08 THEN NULL ELSE g.first_name || ' ' || s.last_name END,
              '[]', '{}', g.created_at, coalesce(g.active_at, g.created_at), g.active_at
       FROM gen AS g JOIN surnames AS s USING (last_index)
       ORDER BY g.created_at""",
    # The primary project (k = 0) carries the customer's activity; others saw it earlier.
    """INSERT INTO customer_projects (customer_id, project_id, status, params, clock, first_seen_at,
                                      last_activity_at, updated_at)
       SELECT id,
              (ARRAY[:p0, :p1, :p2])[1 + (primary_project + k) % 3],
              CASE WHEN rs < 0.04 THEN NULL WHEN rs < 0.16 THEN 'trial' WHEN rs < 0.44 THEN 'free'
                   WHEN rs < 0.82 THEN 'paid' WHEN rs < 0.86 THEN 'past_due' ELSE 'canceled' END,
              CASE WHEN rp < 0.05 THEN '{}'::jsonb ELSE jsonb_strip_nulls(jsonb_build_object(
                'plan', CASE WHEN rq < 0.35 THEN 'basic' WHEN rq < 0.60 THEN 'pro'
                             WHEN rq < 0.80 THEN 'team' WHEN rq < 0.85 THEN 'enterprise' END,
                'seats', 1 + floor(power(random(), 3) * 50)::int,
                'beta', random() < 0.10,
                'country', (ARRAY['US','GB','DE','FR','IN','BR','JP','CA','NL','SE'])
                             [1 + floor(random() * 10)::int])) END,
              '{}', created_at,
              CASE WHEN k = 0 THEN active_at ELSE created_at + (active_at - created_at) * random() END,
              coalesce(active_at, created_at)
       FROM (SELECT g.*, k, random() AS rs, random() AS rp, random() AS rq
             FROM gen AS g CROSS JOIN generate_series(0, 2) AS k
             WHERE k < g.memberships) AS rows
       ORDER BY created_at, k""",
    """INSERT INTO identities (account_id, customer_id, source, external_id, created_at)
       SELECT :account, id, source, prefix || substr(md5(source || n), 1, 14), created_at
       FROM (SELECT g.*, random() AS r FROM gen AS g) AS g
       CROSS JOIN LATERAL (VALUES ('stripe', 'cus_', r < 0.40), ('clerk', 'user_', r >= 0.80))
         AS v(source, prefix, wanted)
       WHERE wanted""",
)


def generate(url: str, customers: int) -> float:
    """Fill the database at `url` (migrated, with its account); returns the seconds it took."""
    started = time.perf_counter()
    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        account = conn.execute(text("SELECT id FROM accounts ORDER BY created_at LIMIT 1")).scalar_one()
        if conn.execute(text("SELECT 1 FROM customers LIMIT 1")).first():
            raise SystemExit("the database already has customers; generate into an empty one")
        for slug in PROJECTS[1:]:
            conn.execute(
                text(
                    "INSERT INTO projects (id, account_id, slug, name, created_at)"
                    " VALUES (:id, :account, :slug, :slug, now()) ON CONFLICT (account_id, slug) DO NOTHING"
                ),
                {"id": f"prj_bench_{slug}", "slug": slug, "account": account},
            )
        ids: dict[str, str] = dict(
            conn.execute(text("SELECT slug, id FROM projects WHERE account_id = :a"), {"a": account}).all()
        )
        binds = {
            "account": account,
            "customers": customers,
            **{f"p{i}": ids[s] for i, s in enumerate(PROJECTS)},
        }
        for statement in STATEMENTS:
            conn.execute(text(statement), binds)
            print(f"  {' '.join(statement.split())[:60]}… {time.perf_counter() - started:.0f} s", flush=True)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql"):
        raise SystemExit("set DATABASE_URL to a migrated PostgreSQL database")
    seconds = generate(url, args.customers)
    print(f"generated {args.customers:,} customers in {seconds:.0f} s")


if __name__ == "__main__":
    main()
