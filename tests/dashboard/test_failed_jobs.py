"""The read-only failed jobs page: real RQ jobs failing in a real worker, shown within tenancy."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.app.customer_data import (  # noqa: F401 - import_connector: autouse fixture
    create_project,
    import_connector,
    import_customer,
)
from tests.dashboard.helpers import sign_in
from tests.helpers import make_key
from tributary.runtime.process import Runtime
from tributary.workers.worker import TributaryWorker


def explode(message: str) -> None:
    raise RuntimeError(message)


def test_failed_jobs_show_the_error_and_the_event_within_the_viewers_project(
    client: FlaskClient, runtime: Runtime, admin_key: str
) -> None:
    create_project(client, admin_key, "shop")
    in_default = import_customer(runtime, "a@example.com")
    in_shop = import_customer(runtime, "b@example.com", project="shop")
    for event_id in (in_default, in_shop):
        runtime.queue.enqueue(explode, f"boom for {event_id}", job_id=f"event-{event_id}")
    runtime.queue.enqueue(explode, "drain crashed", job_id="not-an-event")
    # Only the test jobs: the stored events' own drain job is left for nobody.
    TributaryWorker(runtime).work(burst=True, logging_level="WARNING")

    sign_in(client, admin_key)
    page = client.get("/dashboard/failed-jobs").get_data(as_text=True)
    assert f"RuntimeError: boom for {in_default}" in page and f"RuntimeError: boom for {in_shop}" in page
    assert f'href="/dashboard/events/{in_default}"' in page and "drain crashed" in page

    bound = client.application.test_client()
    sign_in(bound, make_key(runtime, ["read"], project="shop"))
    page = bound.get("/dashboard/failed-jobs").get_data(as_text=True)
    assert f"boom for {in_shop}" in page
    assert f"boom for {in_default}" not in page and "drain crashed" not in page
