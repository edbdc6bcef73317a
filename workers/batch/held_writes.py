"""A read-ahead batch's write-back statements, held back until it takes SQLite's write lock.

On SQLite a worker's batch reads ahead of the write lock and takes it for its write-back only
(models/read_ahead.py). Its write-back interleaved Python with SQL: each bulk statement's rows were
built and bound (datetimes as text, JSON, one tuple a row) right before they were sent, so most of
the time the batch held the lock went to Python, while every web process of `tributary serve`
waited to commit (bench/README.md, 2026-12-06 14:30). Held, the bulk statements
(workers/batch/write_back_sqlite.py `_executemany`) are built and bound first, with the lock still
free, and sent one after the other once it is taken (`release`).

Order is kept whatever the write-back does besides: any other statement on the batch's connection
(an ORM flush, a merge's DELETE, a read of what the batch wrote) first takes the lock and sends what
is held, through SQLAlchemy's `before_execute` event on that one connection, so it runs after them
as it would have. The held statements are the batch's, sent on its own connection in its
transaction: a statement the database refuses fails at `release` instead of where it was built,
and the batch is applied again under the lock from its claim on (workers/jobs.py), where nothing is
held.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["HeldWrites", "held_writes"]

_KEY = "tributary.held_writes"


class HeldWrites:
    """The bulk statements of one batch's write-back on its session's connection, held from `hold`
    until `release`, which calls `take_lock` first."""

    def __init__(self, session: Session, take_lock: Callable[[], None]) -> None:
        self._conn = session.connection()
        self._take_lock = take_lock
        self._held: list[tuple[str, list[tuple[Any, ...]]]] = []
        self._holding = self._released = False
        session.info[_KEY] = self

    def hold(self) -> None:
        """From now on `add` holds statements; any other statement on the connection releases them."""
        if not self._released:
            event.listen(self._conn, "before_execute", self._before_execute)
            self._holding = True

    def add(self, sql: str, rows: list[tuple[Any, ...]]) -> bool:
        """Hold `sql` with its bound `rows`; False when nothing is held (not yet, or no longer)."""
        if not self._holding:
            return False
        self._held.append((sql, rows))
        return True

    def release(self) -> None:
        """Take the write lock and send what is held, in order; later statements go straight."""
        if self._released:
            return
        self._released = True
        self._holding = False
        self._take_lock()
        held, self._held = self._held, []
        for sql, rows in held:
            self._conn.exec_driver_sql(sql, rows)

    def _before_execute(self, *_args: Any, **_kwargs: Any) -> None:
        if self._holding:
            self.release()


def held_writes(session: Session) -> HeldWrites | None:
    """The session's `HeldWrites`, if its batch holds its statements."""
    found: HeldWrites | None = session.info.get(_KEY)
    return found
