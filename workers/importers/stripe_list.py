"""Stripe: customers, then subscriptions, read with the `stripe` library's auto-pagination.

Each customer becomes a `customer.created` event at its `created` time. Each subscription (all
statuses, with its customer expanded so the email travels with it) becomes a
`customer.subscription.updated` event, or `.deleted` once canceled, at its latest known change
time: the newest of its own timestamps that are already past (creation, start, trial start and
end, renewal, cancellation, end). The state read is at least that new, and no newer than the
moment it was read, so a webhook about a later change wins in either arrival order and an older
webhook arriving late does not undo the import (workers/batch/merge_rules.py). Stripe keeps no update time for
customers, so a customer's name and email carry its creation time: any webhook about it wins.

Rate limits: the library retries 5xx and connection errors itself (`max_network_retries`) but not
429s; `Backoff` retries a failed page (429, 5xx, connection) from the last object read, with
exponential delays (Stripe's advice for 429s), before giving up. Giving up keeps the checkpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import stripe

from tributary.connectors.base import SourceConfig
from tributary.connectors.registry import registry
from tributary.connectors.stripe import client_for
from tributary.workers.importers.items import ConnectorEvents, Listed, Skip

__all__ = ["STREAMS", "Backoff", "ImportFailed", "latest_change", "list_pages", "list_stripe"]

STREAMS = ("customers", "subscriptions")
PAGE_SIZE = 100

# Subscription timestamps at which its state can have changed (Unix seconds; top level and items).
_CHANGE_FIELDS = ("created", "start_date", "trial_start", "trial_end", "canceled_at", "ended_at")
_ITEM_CHANGE_FIELDS = ("created", "current_period_start")


class ImportFailed(Exception):
    """The provider refused or kept failing: one line for the CLI and the import's errors."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retries of one page: `attempts` tries with exponential delays from `base` up to `cap`
    seconds (with jitter), or the server's `Retry-After` when it gives one."""

    attempts: int = 8
    base: float = 1.0
    cap: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def wait(self, failure: int, retry_after: float | None = None) -> None:
        delay = min(self.cap, self.base * 2 ** (failure - 1))
        if retry_after is not None:
            delay = min(self.cap, max(delay, retry_after))
        self.sleep(delay * (0.5 + random.random() / 2) if retry_after is None else delay)  # noqa: S311


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("retry-after") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """The wire JSON back from the library's objects: it turns `*_decimal` strings into
    `Decimal`s, which the connector reads (and the database stores) as the strings they were."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Decimal) else value


def list_pages(
    fetch: Callable[[dict[str, Any]], Any], params: dict[str, Any], after: str | None, backoff: Backoff
) -> Iterator[dict[str, Any]]:
    """Objects from `fetch` (a list method), auto-paginated, restarted after the last object read
    when a page fails with a retryable error."""
    failures = 0
    while True:
        try:
            page = fetch({**params, **({"starting_after": after} if after else {})})
            for obj in page.auto_paging_iter():
                failures = 0
                data: dict[str, Any] = _plain(obj.to_dict())
                yield data
                after = str(data.get("id"))
            return
        except (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError) as exc:
            failures += 1
            if failures >= backoff.attempts:
                raise ImportFailed(
                    f"Stripe kept failing after {failures} attempts: {type(exc).__name__}: "
                    f"{exc.user_message or exc}"
                ) from None
            backoff.wait(failures, _retry_after(exc))
        except stripe.StripeError as exc:
            raise ImportFailed(
                f"Stripe refused the listing: {type(exc).__name__}: {exc.user_message or exc}"
            ) from None


def _stamp(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def latest_change(subscription: Mapping[str, Any], now: int) -> int:
    """The newest of the subscription's state-change timestamps that is not in the future."""
    stamps = [_stamp(subscription.get(name)) for name in (*_CHANGE_FIELDS, "current_period_start")]
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    for item in data if isinstance(data, list) else []:
        if isinstance(item, Mapping):
            stamps.extend(_stamp(item.get(name)) for name in _ITEM_CHANGE_FIELDS)
    past = [s for s in stamps if s is not None and s <= now]
    return max(past) if past else now


def _provider_event(event_type: str, created: int, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": f"import_{obj.get('id')}",
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": obj.get("livemode"),
        "data": {"object": dict(obj)},
    }


def customer_listed(builder: ConnectorEvents, obj: Mapping[str, Any]) -> Listed:
    object_id = str(obj.get("id"))
    created = _stamp(obj.get("created"))
    try:
        if obj.get("deleted"):
            raise Skip("the customer is deleted")
        if created is None:
            raise Skip("the customer has no created time")
        event = builder.event(
            object_id,
            "customer.created",
            datetime.fromtimestamp(created, UTC),
            _provider_event("customer.created", created, obj),
        )
    except Skip as skip:
        return Listed("customers", object_id, skip=str(skip))
    return Listed("customers", object_id, (event,))


def subscription_listed(builder: ConnectorEvents, obj: Mapping[str, Any], now: int) -> Listed:
    object_id = str(obj.get("id"))
    changed = latest_change(obj, now)
    event_type = (
        "customer.subscription.deleted"
        if obj.get("status") == "canceled"
        else ("customer.subscription.updated")
    )
    try:
        customer = obj.get("customer")
        if isinstance(customer, Mapping) and customer.get("deleted"):
            raise Skip("the subscription's customer is deleted")
        event = builder.event(
            object_id,
            event_type,
            datetime.fromtimestamp(changed, UTC),
            _provider_event(event_type, changed, obj),
        )
    except Skip as skip:
        return Listed("subscriptions", object_id, skip=str(skip))
    return Listed("subscriptions", object_id, (event,))


def list_stripe(
    source: SourceConfig,
    checkpoints: Mapping[str, tuple[str, bool]],
    *,
    backoff: Backoff | None = None,
    client: stripe.StripeClient | None = None,
) -> Iterator[Listed]:
    api_key = source.options.get("api_key")
    if client is None:
        if not isinstance(api_key, str):
            raise ImportFailed(
                f"source {source.id} has no api_key option: add the Stripe secret or restricted key "
                "(read access to customers and subscriptions)"
            )
        client = client_for(api_key)
    backoff = backoff or Backoff()
    builder = ConnectorEvents(registry().get("stripe"), source)
    streams: dict[str, tuple[Callable[[dict[str, Any]], Any], dict[str, Any]]] = {
        "customers": (lambda p: client.v1.customers.list(params=p), {"limit": PAGE_SIZE}),  # type: ignore[arg-type]
        "subscriptions": (
            lambda p: client.v1.subscriptions.list(params=p),  # type: ignore[arg-type]
            {"limit": PAGE_SIZE, "status": "all", "expand": ["data.customer"]},
        ),
    }
    for stream in STREAMS:
        cursor, done = checkpoints.get(stream, ("", False))
        if done:
            continue
        fetch, params = streams[stream]
        for obj in list_pages(fetch, params, cursor or None, backoff):
            if stream == "customers":
                item = customer_listed(builder, obj)
            else:
                item = subscription_listed(builder, obj, int(time.time()))
            cursor = item.cursor
            yield item
        yield Listed(stream, cursor, done=True)
