"""`tributary import clerk|workos|supabase`: the user-listing APIs, paged, with a 429 and a 500
mid-way, resumed after an interruption, through each connector's own normalization."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import responses
from flask.testing import FlaskClient
from sqlalchemy import func, select

from tests.helpers import customer
from tests.imports.fake_apis import FakeUsers, auth_user
from tests.imports.test_stripe_import import NO_WAIT, _start
from tributary.models import Event, ImportCheckpoint
from tributary.runtime.process import Runtime
from tributary.workers.importers import users as users_module
from tributary.workers.importers.stripe_list import ImportFailed
from tributary.workers.imports import execute

T0 = 1767225600
KINDS = ("clerk", "workos", "supabase")
OPTIONS = {
    "clerk": {"api_key": "sk_test_clerk"},
    "workos": {"api_key": "sk_test_workos"},
    "supabase": {"api_key": "service-role-key", "api_url": "https://proj.supabase.co"},
}


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(users_module, "PAGE_SIZE", 3)


def _source(client: FlaskClient, admin: dict[str, str], kind: str) -> str:
    response = client.post("/v1/sources", json={"connector": kind, "options": OPTIONS[kind]}, headers=admin)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["options"]["api_key"] != OPTIONS[kind]["api_key"]  # masked
    source_id: str = response.get_json()["id"]
    return source_id


def _users(kind: str, count: int) -> list[dict[str, object]]:
    # Every other user changed after signing up: a signup event and an update event.
    return [auth_user(kind, n, T0 + n * 60, T0 + n * 60 + (3600 if n % 2 else 0)) for n in range(count)]


@pytest.mark.parametrize("kind", KINDS)
def test_user_import_pages_through_429_and_500_and_creates_each_person(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, kind: str
) -> None:
    source_id = _source(client, admin, kind)
    fake = FakeUsers(kind, _users(kind, 8), failures={1: 429, 2: 500})
    with responses.RequestsMock() as api:
        fake.register(api)
        tally = execute(runtime, _start(runtime, source_id, kind), backoff=NO_WAIT)
    assert tally.counts["listed"] == 8 and tally.counts["created"] == 8 and tally.counts["failed"] == 0
    assert tally.counts["stored"] == 8 + 4  # four users also have an update event
    assert fake.calls[1] == fake.calls[2] == fake.calls[3]  # the failed page, asked again
    token = admin["Authorization"].split()[1]
    record = customer(client, token, "user7@example.com")
    assert record["name"] == "User7 Example"
    assert record["projects"]["default"]["status"] == "free"
    assert [i["source"] for i in record["identities"]] == [kind]
    assert record["projects"]["default"]["first_seen_at"].startswith("2026-01-01T00:07:00")


@pytest.mark.parametrize("kind", KINDS)
def test_user_import_resumes_after_an_interruption(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, kind: str
) -> None:
    source_id = _source(client, admin, kind)
    fake = FakeUsers(kind, _users(kind, 10), fail_from=2)
    with responses.RequestsMock() as api:
        fake.register(api)
        with pytest.raises(ImportFailed, match="kept failing"):
            execute(runtime, _start(runtime, source_id, kind), backoff=NO_WAIT)
    with runtime.db.session() as session:
        [checkpoint] = session.scalars(select(ImportCheckpoint))
        assert checkpoint.stream == "users" and checkpoint.cursor and not checkpoint.done
    fake.fail_from, fake.calls = None, []
    with responses.RequestsMock() as api:
        fake.register(api)
        tally = execute(runtime, _start(runtime, source_id, kind), backoff=NO_WAIT)
    # Two pages were read before the failure: the resumed run starts at the third.
    assert tally.counts["listed"] == 4 and tally.counts["failed"] == 0, tally.counts
    with runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 10 + 5
        assert session.scalar(select(func.count()).select_from(ImportCheckpoint)) == 0
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "user9@example.com")["projects"]["default"]["status"] == "free"


def test_a_newer_clerk_webhook_wins_over_the_import(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None]
) -> None:
    source_id = _source(client, admin, "clerk")
    client.post(f"/v1/sources/{source_id}/secrets", json={"secret": SECRET}, headers=admin)
    user = auth_user("clerk", 0, T0, T0)
    fake = FakeUsers("clerk", [user])
    with responses.RequestsMock() as api:
        fake.register(api)
        execute(runtime, _start(runtime, source_id, "clerk"), backoff=NO_WAIT)
    renamed = dict(user, first_name="Renamed", updated_at=(T0 + 60) * 1000)
    _post_clerk(
        client,
        source_id,
        {"type": "user.updated", "object": "event", "timestamp": (T0 + 60) * 1000, "data": renamed},
    )
    drain()
    with responses.RequestsMock() as api:  # importing again (stale list) changes nothing
        fake.register(api)
        tally = execute(runtime, _start(runtime, source_id, "clerk"), backoff=NO_WAIT)
    assert tally.counts["stored"] == 0
    token = admin["Authorization"].split()[1]
    assert customer(client, token, "user0@example.com")["name"] == "Renamed Example"


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _post_clerk(client: FlaskClient, source_id: str, body: dict[str, object]) -> None:
    import json

    from tributary.connectors.testkit import svix_headers

    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **svix_headers(raw, SECRET, msg_id="msg_renamed")}
    response = client.post(f"/webhooks/{source_id}", data=raw, headers=headers)
    assert response.status_code == 200, response.get_json()


WEBHOOK_SECRETS = {
    "clerk": SECRET,
    "workos": "workos_secret_0123456789",
    "supabase": "supabase-db-hook-secret",
}


def _deliver(
    client: FlaskClient, kind: str, source_id: str, event_type: str, user: dict[str, Any], at: int
) -> None:
    """The provider's webhook for `user` at Unix time `at`, signed the provider's way."""
    import json

    from tributary.connectors.testkit import static_secret_headers, svix_headers, workos_headers

    secret = WEBHOOK_SECRETS[kind]
    if kind == "clerk":
        body: dict[str, Any] = {"object": "event", "type": event_type, "timestamp": at * 1000, "data": user}
    elif kind == "workos":
        body = {
            "id": f"event_{event_type}_{user['id']}",
            "event": event_type,
            "data": user,
            "created_at": datetime.fromtimestamp(at, UTC).isoformat(),
        }
    else:
        row = {k: v for k, v in user.items() if k not in ("user_metadata", "app_metadata", "identities")}
        row |= {"raw_user_meta_data": user["user_metadata"], "raw_app_meta_data": user["app_metadata"]}
        old = None if event_type == "INSERT" else {**row, "raw_user_meta_data": {"full_name": "Old Name"}}
        body = {"type": event_type, "schema": "auth", "table": "users", "record": row, "old_record": old}
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if kind == "clerk":
        headers |= svix_headers(raw, secret, msg_id=f"msg_{event_type}_{user['id']}")
    elif kind == "workos":
        headers |= workos_headers(raw, secret)
    else:
        headers |= static_secret_headers(secret, scheme="Bearer")
    response = client.post(f"/webhooks/{source_id}", data=raw, headers=headers)
    assert response.status_code == 200, response.get_json()


def _old_name(kind: str, user: dict[str, Any]) -> dict[str, Any]:
    if kind == "supabase":
        return {**user, "user_metadata": {"full_name": "Old Name"}}
    return {**user, "first_name": "Old"}


def _snapshot(client: FlaskClient, token: str, count: int) -> list[dict[str, Any]]:
    records = []
    for n in range(count):
        record = customer(client, token, f"user{n}@example.com")
        project = record["projects"]["default"]
        records.append(
            {
                "name": record["name"],
                "email": record["email"],
                "identities": record["identities"],
                "status": project["status"],
                "params": project["params"],
                "first_seen_at": project["first_seen_at"],
            }
        )
    return records


@pytest.mark.parametrize("kind", KINDS)
def test_user_import_gives_the_records_the_webhooks_for_the_same_history_give(
    client: FlaskClient, admin: dict[str, str], runtime: Runtime, drain: Callable[[], None], kind: str
) -> None:
    """Webhooks for each user's history (signup, then a rename for every other user), then the
    database is emptied and the import reads the users' current state: the same records."""
    from tests.conftest import _reset

    users = _users(kind, 6)
    token = admin["Authorization"].split()[1]
    source_id = _source(client, admin, kind)
    client.post(f"/v1/sources/{source_id}/secrets", json={"secret": WEBHOOK_SECRETS[kind]}, headers=admin)
    signup, update = {
        "clerk": ("user.created", "user.updated"),
        "workos": ("user.created", "user.updated"),
        "supabase": ("INSERT", "UPDATE"),
    }[kind]
    for n, user in enumerate(users):
        created, updated = T0 + n * 60, T0 + n * 60 + (3600 if n % 2 else 0)
        if updated > created:
            _deliver(client, kind, source_id, signup, _old_name(kind, user), created)
            _deliver(client, kind, source_id, update, user, updated)
        else:
            _deliver(client, kind, source_id, signup, user, created)
    drain()
    from_webhooks = _snapshot(client, token, len(users))

    _reset(runtime)
    from tests.helpers import make_key

    admin_key = make_key(runtime, ["admin"])
    source_id = _source(client, {"Authorization": f"Bearer {admin_key}"}, kind)
    fake = FakeUsers(kind, users)
    with responses.RequestsMock() as api:
        fake.register(api)
        tally = execute(runtime, _start(runtime, source_id, kind), backoff=NO_WAIT)
    assert tally.counts["failed"] == 0
    assert _snapshot(client, admin_key, len(users)) == from_webhooks
