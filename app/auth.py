"""API keys: creation, hashing, lookup (cached briefly per process) and scope/tenant checks."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, g, request
from sqlalchemy import select

from app.errors import APIError
from models import ApiKey
from models.base import random_token
from workers.runtime import Runtime

if TYPE_CHECKING:
    from app import Extensions

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


class KeyCache:
    """Key hash -> principal for a few seconds, so ingest pays no database round trip for auth.
    A revoked key keeps working in other processes for at most `ttl` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, runtime: Runtime, digest: str) -> Principal | None:
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[0] > now:
            return entry[1]
        principal = self._load(runtime, digest)
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (now + self.ttl, principal)
        return principal

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()

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


def authenticate(scope: str, *, account_wide: str | None = None) -> Principal:
    """The request's principal, holding `scope`; with `account_wide` (what the route does, for the
    error message) a project-bound key is refused too."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "unauthorized",
            "send an API key as `Authorization: Bearer <key>`",
            headers={"WWW-Authenticate": 'Bearer realm="tributary"'},
        )
    extensions: Extensions = current_app.extensions["tributary"]
    principal = extensions.key_cache.get(extensions.runtime, hash_key(token.strip()))
    if principal is None:
        raise APIError(401, "unauthorized", "the API key is invalid or revoked")
    if not principal.allows(scope):
        raise APIError(403, "forbidden", f"this key lacks the `{scope}` scope")
    if account_wide is not None:
        principal.require_account_wide(account_wide)
    g.principal = principal
    extensions.rate_limiter.hit(principal.key_id)
    return principal
