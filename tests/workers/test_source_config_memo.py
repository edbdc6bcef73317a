"""A batch reads each event's source and project once (workers/connector_changes.py
`source_config`), and each event still sees its own source's options (both backends)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.connectors.stripe_helpers import create_source, post_customer_created
from tests.helpers import statements_sent
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch


def _drain_counting_reads(runtime: Runtime) -> dict[str, int]:
    """SELECTs of sources and projects that one batch sends for its events' configuration, and
    apart from them its lock of the projects and accounts it writes for (PostgreSQL's, one
    statement per batch: workers/batch/state.py)."""
    with statements_sent(runtime) as sent:
        assert drain_batch(runtime, 1000) > 0
    locks = [s for s in sent if "FOR KEY SHARE" in s.sql]
    counts = {
        table: sum(s.reads(table) and s not in locks for s in sent) for table in ("sources", "projects")
    }
    assert len(locks) == (1 if runtime.db.is_postgres else 0), [s.sql for s in locks]
    return counts


def test_a_batch_reads_its_source_and_project_once(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    source_id = create_source(client, admin)
    for i in range(6):
        post_customer_created(client, source_id, "memo", i)

    assert _drain_counting_reads(runtime) == {"sources": 1, "projects": 1}
    for i in range(6):
        assert client.get(f"/v1/customers/memo{i}@example.com", headers=admin).status_code == 200


def test_each_event_sees_its_own_sources_options_within_one_batch(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime
) -> None:
    # The fixtures are test-mode events: a source configured for live mode ignores them.
    live = create_source(client, admin, livemode=True)
    test = create_source(client, admin)
    for i in range(3):
        post_customer_created(client, live, "live", i)
        post_customer_created(client, test, "test", i)

    assert _drain_counting_reads(runtime) == {"sources": 2, "projects": 1}  # both in one project
    for i in range(3):
        assert client.get(f"/v1/customers/live{i}@example.com", headers=admin).status_code == 404
        assert client.get(f"/v1/customers/test{i}@example.com", headers=admin).status_code == 200
