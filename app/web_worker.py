"""The web processes' gunicorn worker: gthread's request handling without its hand-offs per request.

gunicorn's gthread worker has its main thread wait on every connection and hand each request to a
pool thread, which hands the connection back when done: for every request the main thread wakes
twice and the GIL changes hands both ways. At a steady rate that is much of what a request costs
the stack: bare Flask offered 1,000 requests/s open-loop took 0.61-0.63 ms of CPU a request under
gthread and 0.44-0.47 ms under this worker (bench/README.md, "The web server's hand-offs").

Here the `threads` threads all wait on one epoll set in which each connection is armed for a
single wake (EPOLLONESHOT): the thread that wakes serves that connection's request and arms it
again, so a request costs one wake. What gthread gives is kept:
- each request is handled by gthread's own code (`ThreadWorker.handle`): parsing, the app,
  keep-alive, gunicorn's refusals and the access log, unchanged;
- a connection that has sent nothing holds no thread; one whose request arrives slowly holds one
  thread, not the process;
- a connection idle for `keepalive` seconds is closed; at most `worker_connections` are open (the
  listening socket is not watched while the process is full);
- the main thread beats the heartbeat (`timeout`), and on SIGTERM the process stops accepting,
  closes idle connections after a short linger, and lets requests in progress finish within
  `graceful_timeout`.
It needs epoll, so Linux: elsewhere the configuration runs gthread (app/gunicorn_conf.py).
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import threading
import time
from types import FrameType

from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

__all__ = ["SharedEpollWorker"]

# Readable, then disarmed until the thread that woke for it arms it again.
ARMED = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)
# How long a process with a connection for each of its threads waits before it takes another.
ACCEPT_BACKOFF_S = 0.01


class Slot:
    """An open connection; `armed` while it waits in the epoll set for its next request."""

    __slots__ = ("armed", "conn", "idle_since")

    def __init__(self, conn: TConn) -> None:
        self.conn, self.armed, self.idle_since = conn, True, time.monotonic()


class SharedEpollWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    def init_process(self) -> None:
        self.epoll = select.epoll()
        # Guards the slots, the count of connections and every epoll change of a connection, so a
        # connection is never closed while a thread arms it, nor armed after it was closed.
        self.lock = threading.Lock()
        self.slots: dict[int, Slot] = {}
        self.listeners: dict[int, socket.socket] = {}
        self.listening = False
        self.serving = True
        self.woken = threading.Event()
        super().init_process()  # gthread's setup, then gunicorn's: loads the app and calls run()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.woken.set()

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self.listeners[listener.fileno()] = listener
        with self.lock:
            self._listen(True)
        for number in range(self.cfg.threads):
            threading.Thread(target=self._serve_forever, name=f"web-{number}", daemon=True).start()
        while self.alive:
            self.notify()
            self.woken.wait(1.0)
            if not self.is_parent_alive():
                break
            # With keep-alive off, only connections yet to send their request wait here: they get
            # what gthread gives them.
            self._close_idle(self.cfg.keepalive or DEFAULT_WORKER_DATA_TIMEOUT)
        self._stop()

    def _listen(self, on: bool) -> None:
        """Watch the listening sockets, or stop; called with the lock held."""
        if on == self.listening:
            return
        for fd in self.listeners:
            if on:
                self.epoll.register(fd, ARMED)
            else:
                self.epoll.unregister(fd)
        self.listening = on

    def _serve_forever(self) -> None:
        while self.serving:
            try:
                # One event a wake: a thread never sits on a ready connection another could serve.
                for fd, _ in self.epoll.poll(1.0, 1):
                    if fd in self.listeners:
                        self._accept(fd)
                    else:
                        self._serve(fd)
            except Exception:  # logged; the thread must go on, or the process serves with fewer
                self.log.exception("web thread: unexpected error")

    def _accept(self, fd: int) -> None:
        """One connection a wake, as gthread takes them: every process wakes for a new connection
        and the first to call accept() gets it, which spreads them over the processes. Taking a
        burst at once gave one process more connections than threads while others had spare ones
        (the p99 at 64 connections went from 59-65 to 93-133 ms)."""
        listener = self.listeners[fd]
        try:
            sock, client = listener.accept()
        except BlockingIOError:  # another process took it
            sock = None
        except OSError as exc:
            sock = None
            if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):  # else the client gave up first
                self.log.exception("accept failed")
        slot = None if sock is None else Slot(TConn(self.cfg, sock, client, listener.getsockname()))
        with self.lock:
            if sock is not None and slot is not None:
                self.nr_conns += 1
                self.slots[sock.fileno()] = slot
                self.epoll.register(sock.fileno(), ARMED)
                if self.nr_conns >= self.worker_connections:
                    self._listen(False)  # full: connections wait in the kernel's backlog
            busy = self.nr_conns >= self.cfg.threads
        if busy:
            # As many connections as threads already: the next new one is left a moment to a
            # process with threads to spare.
            time.sleep(ACCEPT_BACKOFF_S)
        with self.lock:
            if self.listening:
                self.epoll.modify(fd, ARMED)

    def _serve(self, fd: int) -> None:
        with self.lock:
            slot = self.slots.get(fd)
            if slot is None or not slot.armed:
                return  # closed as idle meanwhile, or another thread has it
            slot.armed = False
        conn = slot.conn
        conn.data_ready = True  # it woke us: gthread's handle() need not wait for it again
        keep = self.handle(conn)
        # Requests the client sent together (pipelined) are read ahead into the parser's buffer,
        # where the socket's readiness no longer shows them.
        while keep is True and conn.parser is not None and conn.parser.unreader.buf.getvalue():
            keep = self.handle(conn)
        with self.lock:
            if keep is True and self.alive:
                slot.armed, slot.idle_since = True, time.monotonic()
                self.epoll.modify(fd, ARMED)
                return
            self._forget(fd, slot)
        conn.close(graceful=True)

    def _forget(self, fd: int, slot: Slot) -> None:
        """Take a connection out of the set before it is closed (its descriptor can then be reused
        by nothing we still watch); called with the lock held."""
        slot.armed = False
        if self.slots.get(fd) is slot:
            del self.slots[fd]
        with contextlib.suppress(OSError, ValueError):  # already out of the set
            self.epoll.unregister(fd)
        self.nr_conns -= 1
        if self.alive and self.nr_conns < self.worker_connections:
            self._listen(True)

    def _close_idle(self, older_than: float) -> None:
        cutoff = time.monotonic() - older_than
        with self.lock:
            idle = [(fd, s) for fd, s in self.slots.items() if s.armed and s.idle_since <= cutoff]
            for fd, slot in idle:
                self._forget(fd, slot)
        for _, slot in idle:
            slot.conn.close()

    def _stop(self) -> None:
        """Stop accepting; close idle connections once a request already on its way to one has had
        STOP_KEEPALIVE_LINGER to arrive (it is answered with `Connection: close`); wait for the
        requests in progress, `graceful_timeout` at most."""
        with self.lock:
            self._listen(False)
        linger_until = time.monotonic() + STOP_KEEPALIVE_LINGER
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline:
            self.notify()
            if time.monotonic() >= linger_until:
                self._close_idle(0.0)
            with self.lock:
                if not self.slots:
                    break
            time.sleep(0.05)
        self.serving = False
        for listener in self.sockets:
            listener.close()
