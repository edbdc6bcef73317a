"""The Python SDK against a real Tributary (see conftest.py)."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import textwrap
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import Server, eventually

from tributary_sdk import (
    AsyncTributary,
    AuthenticationError,
    Customer,
    EventAccepted,
    NotFound,
    PermissionDenied,
    Tributary,
    TributaryError,
    ValidationError,
)


def _customer(client: Tributary, email: str) -> Customer | None:
    try:
        return client.customers.get(email)
    except NotFound:
        return None


def _all(
    client: Tributary, params: dict[str, Any], count: int, page_size: int = 200
) -> list[Customer] | None:
    """Every customer with these params, once the worker has applied all `count` of them."""
    found = list(client.customers.list(params=params, page_size=page_size))
    assert len(found) <= count
    return found if len(found) == count else None


def test_background_identify_and_ping_are_batched_and_applied(server: Server, unique: str) -> None:
    errors: list[Any] = []
    client = Tributary(server.admin_key, base_url=server.url, on_error=lambda e, m: errors.append((e, m)))
    reader = Tributary(server.admin_key, base_url=server.url, sync=True)
    before = datetime.now(timezone.utc)
    for n in range(30):
        assert (
            client.identify(f"{unique}-{n}@example.com", status="trial", params={"n": n, "tag": unique})
            is None
        )
    client.ping(f"{unique}-0@example.com")
    assert client.flush(timeout=10)
    assert client.queued == 0 and not errors
    ada = eventually(lambda: _customer(reader, f"{unique}-29@example.com"))
    assert ada.projects["default"].status == "trial"
    assert ada.projects["default"].params == {"n": 29, "tag": unique}
    # The call time travels with the message: the event time is when identify() was called.
    assert ada.last_activity_at is not None and before <= ada.last_activity_at <= datetime.now(timezone.utc)
    eventually(lambda: _all(reader, {"tag": unique}, 30))
    assert client.shutdown()
    reader.shutdown()


def test_sync_mode_returns_results_and_raises_typed_errors(server: Server, unique: str) -> None:
    client = Tributary(server.admin_key, base_url=server.url, sync=True)
    first = client.identify(f"{unique}@example.com", name="Ada", message_id=f"m-{unique}")
    assert isinstance(first, EventAccepted) and first.event_id.startswith("evt_") and not first.duplicate
    again = client.identify(f"{unique}@example.com", name="Ada", message_id=f"m-{unique}")
    assert again == EventAccepted(first.event_id, duplicate=True)
    with pytest.raises(ValidationError) as conflict:  # the same id for another message
        client.identify(f"{unique}@example.com", name="Grace", message_id=f"m-{unique}")
    assert conflict.value.status == 409 and conflict.value.code == "idempotency_conflict"
    pinged = client.ping(f"{unique}@example.com", timestamp=datetime.now(timezone.utc) - timedelta(days=1))
    assert pinged is not None and not pinged.duplicate
    with pytest.raises(ValidationError) as bad:
        client.identify("not an email")
    assert bad.value.status == 400 and bad.value.details[0]["field"] == "email"
    with pytest.raises(ValidationError):
        client.identify(f"{unique}@example.com", params={"x": float("nan")})
    with pytest.raises(NotFound) as missing:
        client.identify(f"{unique}@example.com", project="no-such-project")
    assert missing.value.code == "project_not_found"
    with pytest.raises(AuthenticationError):
        Tributary("trb_wrong", base_url=server.url, sync=True).ping(f"{unique}@example.com")
    reader = Tributary(server.key(["read"]), base_url=server.url, sync=True)
    with pytest.raises(PermissionDenied):
        reader.ping(f"{unique}@example.com")
    with pytest.raises(NotFound):
        reader.customers.get(f"nobody-{unique}@example.com")
    assert issubclass(NotFound, TributaryError)
    client.shutdown()


def test_read_api_pages_filters_timeline_and_erase(server: Server, unique: str) -> None:
    client = Tributary(server.admin_key, base_url=server.url, sync=True)
    for n in range(5):
        client.identify(
            f"{unique}-{n}+x@example.com", status="paid" if n % 2 else "free", params={"t": unique}
        )
    every = eventually(lambda: _all(client, {"t": unique}, 5, page_size=2))
    assert len({c.id for c in every}) == 5
    paid = list(client.customers.list(project="default", status="paid", params={"t": unique}, page_size=1))
    assert sorted(c.email for c in paid) == [f"{unique}-1+x@example.com", f"{unique}-3+x@example.com"]
    assert [c.email for c in client.customers.list(q=f"{unique}-4")] == [f"{unique}-4+x@example.com"]
    assert list(client.customers.list(params={"t": unique}, active_since="2999-01-01T00:00:00Z")) == []
    one = client.customers.get(f"{unique}-1+x@example.com")
    assert client.customers.get(one.id) == one
    timeline = list(client.customers.timeline(one.id, page_size=1))
    assert timeline and timeline[0].event is not None and timeline[0].kind == "identify"
    client.customers.erase(one.id)
    with pytest.raises(NotFound):
        client.customers.get(one.id)
    client.shutdown()


def test_background_errors_go_to_on_error_never_to_the_caller(server: Server, unique: str) -> None:
    errors: list[tuple[TributaryError, list[dict[str, Any]]]] = []
    client = Tributary(server.admin_key, base_url=server.url, on_error=lambda e, m: errors.append((e, m)))
    client.identify("not an email")
    client.identify(f"{unique}@example.com", params={"bad": float("inf")})
    client.identify(f"{unique}@example.com", params={"when": datetime(2026, 1, 1, tzinfo=timezone.utc)})
    client.identify(f"{unique}@example.com", params=5)  # type: ignore[arg-type]
    assert errors and errors[0][0].code == "invalid_arguments"  # reported at once, not raised
    errors.clear()
    assert client.flush(timeout=10)
    assert sorted(type(e).__name__ for e, _ in errors) == ["ValidationError", "ValidationError"]
    assert {m[0]["email"] for _, m in errors} == {"not an email", f"{unique}@example.com"}
    with pytest.raises(ValidationError):
        Tributary(server.admin_key, base_url=server.url, sync=True).identify("a@b.co", params=5)  # type: ignore[arg-type]
    stored = eventually(lambda: _customer(client, f"{unique}@example.com"))
    assert stored.projects["default"].params == {"when": "2026-01-01T00:00:00+00:00"}
    locked_out = Tributary("trb_wrong", base_url=server.url, on_error=lambda e, m: errors.append((e, m)))
    locked_out.ping(f"{unique}@example.com")
    assert locked_out.flush(timeout=10)
    assert isinstance(errors[-1][0], AuthenticationError)
    client.shutdown()
    locked_out.shutdown()


def test_async_client_has_the_same_surface(server: Server, unique: str) -> None:
    async def scenario() -> None:
        async with AsyncTributary(server.admin_key, base_url=server.url) as background:
            await background.identify(f"{unique}-a@example.com", status="paid", params={"t": unique})
            await background.ping(f"{unique}-a@example.com")
            assert await background.flush(timeout=10)
        client = AsyncTributary(server.admin_key, base_url=server.url, sync=True)
        accepted = await client.identify(f"{unique}-b@example.com", params={"t": unique})
        assert accepted is not None and accepted.event_id.startswith("evt_")
        with pytest.raises(ValidationError):
            await client.ping("nope")
        for _ in range(200):
            found = [c async for c in client.customers.list(params={"t": unique}, page_size=1)]
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted(c.email for c in found) == [f"{unique}-a@example.com", f"{unique}-b@example.com"]
        paid = await client.customers.get(f"{unique}-a@example.com")
        assert paid.projects["default"].status == "paid"
        assert [e async for e in client.customers.timeline(paid.id)]
        await client.customers.erase(paid.id)
        with pytest.raises(NotFound):
            await client.customers.get(paid.id)
        await client.shutdown()

    asyncio.run(scenario())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_gets_its_own_working_sender(server: Server, unique: str) -> None:
    client = Tributary(server.admin_key, base_url=server.url)
    client.identify(f"{unique}-parent@example.com")
    assert client.flush(timeout=10)  # the parent's sender thread is running
    client.identify(f"{unique}-queued-in-parent@example.com")  # still queued at fork time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            client.identify(f"{unique}-child@example.com")
            code = 0 if client.flush(timeout=10) and client.queued == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.flush(timeout=10)
    reader = Tributary(server.admin_key, base_url=server.url, sync=True)
    for who in ("parent", "child", "queued-in-parent"):
        assert eventually(functools.partial(_customer, reader, f"{unique}-{who}@example.com"))
    client.shutdown()
    reader.shutdown()


def test_messages_queued_at_interpreter_exit_are_sent(server: Server, unique: str) -> None:
    script = textwrap.dedent(
        f"""
        from tributary_sdk import Tributary
        client = Tributary({server.admin_key!r}, base_url={server.url!r}, flush_interval=60)
        for n in range(3):
            client.identify(f"{unique}-{{n}}@example.com")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    reader = Tributary(server.admin_key, base_url=server.url, sync=True)
    for n in range(3):
        assert eventually(functools.partial(_customer, reader, f"{unique}-{n}@example.com"))
    reader.shutdown()


def test_batches_go_out_by_size_and_by_time_without_flush(server: Server, unique: str) -> None:
    by_size = Tributary(server.admin_key, base_url=server.url, batch_size=5, flush_interval=600)
    for n in range(5):
        by_size.identify(f"{unique}-size-{n}@example.com")
    by_time = Tributary(server.admin_key, base_url=server.url, flush_interval=0.2)
    by_time.identify(f"{unique}-time@example.com")
    reader = Tributary(server.admin_key, base_url=server.url, sync=True)
    assert eventually(functools.partial(_customer, reader, f"{unique}-size-4@example.com"), timeout=10)
    assert eventually(functools.partial(_customer, reader, f"{unique}-time@example.com"), timeout=10)
    assert by_size.queued == 0 and by_time.queued == 0
    for client in (by_size, by_time, reader):
        client.shutdown()
