"""Keep-alive HTTP/1.1 connections to one local port over asyncio protocols, for the open-loop
load generator (bench/loadgen.py): a pool that opens connections on demand up to a cap, hands each
request to a free one in order, and tells each request's owner its status code, or "error <kind>"
when it got no answer.

One request at a time a connection (no pipelining). A request whose keep-alive connection the
server closed as it went out is sent once more, on a new connection.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# Called with the request and its status code, or "error <kind>" when it got no answer.
Answer = Callable[["Job", int | str], None]


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "Content-Type: application/json\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, body length, whether the server closes the connection) of a response's head."""
    lines = head.split(b"\r\n")
    version, code = lines[0].split(b" ", 2)[:2]
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    status = int(code)
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    return status, length, close


class Job:
    """One request: its bytes, when it was due and when it went out, whom to tell the answer, and
    the customer to watch for once it is accepted (None: not watched)."""

    __slots__ = ("data", "due", "on_answer", "retried", "sent_at", "watch")

    def __init__(self, data: bytes, due: float, on_answer: Answer, watch: str | None = None) -> None:
        self.data, self.due, self.sent_at, self.on_answer = data, due, due, on_answer
        self.retried, self.watch = False, watch


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time (no pipelining).

    A protocol parsing the answer as its bytes arrive, rather than streams and a task per request:
    the generator shares the machine with what it measures, and this way it takes a fifth less CPU
    a request (bench/README.md, "The load generator")."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.job: Job | None = None
        self.served = 0
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, job: Job) -> None:
        assert self.transport is not None
        self.job = job
        job.sent_at = time.monotonic()
        self.transport.write(job.data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            status, length, close = parse_head(bytes(self.buffer[:end]))
        except (ValueError, IndexError):
            self._give_up("error BadResponse")
            return
        if len(self.buffer) < end + 4 + length:
            return  # the rest of the body is on its way
        self.buffer.clear()
        job, self.job = self.job, None
        self.served += 1
        if close:
            self._give_up(None)
        else:
            self.pool.release(self)
        if job is not None:
            job.on_answer(job, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        job, self.job = self.job, None
        if job is None:
            return
        if self.served and not job.retried:
            # The server closed a keep-alive connection as this request went out (gunicorn's
            # keepalive): sent again once, as HTTP clients do, on a new connection: the idle ones
            # may be closing too (a server closes the connections that timed out together).
            job.retried = True
            self.pool.submit(job, fresh=True)
        else:
            job.on_answer(job, f"error {type(exc).__name__ if exc else 'ConnectionClosed'}")

    def _give_up(self, error: str | None) -> None:
        job, self.job = self.job, None
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()
        if job is not None and error is not None:
            job.on_answer(job, error)


class Pool:
    """Keep-alive connections to one port, opened on demand up to a cap; requests wait in order for
    a free one."""

    def __init__(self, port: int, cap: int) -> None:
        self.port, self.cap = port, cap
        self.idle: list[Connection] = []
        self.live: set[Connection] = set()
        self.opening = 0
        self.peak = 0
        self.waiting: deque[Job] = deque()
        self.connecting: set[asyncio.Task[None]] = set()

    def submit(self, job: Job, fresh: bool = False) -> None:
        if self.idle and not fresh:
            self.idle.pop().send(job)  # the most recently used: the least likely to be timed out
            return
        if fresh:
            self.waiting.appendleft(job)
        else:
            self.waiting.append(job)
        if len(self.live) + self.opening < self.cap:
            self.opening += 1
            task = asyncio.get_running_loop().create_task(self._open())
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Connection(self), "127.0.0.1", self.port)
        except OSError as exc:
            self.opening -= 1
            if self.waiting:
                job = self.waiting.popleft()
                job.on_answer(job, f"error {type(exc).__name__}")
            return
        self.opening -= 1
        self.live.add(conn)
        self.peak = max(self.peak, len(self.live))
        self.release(conn)

    def release(self, conn: Connection) -> None:
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        self.live.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    async def fetch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int | str:
        answer: asyncio.Future[int | str] = asyncio.get_running_loop().create_future()

        def settle(_: Job, value: int | str) -> None:
            if not answer.done():
                answer.set_result(value)

        self.submit(Job(request_bytes(method, path, headers, body), time.monotonic(), settle))
        return await answer
