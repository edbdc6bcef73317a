"""Provider list APIs answered by `responses`: multi-page, with failures planted by call number."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses

from tests.connectors.stripe_helpers import load

RATE_LIMITED = {
    "error": {
        "code": "rate_limit",
        "message": "Request rate limit exceeded. Retry after a short delay.",
        "type": "invalid_request_error",
    }
}
SERVER_ERROR = {"error": {"message": "An unknown error occurred", "type": "api_error"}}


@dataclass
class FakeStripe:
    """`/v1/customers` and `/v1/subscriptions` as Stripe pages them (newest first, `has_more`,
    `starting_after`), `page_size` objects per page whatever the `limit`."""

    customers: Sequence[Mapping[str, Any]]
    subscriptions: Sequence[Mapping[str, Any]]
    page_size: int = 3
    # call number (0-based, over both endpoints) -> HTTP status to answer instead
    failures: dict[int, int] = field(default_factory=dict)
    fail_from: int | None = None  # every call from this number on fails with 500
    calls: list[str] = field(default_factory=list)

    def register(self, mock: responses.RequestsMock) -> None:
        for path, objects in (("customers", self.customers), ("subscriptions", self.subscriptions)):
            mock.add_callback(
                responses.GET,
                re.compile(rf"https://api\.stripe\.com/v1/{path}(\?.*)?$"),
                callback=self._answer(f"/v1/{path}", objects),
            )

    def _answer(self, url: str, objects: Sequence[Mapping[str, Any]]) -> Any:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            number = len(self.calls)
            self.calls.append(request.url)
            status = self.failures.get(number) or (
                500 if self.fail_from is not None and number >= self.fail_from else 0
            )
            if status:
                return status, {}, json.dumps(RATE_LIMITED if status == 429 else SERVER_ERROR)
            query = parse_qs(urlparse(request.url).query)
            start = 0
            if "starting_after" in query:
                ids = [o["id"] for o in objects]
                start = ids.index(query["starting_after"][0]) + 1
            page = list(objects[start : start + self.page_size])
            body = {
                "object": "list",
                "url": url,
                "has_more": start + self.page_size < len(objects),
                "data": page,
            }
            return 200, {"Content-Type": "application/json"}, json.dumps(body)

        return callback

    def calls_to(self, path: str) -> list[str]:
        return [c for c in self.calls if f"/v1/{path}" in c]


def stripe_customer(n: int, created: int, **fields: Any) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(load("customer.created")["data"]["object"])
    obj.update(id=f"cus_Import{n:05d}", email=f"person{n}@example.com", name=f"Person {n}", created=created)
    obj.update(fields)
    return obj


def stripe_subscription(
    n: int, base: Mapping[str, Any], *, customer: Mapping[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A subscription object (from a fixture event's `data.object`) for person `n`, with its
    customer expanded as the importer asks."""
    obj: dict[str, Any] = copy.deepcopy(dict(base))
    obj.update(id=f"sub_Import{n:05d}", customer=dict(customer) if customer else f"cus_Import{n:05d}")
    obj.update(fields)
    return obj
