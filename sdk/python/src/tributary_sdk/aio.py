"""`AsyncTributary`: the same surface for asyncio code.

Background `identify`/`ping` share the thread-based sender of the sync client: appending to its
queue never blocks the event loop, and a thread (unlike a task) survives the loop that created it,
is flushed at interpreter exit and is rebuilt after `fork()`. Sync mode and the read API use
`httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from tributary_sdk._core import (
    DEFAULT_BASE_URL,
    Message,
    RetryPolicy,
    identify_message,
    list_query,
    ping_message,
    single_body,
)
from tributary_sdk._http import AsyncHttp, Query, SyncHttp
from tributary_sdk.client import _ref
from tributary_sdk.errors import ValidationError
from tributary_sdk.models import Customer, EventAccepted, TimelineEntry
from tributary_sdk.sender import BackgroundSender, ErrorCallback


class AsyncCustomers:
    def __init__(self, http: AsyncHttp) -> None:
        self._http = http

    async def get(self, id_or_email: str) -> Customer:
        return Customer.from_json(await self._http.request("GET", f"/v1/customers/{_ref(id_or_email)}"))

    async def list(
        self,
        *,
        project: str | None = None,
        status: str | None = None,
        email: str | None = None,
        params: Mapping[str, Any] | None = None,
        q: str | None = None,
        active_since: datetime | str | None = None,
        created_since: datetime | str | None = None,
        sort: str | None = None,
        page_size: int = 200,
    ) -> AsyncIterator[Customer]:
        query = list_query(
            project=project,
            status=status,
            email=email,
            params=params,
            q=q,
            active_since=active_since,
            created_since=created_since,
            sort=sort,
            limit=page_size,
        )
        async for item in self._pages("/v1/customers", query):
            yield Customer.from_json(item)

    async def timeline(self, id_or_email: str, *, page_size: int = 200) -> AsyncIterator[TimelineEntry]:
        path = f"/v1/customers/{_ref(id_or_email)}/timeline"
        async for item in self._pages(path, [("limit", str(page_size))]):
            yield TimelineEntry.from_json(item)

    async def erase(self, id_or_email: str) -> None:
        await self._http.request("DELETE", f"/v1/customers/{_ref(id_or_email)}")

    async def _pages(self, path: str, query: Query) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = await self._http.request(
                "GET", path, query=[*query, *([("cursor", cursor)] if cursor else [])]
            )
            for item in page["data"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncTributary:
    """See `Tributary`; every method is a coroutine."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        sync: bool = False,
        timeout: float = 10.0,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue_size: int = 10_000,
        max_retries: int = 8,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
        shutdown_timeout: float = 5.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        base_url = (base_url or os.environ.get("TRIBUTARY_URL") or DEFAULT_BASE_URL).rstrip("/")
        retry = RetryPolicy(max_retries=max_retries, base_delay=retry_base_delay, max_delay=retry_max_delay)
        self.sync = sync
        self._http = AsyncHttp(api_key, base_url, timeout, retry)
        self.customers = AsyncCustomers(self._http)
        self._sender: BackgroundSender | None = None
        if not sync:
            self._sender = BackgroundSender(
                lambda: SyncHttp(api_key, base_url, timeout, retry),
                retry=retry,
                batch_size=batch_size,
                flush_interval=flush_interval,
                max_queue_size=max_queue_size,
                shutdown_timeout=shutdown_timeout,
                on_error=on_error,
            )

    async def identify(
        self,
        email: str,
        *,
        name: str | None = None,
        status: str | None = None,
        params: Mapping[str, Any] | None = None,
        params_once: Mapping[str, Any] | None = None,
        params_unset: Sequence[str] | None = None,
        project: str | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> EventAccepted | None:
        return await self._send(
            functools.partial(
                identify_message,
                email,
                name=name,
                status=status,
                params=params,
                params_once=params_once,
                params_unset=params_unset,
                project=project,
                timestamp=timestamp,
                message_id=message_id,
            )
        )

    async def ping(
        self,
        email: str,
        *,
        project: str | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> EventAccepted | None:
        return await self._send(
            functools.partial(
                ping_message, email, project=project, timestamp=timestamp, message_id=message_id
            )
        )

    async def _send(self, build: Callable[[], Message]) -> EventAccepted | None:
        try:
            message = build()
        except Exception as exc:  # bad argument types: the app must not crash in background mode
            error = ValidationError(f"invalid arguments: {exc!r}", code="invalid_arguments")
            if self._sender is None:
                raise error from exc
            self._sender.report_failure(error, [])
            return None
        if self._sender is not None:
            self._sender.put(message)
            return None
        answer = await self._http.request("POST", f"/v1/{message['type']}", content=single_body(message))
        return EventAccepted(event_id=answer["event_id"], duplicate=bool(answer.get("duplicate")))

    @property
    def dropped(self) -> int:
        return self._sender.dropped if self._sender else 0

    async def flush(self, timeout: float | None = None) -> bool:
        if self._sender is None:
            return True
        return await asyncio.to_thread(self._sender.flush, timeout)

    async def shutdown(self, timeout: float | None = None) -> bool:
        done = await asyncio.to_thread(self._sender.shutdown, timeout) if self._sender else True
        await self._http.close()
        return done

    async def __aenter__(self) -> AsyncTributary:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
