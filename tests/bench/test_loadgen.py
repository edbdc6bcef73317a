"""The open-loop load generator (bench/loadgen.py) against small servers written here, each
misbehaving in one way a real server can: every request is answered or counted as an error, the
schedule is kept, keep-alive connections are reused, and visibility is polled until it shows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bench.http_pool import parse_head
from bench.loadgen import run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """(method, path, body) of the next request on a connection; None once the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ")
    length = next(
        int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length"
    )
    return method, path, await reader.readexactly(length)


def response(status: int, body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def serve_and_load(handler: Handler, spec: dict[str, Any]) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await run({"port": port, "kind": "identify", "token": "t", "prefix": "lg", **spec})

    return asyncio.run(main())


def test_every_request_is_answered_over_a_few_reused_connections() -> None:
    bodies: list[dict[str, Any]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while (request := await read_request(reader)) is not None:
            bodies.append(json.loads(request[2]))
            # The answer in three writes, cut in its head and in its body: the client must wait
            # for the whole, or the rest would be read as the next answer's start.
            answer = response(202, b'{"event_id":"evt_1","duplicate":false}')
            for part in (answer[:20], answer[20:-10], answer[-10:]):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.close()

    started = time.monotonic()
    result = serve_and_load(handler, {"rate": 200, "duration": 1})

    assert result["scheduled"] == 200
    assert result["statuses"] == {"202": 200}
    assert result["unanswered"] == 0
    assert result["latency_ms"]["count"] == 200
    # Open loop: the schedule took its second, whatever the answers did.
    assert 0.95 <= result["sending_seconds"] <= 1.2 and time.monotonic() - started < 5
    assert result["send_lag_ms"]["p99"] < 100
    assert sorted(b["email"] for b in bodies) == sorted(f"lg-{i}@example.com" for i in range(200))
    assert connections == result["connections_opened"] < 20


def test_a_server_that_closes_connections_still_gets_every_request() -> None:
    served = closed_unanswered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served, closed_unanswered
        if await read_request(reader) is None:
            return
        served += 1
        if served % 3 == 0:
            # Said, not yet done: the connection stays open a while, and a request sent on it
            # anyway would wait that long.
            writer.write(response(202, extra="Connection: close\r\n"))
            await writer.drain()
            await asyncio.sleep(1.0)
        else:
            writer.write(response(202))
            await writer.drain()
            # A keep-alive that times out as the next request arrives: read, and closed unanswered.
            if await read_request(reader) is not None:
                closed_unanswered += 1
        writer.close()

    result = serve_and_load(handler, {"rate": 100, "duration": 1})

    assert closed_unanswered > 10
    # Each of those was sent again on another connection; none went where `close` was said.
    assert result["statuses"] == {"202": 100}
    assert result["unanswered"] == 0
    assert result["latency_ms"]["max"] < 500


def test_refused_and_broken_answers_are_counted_not_fatal() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if request is not None:
            writer.write(b"garbage\r\n\r\n")
            await writer.drain()
        writer.close()

    broken = serve_and_load(handler, {"rate": 50, "duration": 1})
    assert broken["statuses"] == {"error BadResponse": 50}
    assert broken["latency_ms"] == {"count": 0}

    async def nothing_listens() -> dict[str, Any]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await run(
            {"port": port, "rate": 50, "duration": 1, "kind": "identify", "token": "t", "prefix": "x"}
        )

    refused = asyncio.run(nothing_listens())
    assert refused["statuses"] == {"error ConnectionRefusedError": 50}
    assert refused["unanswered"] == 0


def test_a_tracked_customer_is_polled_until_visible() -> None:
    accepted_at: dict[str, float] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            method, path, body = request
            if method == "POST":
                accepted_at[json.loads(body)["email"]] = time.monotonic()
                writer.write(response(202))
            else:
                email = path.rsplit("/", 1)[1].replace("%40", "@")
                # Visible 100 ms after it was accepted, as if a worker had processed it.
                shown = email in accepted_at and time.monotonic() - accepted_at[email] >= 0.1
                writer.write(response(200 if shown else 404))

    result = serve_and_load(handler, {"rate": 40, "duration": 1, "track_every": 10, "read_token": "r"})

    visible = result["visible_ms"]
    assert (visible["count"], visible["never"]) == (4, 0)
    assert 100 <= visible["p50"] < 1000


def test_a_response_head_is_read_whatever_its_case_and_order() -> None:
    assert parse_head(b"HTTP/1.1 202 ACCEPTED\r\ncontent-length: 12\r\nConnection: Close") == (202, 12, True)
    assert parse_head(b"HTTP/1.1 429 X\r\nCONNECTION: keep-alive\r\nContent-Length:0") == (429, 0, False)
    assert parse_head(b"HTTP/1.1 204 No Content") == (204, 0, False)
    for broken in (
        b"}HTTP/1.1 202 X",
        b"HTTP/1.1",
        b"HTTP/1.1 abc X",
        b"HTTP/1.1 200 X\r\nContent-Length: x",
    ):
        with pytest.raises((ValueError, IndexError)):
            parse_head(broken)
