"""The background mode: a bounded queue and one sender thread posting `/v1/batch`.

- The caller's thread only appends to a deque under a lock (no I/O, no encoding).
- The sender posts when a batch is full, when the oldest queued message has waited
  `flush_interval`, or when asked to flush. Every message carries its own `message_id`, so
  re-posting a batch after an unknown outcome (timeout, reset, 5xx) stores nothing twice.
- Full queue: the oldest message is dropped, counted, logged and reported to `on_error`.
- `fork()`: the child starts with an empty queue, new locks and (on first use) its own thread and
  connection pool; the parent's are not usable there and its queued messages are the parent's.
- Interpreter exit: an `atexit` hook flushes, bounded by `shutdown_timeout`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from tributary_sdk._core import MAX_BATCH_BYTES, Message, RetryPolicy, batch_body, encode
from tributary_sdk._http import SyncHttp, decode
from tributary_sdk.errors import TributaryError, ValidationError, error_for, is_retryable

log = logging.getLogger("tributary_sdk")

ErrorCallback = Callable[[TributaryError, list[Message]], None]


class QueueFull(TributaryError):
    """The queue was full: this (oldest) message was dropped to make room."""


class ShutDown(TributaryError):
    """The client was shut down: the message was not sent."""


_live: weakref.WeakSet[BackgroundSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_live):
        sender._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _shutdown_at_exit(ref: weakref.ref[BackgroundSender]) -> None:
    sender = ref()
    if sender is not None:
        sender.shutdown()


class BackgroundSender:
    def __init__(
        self,
        make_http: Callable[[], SyncHttp],
        *,
        retry: RetryPolicy,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
        shutdown_timeout: float = 5.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self._make_http = make_http
        self._retry = retry
        self._batch_size = max(1, min(batch_size, 500))
        self._interval = flush_interval
        self._max_queue = max(1, max_queue_size)
        self._shutdown_timeout = shutdown_timeout
        self._on_error = on_error
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._reset()
        _live.add(self)
        self._atexit = functools.partial(_shutdown_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._queue: deque[Message] = deque()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
        self._closed = False

    @property
    def queued(self) -> int:
        return len(self._queue) + self._in_flight

    def put(self, message: Message) -> None:
        dropped: Message | None = None
        with self._lock:
            if self._closed:
                dropped = message
            else:
                if len(self._queue) >= self._max_queue:
                    dropped = self._queue.popleft()
                self._queue.append(message)
                if self._thread is None:
                    self._start()
                if len(self._queue) >= self._batch_size:
                    self._wake.notify()
        if dropped is not None:
            self._drop(dropped)

    def _drop(self, message: Message) -> None:
        self.dropped += 1
        if self._closed:
            error: TributaryError = ShutDown("the client is shut down; message not sent")
        else:
            error = QueueFull(f"queue full ({self._max_queue} messages); dropped the oldest")
        # Counted, and logged at 1, 2, 4, 8… so a long outage does not flood the log.
        if self.dropped & (self.dropped - 1) == 0:
            log.warning("tributary: %s (%d dropped so far)", error.message, self.dropped)
        self._report(error, [message])

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="tributary-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            log.warning("tributary: cannot start the sender thread; %d messages unsent", len(self._queue))
            return
        self._thread = thread

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued so far is delivered or failed; False on timeout."""
        if threading.current_thread() is self._thread:
            return False  # called from `on_error` on the sender thread: waiting would deadlock
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._wake.notify()
            while self._queue or self._in_flight:
                if self._thread is None or not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush (bounded by `timeout`, default `shutdown_timeout`), then stop the thread. Messages
        still unsent after that go to `on_error`. Idempotent."""
        atexit.unregister(self._atexit)
        done = self.flush(self._shutdown_timeout if timeout is None else timeout)
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._abandon.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            leftover = list(self._queue)
            self._queue.clear()
        if leftover:
            self._fail(ShutDown("shut down before these messages could be sent"), leftover)
        return done and not leftover

    def _run(self) -> None:
        http = self._make_http()
        try:
            while True:
                with self._lock:
                    if not self._queue and not self._closed:
                        self._wake.wait(self._interval)
                    if not self._queue:
                        if self._closed:
                            return
                        continue
                    count = min(self._batch_size, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(count)]
                    self._in_flight = count
                try:
                    self._deliver(http, batch)
                except Exception as exc:  # the sender must survive anything, even a bug
                    log.exception("tributary: unexpected error while sending")
                    self._fail(TributaryError(f"unexpected error: {exc!r}"), batch)
                with self._lock:
                    self._in_flight = 0
                    self._idle.notify_all()
        finally:
            http.close()

    def _deliver(self, http: SyncHttp, batch: list[Message]) -> None:
        chunk: list[Message] = []
        parts: list[bytes] = []
        size = 0
        for message in batch:
            try:
                part = encode(message)
            except ValidationError as error:
                self._fail(error, [message])
                continue
            if len(part) > MAX_BATCH_BYTES:
                self._fail(ValidationError("message is over 1 MiB", code="payload_too_large"), [message])
                continue
            if parts and size + len(part) + 1 > MAX_BATCH_BYTES:
                self._post(http, chunk, parts)
                chunk, parts, size = [], [], 0
            chunk.append(message)
            parts.append(part)
            size += len(part) + 1
        if parts:
            self._post(http, chunk, parts)

    def _post(self, http: SyncHttp, messages: list[Message], parts: list[bytes]) -> None:
        body = batch_body(parts)
        attempt = 0
        while True:
            try:
                answer = decode(http._send("POST", "/v1/batch", body, None))
            except TributaryError as error:
                if error.code == "no_valid_messages" and isinstance(error.details, dict):
                    self._results(messages, error.details.get("results"))
                    return
                if not is_retryable(error) or attempt >= self._retry.max_retries or self._abandon.is_set():
                    self._fail(error, messages)
                    return
                delay = self._retry.delay(attempt, error)
                log.info("tributary: batch of %d failed (%r); retry in %.2fs", len(messages), error, delay)
                if self._abandon.wait(delay):
                    self._fail(error, messages)
                    return
                attempt += 1
                continue
            self._results(messages, answer.get("results") if isinstance(answer, dict) else None)
            return

    def _results(self, messages: list[Message], results: Any) -> None:
        if not isinstance(results, list) or len(results) != len(messages):
            self._fail(ValidationError("unexpected answer to /v1/batch", code="bad_response"), messages)
            return
        for message, result in zip(messages, results, strict=True):
            if isinstance(result, dict) and result.get("event_id"):
                self.delivered += 1
            else:
                status = result.get("status") if isinstance(result, dict) else None
                self._fail(error_for(status if isinstance(status, int) else 400, result, {}), [message])

    def report_failure(self, error: TributaryError, messages: list[Message]) -> None:
        self._fail(error, messages)

    def _fail(self, error: TributaryError, messages: list[Message]) -> None:
        self.failed += len(messages)
        log.error("tributary: %d message(s) not stored: %r", max(1, len(messages)), error)
        self._report(error, messages)

    def _report(self, error: TributaryError, messages: list[Message]) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(error, messages)
        except Exception:
            log.exception("tributary: the on_error callback raised")
