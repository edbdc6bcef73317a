"""The dashboard's operator actions on the ops API (Flask client, real database, Redis and RQ
workers): replay with a dry-run diff then apply, failed-job retry / delete / retry all, deferred
events, refused deliveries. Every POST: CSRF refused without its token, 403 for read keys, 404
across projects."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator

import pytest
import responses
from flask.testing import FlaskClient

from tests.app.customer_data import create_project
from tests.connectors.conftest import stripe_api
from tests.connectors.stripe_helpers import API_KEY, CUSTOMER_ID, EMAIL, create_source, load, post
from tests.dashboard.helpers import page_csrf, sign_in
from tests.helpers import make_key
from tributary.app.metrics import REJECTIONS_KEY, SEP
from tributary.app.rejections import KEEP, RECENT_KEY
from tributary.models.base import isoformat, utcnow
from tributary.runtime.process import Runtime
from tributary.workers.worker import TributaryWorker

__all__ = ["stripe_api"]

LOOKUP = f"https://api.stripe.com/v1/customers/{CUSTOMER_ID}"
STRIPE_DOWN = {
    "status": 500,
    "json": {"error": {"message": "Stripe is having a bad day", "type": "api_error"}},
}
STRIPE_UP = {"json": {"id": CUSTOMER_ID, "object": "customer", "email": EMAIL}}


def work(runtime: Runtime) -> None:
    for _ in range(3):
        TributaryWorker(runtime).work(burst=True, with_scheduler=True, logging_level="WARNING")


def event_id_of(client: FlaskClient, admin: dict[str, str], status: str) -> str:
    [item] = client.get(f"/v1/events?status={status}", headers=admin).get_json()["data"]
    return str(item["id"])


@pytest.fixture
def failed_event(
    client: FlaskClient,
    admin: dict[str, str],
    runtime: Runtime,
    drain: Callable[[], None],
    stripe_api: None,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """A Stripe event whose customer lookup failed twice: `failed`, its job in the failed registry."""
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    source_id = create_source(client, admin, api_key=API_KEY)
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_DOWN)
        api.get(LOOKUP, **STRIPE_DOWN)
        post(client, source_id, load("customer.subscription.updated"))
        drain()
        work(runtime)
    yield event_id_of(client, admin, "failed")


@pytest.fixture
def read_client(client: FlaskClient, runtime: Runtime) -> FlaskClient:
    other = client.application.test_client()
    sign_in(other, make_key(runtime, ["read"]))
    return other


@pytest.fixture
def other_project_admin(client: FlaskClient, runtime: Runtime, admin_key: str) -> FlaskClient:
    create_project(client, admin_key, "shop")
    other = client.application.test_client()
    sign_in(other, make_key(runtime, ["admin"], project="shop"))
    return other


def test_event_page_shows_attempts_masked_headers_and_the_replay_preview_then_applies_it(
    client: FlaskClient, admin: dict[str, str], admin_key: str, failed_event: str
) -> None:
    sign_in(client, admin_key)
    page = client.get(f"/dashboard/events/{failed_event}").get_data(as_text=True)
    assert page.count("Stripe is having a bad day") >= 2  # the last error and each attempt
    assert "Preview replay" in page and "Apply replay" not in page
    listed = client.get("/dashboard/events?status=failed").get_data(as_text=True)
    assert failed_event in listed

    token = page_csrf(client, f"/dashboard/events/{failed_event}")
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_UP)
        preview = client.post(
            f"/dashboard/events/{failed_event}/replay", data={"csrf_token": token, "action": "preview"}
        )
    text = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "Apply replay" in text
    assert "projects.default.status" in text and "&#34;paid&#34;" in text  # the diff: → "paid"
    assert client.get(f"/v1/events/{failed_event}", headers=admin).get_json()["status"] == "failed"

    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_UP)
        applied = client.post(
            f"/dashboard/events/{failed_event}/replay", data={"csrf_token": token, "action": "apply"}
        )
    text = applied.get_data(as_text=True)
    assert applied.status_code == 200 and "Replayed" in text
    assert re.search(r'id="event-status"><span class="badge tone-good">processed', text)
    assert client.get(f"/v1/events/{failed_event}", headers=admin).get_json()["status"] == "processed"
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] == []


def test_failed_job_retry_and_delete_buttons(
    client: FlaskClient, admin: dict[str, str], admin_key: str, runtime: Runtime, failed_event: str
) -> None:
    sign_in(client, admin_key)
    job_id = f"event-{failed_event}"
    page = client.get("/dashboard/failed-jobs").get_data(as_text=True)
    assert "CustomerLookupFailed: " in page and "Retry all (1)" in page
    assert f'action="/dashboard/failed-jobs/{job_id}/retry"' in page
    token = page_csrf(client, "/dashboard/failed-jobs")

    # Delete asks first; the event stays failed and listed.
    confirm = client.get(f"/dashboard/failed-jobs/{job_id}/delete")
    assert confirm.status_code == 200 and "Delete job" in confirm.get_data(as_text=True)
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] != []
    deleted = client.post(f"/dashboard/failed-jobs/{job_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 302
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] == []
    assert client.get(f"/v1/events/{failed_event}", headers=admin).get_json()["status"] == "failed"
    again = client.post(f"/dashboard/failed-jobs/{job_id}/delete", data={"csrf_token": token})
    assert again.status_code == 404


def test_retry_and_retry_all_requeue_and_the_worker_processes(
    client: FlaskClient, admin: dict[str, str], admin_key: str, runtime: Runtime, failed_event: str
) -> None:
    sign_in(client, admin_key)
    token = page_csrf(client, "/dashboard/failed-jobs")
    job_id = f"event-{failed_event}"
    retried = client.post(f"/dashboard/failed-jobs/{job_id}/retry", data={"csrf_token": token})
    assert retried.status_code == 302
    assert client.get("/v1/jobs/failed", headers=admin).get_json()["data"] == []
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_DOWN)
        work(runtime)  # fails again: back in the registry after its retry budget
    assert len(client.get("/v1/jobs/failed", headers=admin).get_json()["data"]) == 1
    all_retried = client.post("/dashboard/failed-jobs/retry", data={"csrf_token": token})
    assert all_retried.status_code == 302
    assert all_retried.headers["Location"].endswith("/dashboard/failed-jobs")
    with responses.RequestsMock() as api:
        api.get(LOOKUP, **STRIPE_UP)
        work(runtime)
    assert client.get(f"/v1/events/{failed_event}", headers=admin).get_json()["status"] == "processed"
    assert "No failed jobs." in client.get("/dashboard/failed-jobs").get_data(as_text=True)


def _posts(event_id: str) -> list[tuple[str, dict[str, str]]]:
    job_id = f"event-{event_id}"
    return [
        (f"/dashboard/events/{event_id}/replay", {"action": "preview"}),
        (f"/dashboard/events/{event_id}/replay", {"action": "apply"}),
        (f"/dashboard/failed-jobs/{job_id}/retry", {}),
        (f"/dashboard/failed-jobs/{job_id}/delete", {}),
        ("/dashboard/failed-jobs/retry", {}),
    ]


def test_every_new_post_refuses_a_missing_csrf_token(
    client: FlaskClient, admin: dict[str, str], admin_key: str, failed_event: str
) -> None:
    sign_in(client, admin_key)
    for path, form in _posts(failed_event):
        response = client.post(path, data=form)
        assert response.status_code == 403, path
        assert client.post(path, data={**form, "csrf_token": "forged"}).status_code == 403, path
    assert client.get(f"/v1/events/{failed_event}", headers=admin).get_json()["status"] == "failed"
    assert len(client.get("/v1/jobs/failed", headers=admin).get_json()["data"]) == 1


def test_read_keys_see_no_buttons_and_get_403(
    client: FlaskClient, admin: dict[str, str], read_client: FlaskClient, failed_event: str
) -> None:
    jobs = read_client.get("/dashboard/failed-jobs").get_data(as_text=True)
    assert "Stripe is having a bad day" in jobs
    assert "Retry all" not in jobs and 'aria-label="Retry' not in jobs and "Delete…" not in jobs
    assert "<form" not in jobs.split("</header>")[1]  # no form but the sign-out one
    event = read_client.get(f"/dashboard/events/{failed_event}").get_data(as_text=True)
    assert "Preview replay" not in event and 'id="replay"' not in event
    token = page_csrf(read_client, "/dashboard/failed-jobs")
    for path, form in _posts(failed_event):
        assert read_client.post(path, data={**form, "csrf_token": token}).status_code == 403, path
    assert read_client.get(f"/dashboard/failed-jobs/event-{failed_event}/delete").status_code == 403
    assert len(client.get("/v1/jobs/failed", headers=admin).get_json()["data"]) == 1


def test_another_projects_admin_gets_404_and_sees_nothing(
    client: FlaskClient, admin: dict[str, str], other_project_admin: FlaskClient, failed_event: str
) -> None:
    other = other_project_admin
    assert "No failed jobs." in other.get("/dashboard/failed-jobs").get_data(as_text=True)
    assert failed_event not in other.get("/dashboard/events?status=failed").get_data(as_text=True)
    assert other.get(f"/dashboard/events/{failed_event}").status_code == 404
    token = page_csrf(other, "/dashboard/failed-jobs")
    for path, form in _posts(failed_event):
        if path.endswith("/failed-jobs/retry"):
            continue  # retry all: nothing of another project to retry (checked below)
        assert other.post(path, data={**form, "csrf_token": token}).status_code == 404, path
    assert other.get(f"/dashboard/failed-jobs/event-{failed_event}/delete").status_code == 404
    assert other.post("/dashboard/failed-jobs/retry", data={"csrf_token": token}).status_code == 302
    assert len(client.get("/v1/jobs/failed", headers=admin).get_json()["data"]) == 1
    assert client.get(f"/v1/events/{failed_event}", headers=admin).get_json()["status"] == "failed"


def test_deferred_events_show_their_awaited_identity_and_count(
    client: FlaskClient, admin: dict[str, str], admin_key: str, drain: Callable[[], None]
) -> None:
    source_id = create_source(client, admin)  # no api_key: nobody can tell the customer's email
    post(client, source_id, load("customer.subscription.updated"))
    drain()
    event_id = event_id_of(client, admin, "deferred")
    sign_in(client, admin_key)
    listed = client.get("/dashboard/events?status=deferred").get_data(as_text=True)
    assert event_id in listed and '<option value="deferred" selected>' in listed
    detail = client.get(f"/dashboard/events/{event_id}").get_data(as_text=True)
    assert f"stripe:{CUSTOMER_ID}" in detail and "tone-info" in detail
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert re.search(r"Deferred events</span><span class=\"stat-value\">1<", overview)


def test_bad_event_filters_answer_400_with_the_reasons(client: FlaskClient, admin_key: str) -> None:
    sign_in(client, admin_key)
    response = client.get("/dashboard/events?status=nope&source=bad")
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and "<code>status</code>" in text and "<code>source</code>" in text


def test_refused_deliveries_show_on_sources_and_overview(
    client: FlaskClient, admin: dict[str, str], admin_key: str
) -> None:
    source_id = create_source(client, admin)
    for _ in range(2):
        assert post(client, source_id, load("customer.created"), secret="whsec_wrong").status_code == 400
    sign_in(client, admin_key)
    sources = client.get("/dashboard/sources").get_data(as_text=True)
    assert "invalid_signature \u00d7 2" in sources and "Refused deliveries" in sources
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert "Sources refusing deliveries" in overview
    assert re.search(r"<strong>2</strong> refused", overview)


def test_the_overview_names_only_sources_refusing_in_the_last_day(
    client: FlaskClient, admin: dict[str, str], admin_key: str, runtime: Runtime
) -> None:
    source_id = create_source(client, admin)
    old = {"at": "2026-01-01T00:00:00Z", "reason": "invalid_signature", "status": 400, "remote_addr": None,
           "user_agent": None, "body_bytes": 2, "body_sha256": None}  # fmt: skip
    runtime.redis.lpush(RECENT_KEY.format(source_id), json.dumps(old))
    runtime.redis.hincrby(REJECTIONS_KEY, f"{source_id}{SEP}invalid_signature", 1)
    sign_in(client, admin_key)
    assert "Sources refusing deliveries" not in client.get("/dashboard/").get_data(as_text=True)
    assert 'datetime="2026-01-01T00:00:00Z"' in client.get("/dashboard/sources").get_data(as_text=True)
    fresh = [{**old, "at": isoformat(utcnow())} for _ in range(KEEP)]
    runtime.redis.lpush(RECENT_KEY.format(source_id), *[json.dumps(e) for e in fresh])
    client.application.extensions.pop("tributary.dashboard.overview", None)
    overview = client.get("/dashboard/").get_data(as_text=True)
    assert f"<strong>{KEEP}+</strong> refused" in overview
