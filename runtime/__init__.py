"""The ground both processes stand on: configuration (`config`), the per-process handles to the
database and Redis (`process`, with the embedded Redis of `embedded_redis`), the enqueue doorbell
(`doorbell`) and the schema migration runner (`migrate`).

Layering: `runtime` may import `models` and `migrations` (it sits beside and above them) and
third-party libraries; it never imports `app`, `workers` or `connectors`, so the web process can
take what it needs to ingest without loading the worker, and the worker without loading Flask.
"""

from __future__ import annotations

from tributary.runtime.config import Settings
from tributary.runtime.process import Runtime, current, install

__all__ = ["Runtime", "Settings", "current", "install"]
