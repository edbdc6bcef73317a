"""API keys: creation, hashing, lookup (cached briefly per process) and scope/tenant checks."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, g, request
from redis.exceptions import RedisError
from sqlalchemy import select

from tributary.app.errors import APIError
from tributary.models import ApiKey
from tributary.models.base import random_token
from tributary.runtime.process import Runtime

if TYPE_CHECKING:
    from tributary.app import Extensions

log = logging.getLogger(__name__)

KEY_PREFIX = "trb_"
# Which scopes satisfy a requirement: admin keys can do everything.
_GRANTS = {"ingest": {"ingest", "admin"}, "read": {"read", "admin"}, "admin": {"admin"}}


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new key and its display prefix. 32 base62 characters is about 190 bits of entropy."""
    token = KEY_PREFIX + random_token(32)
    return token, token[:12]


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    account_id: str
    scopes: frozenset[str]
    project_id: str | None

    def allows(self, scope: str) -> bool:
        return bool(self.scopes & _GRANTS[scope])

    @property
    def account_wide(self) -> bool:
        return self.project_id is None

    def require_account_wide(self, action: str) -> None:
        """Projects, account-wide keys and whole-person operations belong to the account: a key
        bound to one project is refused them, whatever its scopes."""
        if not self.account_wide:
            raise APIError(403, "account_key_required", f"{action} needs an account-wide admin key")


# Bumped on every revocation. Each process remembers the value it loaded a key under, so a
# revocation anywhere makes every process re-read its keys on their next use: one Redis GET per
# request instead of a database query.
REVOCATION_STAMP = "tributary:keys:revocation-stamp"
# After a failed read of the stamp, how long keys are checked in the database (every request)
# before Redis is tried again.
STAMP_RETRY_SECONDS = 5.0


def announce_revocation(runtime: Runtime) -> bool:
    """Tell every web process that a key was revoked (after the revocation is committed). When Redis
    is unreachable, other processes notice within their cache's `ttl`; returns whether it worked."""
    try:
        runtime.redis.incr(REVOCATION_STAMP)
    except RedisError as exc:
        log.warning(
            "could not announce a key revocation (other processes notice within the cache TTL): %s", exc
        )
        return False
    return True


class KeyCache:
    """Key hash -> principal for a few seconds, so ingest pays no database round trip for auth.
    A cached key is used only while the revocation stamp in Redis is the one it was loaded under, so a
    revocation in any process applies at once everywhere; if Redis cannot be read, keys are read from
    the database on every request (exact, slower) until it can."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal | None, bytes | None]] = {}
        self._lock = threading.Lock()
        self._stamp_unreadable_until = 0.0

    def _stamp(self, runtime: Runtime, now: float) -> bytes | None:
        """The current stamp (b"" before any revocation); None when it cannot be read."""
        if now < self._stamp_unreadable_until:
            return None
        try:
            value = runtime.redis.get(REVOCATION_STAMP)
        except RedisError as exc:
            self._stamp_unreadable_until = now + STAMP_RETRY_SECONDS
            log.warning("revocation stamp unreadable, checking keys in the database: %s", exc)
            return None
        return value if isinstance(value, bytes) else str(value or "").encode()

    def get(self, runtime: Runtime, digest: str, *, stamp_checked: bool = True) -> Principal | None:
        """The key's principal (None: unknown or revoked). With `stamp_checked=False` a cached key
        is trusted for the cache's `ttl` without reading the stamp: only for a caller whose own
        statement checks the key is still active (`revocation_checked_by_write`)."""
        now = time.monotonic()
        entry = self._entries.get(digest)
        if not stamp_checked and self.ttl > 0 and entry is not None and entry[0] > now:
            return entry[1]
        stamp = self._stamp(runtime, now) if self.ttl > 0 else None
        if entry is not None and entry[0] > now and stamp is not None and entry[2] == stamp:
            return entry[1]
        principal = self._load(runtime, digest)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (now + self.ttl, principal, stamp)
        return principal

    def invalidate(self, digest: str | None = None) -> None:
        with self._lock:
            if digest is None:
                self._entries.clear()
            else:
                self._entries.pop(digest, None)

    @staticmethod
    def _load(runtime: Runtime, digest: str) -> Principal | None:
        with runtime.db.session() as session:
            key = session.scalar(select(ApiKey).where(ApiKey.secret_hash == digest))
        if key is None or key.revoked_at is not None:
            return None
        # Defence in depth: the index lookup already matched, compare again in constant time.
        if not hmac.compare_digest(key.secret_hash, digest):
            return None
        return Principal(key.id, key.account_id, frozenset(key.scopes), key.project_id)


def principal_for(
    ext: Extensions,
    authorization: str,
    scope: str,
    *,
    account_wide: str | None = None,
    revocation_checked_by_write: bool = False,
) -> tuple[Principal, str]:
    """The principal of the key in an `Authorization` header, holding `scope`, and the key's
    digest; with `account_wide` (what the route does, for the error message) a project-bound key
    is refused too. Counts the request against the key's rate limit (a 429 when over it).

    `revocation_checked_by_write`: the route's one write is conditioned on the key being active (the
    INSERT of identify, ping and `/v1/batch`, app/event_store.py) and answers `key_revoked()` when
    it is not, so a cached key is used without reading the revocation stamp: no Redis round trip,
    and a revocation still applies to the very next request, checked by the database in the
    statement itself."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "unauthorized",
            "send an API key as `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": 'Bearer realm="tributary"'},
        )
    digest = hash_key(token.strip())
    principal = ext.key_cache.get(ext.runtime, digest, stamp_checked=not revocation_checked_by_write)
    if principal is None:
        raise APIError(401, "unauthorized", "the API key is invalid or revoked")
    if not principal.allows(scope):
        raise APIError(403, "forbidden", f"this key lacks the `{scope}` scope")
    if account_wide is not None:
        principal.require_account_wide(account_wide)
    ext.rate_limiter.hit(principal.key_id)
    return principal, digest


def authenticate(
    scope: str, *, account_wide: str | None = None, revocation_checked_by_write: bool = False
) -> Principal:
    """`principal_for` the current request; its key's digest is kept in `g.key_digest`."""
    principal, g.key_digest = principal_for(
        current_app.extensions["tributary"],
        request.headers.get("Authorization", ""),
        scope,
        account_wide=account_wide,
        revocation_checked_by_write=revocation_checked_by_write,
    )
    return principal


def key_revoked(key_cache: KeyCache, digest: str) -> APIError:
    """For a route whose write found the request's key revoked (`revocation_checked_by_write`):
    forget the cached key and answer as an unknown key would be."""
    key_cache.invalidate(digest)
    return APIError(401, "unauthorized", "the API key is invalid or revoked")
