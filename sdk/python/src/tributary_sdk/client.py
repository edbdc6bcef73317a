"""`Tributary`: the synchronous client (background sending by default)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from tributary_sdk._core import (
    DEFAULT_BASE_URL,
    Message,
    RetryPolicy,
    identify_message,
    list_query,
    ping_message,
    single_body,
)
from tributary_sdk._http import Query, SyncHttp
from tributary_sdk.errors import ValidationError
from tributary_sdk.models import Customer, EventAccepted, TimelineEntry
from tributary_sdk.sender import BackgroundSender, ErrorCallback


def _ref(id_or_email: str) -> str:
    return quote(id_or_email, safe="@")


class Customers:
    """The read API (`read` scope; `erase` needs `admin`). Every call raises a typed error."""

    def __init__(self, http: SyncHttp) -> None:
        self._http = http

    def get(self, id_or_email: str) -> Customer:
        return Customer.from_json(self._http.request("GET", f"/v1/customers/{_ref(id_or_email)}"))

    def list(
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
    ) -> Iterator[Customer]:
        """Every matching customer, fetching pages of `page_size` as the iteration goes."""
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
        for item in self._pages("/v1/customers", query):
            yield Customer.from_json(item)

    def timeline(self, id_or_email: str, *, page_size: int = 200) -> Iterator[TimelineEntry]:
        """The customer's timeline, newest first, over all pages."""
        path = f"/v1/customers/{_ref(id_or_email)}/timeline"
        for item in self._pages(path, [("limit", str(page_size))]):
            yield TimelineEntry.from_json(item)

    def erase(self, id_or_email: str) -> None:
        """Erase the customer and redact its personal data in stored events (admin scope)."""
        self._http.request("DELETE", f"/v1/customers/{_ref(id_or_email)}")

    def _pages(self, path: str, query: Query) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = self._http.request("GET", path, query=[*query, *([("cursor", cursor)] if cursor else [])])
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


class Tributary:
    """`identify`/`ping` return at once and are sent in batches by a background thread (never
    raising; failures go to `on_error` and the `tributary_sdk` logger). With `sync=True` each call
    is sent before it returns and raises a typed error on failure."""

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
        self._http = SyncHttp(api_key, base_url, timeout, retry)
        self.customers = Customers(self._http)
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

    def identify(
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
        """Create or update a customer. Background mode: None at once; sync mode: the stored event."""
        return self._send(
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

    def ping(
        self,
        email: str,
        *,
        project: str | None = None,
        timestamp: datetime | str | None = None,
        message_id: str | None = None,
    ) -> EventAccepted | None:
        """Record activity for a customer."""
        return self._send(
            functools.partial(
                ping_message, email, project=project, timestamp=timestamp, message_id=message_id
            )
        )

    def _send(self, build: Callable[[], Message]) -> EventAccepted | None:
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
        answer = self._http.request("POST", f"/v1/{message['type']}", content=single_body(message))
        return EventAccepted(event_id=answer["event_id"], duplicate=bool(answer.get("duplicate")))

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full (or the client shut down)."""
        return self._sender.dropped if self._sender else 0

    @property
    def queued(self) -> int:
        """Messages waiting to be sent (including the batch in flight)."""
        return self._sender.queued if self._sender else 0

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message queued so far is stored or failed. False on timeout."""
        return self._sender.flush(timeout) if self._sender else True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, stop the sender and close connections. True if nothing was left unsent."""
        done = self._sender.shutdown(timeout) if self._sender else True
        self._http.close()
        return done

    def __enter__(self) -> Tributary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
