"""The RQ baseline: a job that does nothing, run by the same worker class as `tributary worker`."""

from __future__ import annotations


def noop() -> None:
    """Return at once: what is left is RQ's own cost per job (dequeue, bookkeeping, registries)."""
