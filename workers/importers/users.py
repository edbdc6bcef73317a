"""Auth providers' user lists: Clerk, WorkOS and Supabase, through their REST APIs.

- Clerk: `GET {api_url}/users?limit=&offset=&order_by=+created_at` (Backend API, `Bearer` secret
  key; a JSON array). Oldest first, so users created during the import do not shift the offsets;
  the checkpoint is the offset reached.
- WorkOS: `GET {api_url}/user_management/users?limit=&order=asc&after=<user id>` (`Bearer` API
  key; `{"data": […], "list_metadata": {"after": …}}`); the checkpoint is the last user id.
- Supabase: `GET {api_url}/auth/v1/admin/users?page=&per_page=` (the service role key as `apikey`
  and `Bearer`; `{"users": […]}`, the total in `X-Total-Count`); the checkpoint is the last page.

Each user becomes the connector's own signup event at its creation time (status `free` unless the
person has one), and, when it changed since, an update event at its `updated_at` carrying its
current email and name, so the signup keeps `first_seen_at` where it was and newer webhooks win.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import requests

from tributary.connectors.base import MalformedPayload, SourceConfig
from tributary.connectors.fields import parse_time
from tributary.connectors.registry import registry
from tributary.connectors.supabase import redact_row
from tributary.workers.importers.items import ConnectorEvents, ImportEvent, Listed, Skip
from tributary.workers.importers.stripe_list import Backoff, ImportFailed

__all__ = ["DEFAULT_URLS", "list_users"]

PAGE_SIZE = 100
TIMEOUT = 30
DEFAULT_URLS = {"clerk": "https://api.clerk.com/v1", "workos": "https://api.workos.com"}

Page = tuple[list[Mapping[str, Any]], str | None]  # users, cursor for the next page (None: last)


def _get(
    url: str, params: Mapping[str, Any], headers: Mapping[str, str], backoff: Backoff
) -> requests.Response:
    failures = 0
    while True:
        try:
            response = requests.get(url, params=params, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as exc:
            reason, retry_after = f"{type(exc).__name__}: {exc}", None
        else:
            if response.status_code < 400:
                return response
            if response.status_code != 429 and response.status_code < 500:
                raise ImportFailed(f"{url} answered {response.status_code}: {response.text[:200]}")
            reason = f"HTTP {response.status_code}"
            try:
                retry_after = float(response.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = None
        failures += 1
        if failures >= backoff.attempts:
            raise ImportFailed(f"{url} kept failing after {failures} attempts: {reason}")
        backoff.wait(failures, retry_after)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ImportFailed(f"{response.url} did not answer JSON") from None


def _clerk_pages(options: Mapping[str, Any], cursor: str, backoff: Backoff) -> Callable[[str], Page]:
    url = f"{options.get('api_url') or DEFAULT_URLS['clerk']}/users"
    headers = {"Authorization": f"Bearer {options['api_key']}"}

    def page(cursor: str) -> Page:
        offset = int(cursor or 0)
        params = {"limit": PAGE_SIZE, "offset": offset, "order_by": "+created_at"}
        users = _json(_get(url, params, headers, backoff))
        if not isinstance(users, list):
            raise ImportFailed("Clerk's user list is not a JSON array")
        return users, str(offset + len(users)) if len(users) == PAGE_SIZE else None

    return page


def _workos_pages(options: Mapping[str, Any], cursor: str, backoff: Backoff) -> Callable[[str], Page]:
    url = f"{options.get('api_url') or DEFAULT_URLS['workos']}/user_management/users"
    headers = {"Authorization": f"Bearer {options['api_key']}"}

    def page(cursor: str) -> Page:
        params: dict[str, Any] = {"limit": PAGE_SIZE, "order": "asc"}
        if cursor:
            params["after"] = cursor
        body = _json(_get(url, params, headers, backoff))
        data = body.get("data") if isinstance(body, Mapping) else None
        if not isinstance(data, list):
            raise ImportFailed("WorkOS's user list has no data array")
        after = body.get("list_metadata", {}).get("after")
        return data, after if isinstance(after, str) and after and data else None

    return page


def _supabase_pages(options: Mapping[str, Any], cursor: str, backoff: Backoff) -> Callable[[str], Page]:
    if not options.get("api_url"):
        raise ImportFailed("a Supabase import needs the api_url option (https://<project>.supabase.co)")
    url = f"{options['api_url']}/auth/v1/admin/users"
    headers = {"apikey": options["api_key"], "Authorization": f"Bearer {options['api_key']}"}

    def page(cursor: str) -> Page:
        number = int(cursor or 0) + 1
        body = _json(_get(url, {"page": number, "per_page": PAGE_SIZE}, headers, backoff))
        users = body.get("users") if isinstance(body, Mapping) else None
        if not isinstance(users, list):
            raise ImportFailed("Supabase's user list has no users array")
        return users, str(number) if len(users) == PAGE_SIZE else None

    return page


def _time(value: Any, what: str) -> datetime:
    try:
        return parse_time(value, what)
    except MalformedPayload:
        raise Skip(f"the user's {what} is not a time") from None


def _user_events(kind: str, builder: ConnectorEvents, user: Mapping[str, Any]) -> tuple[ImportEvent, ...]:
    user_id = str(user.get("id"))
    created = _time(user.get("created_at"), "created_at")
    updated = _time(user.get("updated_at"), "updated_at") if user.get("updated_at") else created
    if kind == "supabase":
        record = redact_row(user) or {}
        if user.get("last_sign_in_at"):
            updated = max(updated, _time(user.get("last_sign_in_at"), "last_sign_in_at"))
        row = {"schema": "auth", "table": "users", "record": record, "old_record": None}
        signup = builder.event(user_id, "auth.users.insert", created, {**row, "type": "INSERT"})
        if updated <= created:
            return (signup,)
        change = {**row, "type": "UPDATE", "old_record": {}}
        return signup, builder.event(user_id, "auth.users.update", updated, change)

    def event(event_type: str, at: datetime) -> dict[str, Any]:
        if kind == "clerk":
            return {
                "object": "event",
                "type": event_type,
                "timestamp": int(at.timestamp() * 1000),
                "data": dict(user),
            }
        return {
            "id": f"import_{user_id}",
            "event": event_type,
            "created_at": at.isoformat(),
            "data": dict(user),
        }

    signup = builder.event(user_id, "user.created", created, event("user.created", created))
    if updated <= created:
        return (signup,)
    return signup, builder.event(user_id, "user.updated", updated, event("user.updated", updated))


PAGERS = {"clerk": _clerk_pages, "workos": _workos_pages, "supabase": _supabase_pages}


def list_users(
    kind: str,
    source: SourceConfig,
    checkpoints: Mapping[str, tuple[str, bool]],
    *,
    backoff: Backoff | None = None,
) -> Iterator[Listed]:
    if not source.options.get("api_key"):
        raise ImportFailed(f"source {source.id} has no api_key option: add the {kind} secret key")
    backoff = backoff or Backoff()
    builder = ConnectorEvents(registry().get(kind), source)
    cursor, done = checkpoints.get("users", ("", False))
    if done:
        return
    page = PAGERS[kind](source.options, cursor, backoff)
    while True:
        users, following = page(cursor)
        for position, user in enumerate(users, 1):
            # A resumed offset/page repeats at most one page: the dedup keys absorb it. Mid-page,
            # the checkpoint stays at the page's start.
            at_end = position == len(users)
            next_cursor = (following or cursor) if at_end and kind != "workos" else cursor
            if kind == "workos":
                next_cursor = str(user.get("id"))
            try:
                if not isinstance(user, Mapping) or not user.get("id"):
                    raise Skip("a listed user has no id")
                yield Listed("users", next_cursor, _user_events(kind, builder, user))
            except Skip as skip:
                yield Listed("users", next_cursor, skip=str(skip))
        if following is None:
            yield Listed("users", cursor, done=True)
            return
        cursor = following
