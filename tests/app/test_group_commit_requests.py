"""Group commit of requests of several rows (`EventStore.store_rows`: `/v1/batch`, a delivery of
several events): queued behind a write in flight, they share the next statement and commit with
the single stores, each answered with its own rows, all or none of them."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from tests.app.test_group_commit import _key_id, _row, behind_a_held_write, store
from tests.helpers import auth
from tributary.app.event_store import EventStore
from tributary.models import ApiKey, Event
from tributary.models.base import utcnow
from tributary.runtime.process import Runtime

__all__ = ["store"]  # the fixture, shared with test_group_commit.py


def _ids(rows: list[dict[str, Any]]) -> set[str]:
    return {row["id"] for row in rows}


def _requests_behind_a_write(
    store: EventStore, runtime: Runtime, account_id: str, requests: list[tuple[list[dict[str, Any]], str]]
) -> list[set[str] | None]:
    """Each request's rows (with its key) queued behind a single store's write (with the first
    request's key); their results."""
    first = _row(runtime, account_id, 0)
    calls = [partial(store.store, first, requests[0][1])]
    calls += [partial(store.store_rows, rows, key_id) for rows, key_id in requests]
    results = behind_a_held_write(store, runtime, calls)
    assert results[0] is not None  # the single store, written alone
    return results[1:]


def _none_stored(runtime: Runtime, ids: set[str]) -> bool:
    with runtime.db.session() as session:
        return not set(session.scalars(select(Event.id).where(Event.id.in_(ids))))


def test_requests_of_several_rows_share_the_next_write_with_single_ones(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    key_id = _key_id(runtime)
    first = _row(runtime, account_id, 0)
    batch_a = [_row(runtime, account_id, n) for n in range(1, 4)]
    batch_b = [_row(runtime, account_id, n) for n in range(4, 8)]
    single = _row(runtime, account_id, 8)
    results = behind_a_held_write(
        store,
        runtime,
        [
            lambda: store.store(first, key_id),
            lambda: store.store_rows(batch_a, key_id),
            lambda: store.store(single, key_id),
            lambda: store.store_rows(batch_b, key_id),
        ],
    )
    assert results == [True, _ids(batch_a), True, _ids(batch_b)]  # each answered with its own rows
    assert (store.batches, store.rows) == (2, 1 + 8)  # the first alone, then eight rows in one


def test_a_request_of_a_revoked_key_stores_none_of_its_rows_and_the_others_store_theirs(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    live, revoked = _key_id(runtime), _key_id(runtime)
    with runtime.db.session() as session, session.begin():
        session.get_one(ApiKey, revoked).revoked_at = utcnow()
    refused = [_row(runtime, account_id, n) for n in range(1, 4)]
    stored = [_row(runtime, account_id, n) for n in range(4, 6)]
    results = _requests_behind_a_write(store, runtime, account_id, [(stored, live), (refused, revoked)])
    assert results == [_ids(stored), set()]
    assert _none_stored(runtime, _ids(refused))


def test_a_failed_shared_write_answers_none_and_stores_nothing(
    runtime: Runtime, account_id: str, store: EventStore
) -> None:
    """A bad row in one request fails the shared statement: no request is answered from it (each
    then stores alone, `/v1/batch` through `insert_rows`), and nothing of it was stored."""
    key_id = _key_id(runtime)
    good = [_row(runtime, account_id, n) for n in range(1, 4)]
    bad = [_row(runtime, account_id, 4), _row(runtime, account_id, 5, channel=None)]  # NOT NULL
    results = _requests_behind_a_write(store, runtime, account_id, [(good, key_id), (bad, key_id)])
    assert results == [None, None]
    assert _none_stored(runtime, _ids(good) | _ids(bad))


def test_concurrent_batches_through_the_api_share_one_write(
    client: FlaskClient, admin_key: str, runtime: Runtime
) -> None:
    app_store = EventStore.for_runtime(runtime)
    before = app_store.batches

    def post(prefix: str) -> Callable[[], Any]:
        messages = [{"type": "identify", "email": f"{prefix}{n}@example.com"} for n in range(3)]
        return lambda: client.application.test_client().post(
            "/v1/batch", json={"batch": messages}, headers=auth(admin_key)
        )

    answers = behind_a_held_write(app_store, runtime, [post("lead"), post("b"), post("c")])
    assert [answer.status_code for answer in answers] == [202] * 3
    assert [answer.get_json()["accepted"] for answer in answers] == [3] * 3
    assert app_store.batches - before == 2  # the first batch alone, then the other two in one
