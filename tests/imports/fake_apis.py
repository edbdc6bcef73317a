"""Provider list APIs answered by `responses`: multi-page, with failures planted by call number."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import responses

from tests.connectors.stripe_helpers import load

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
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


USER_URLS = {
    "clerk": "https://api.clerk.com/v1/users",
    "workos": "https://api.workos.com/user_management/users",
    "supabase": "https://proj.supabase.co/auth/v1/admin/users",
}


@dataclass
class FakeUsers:
    """An auth provider's user list, paged the provider's way: Clerk limit/offset (a JSON array),
    WorkOS limit/after (`data` + `list_metadata.after`), Supabase page/per_page (`users`)."""

    kind: str
    users: Sequence[Mapping[str, Any]]
    failures: dict[int, int] = field(default_factory=dict)
    fail_from: int | None = None
    calls: list[str] = field(default_factory=list)

    def register(self, mock: responses.RequestsMock) -> None:
        url = USER_URLS[self.kind]
        mock.add_callback(responses.GET, re.compile(re.escape(url) + r"(\?.*)?$"), callback=self._answer)

    def _answer(self, request: Any) -> tuple[int, dict[str, str], str]:
        number = len(self.calls)
        self.calls.append(request.url)
        status = self.failures.get(number) or (
            500 if self.fail_from is not None and number >= self.fail_from else 0
        )
        if status:
            return status, {"Retry-After": "0"} if status == 429 else {}, json.dumps({"error": "try later"})
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        headers = {"Content-Type": "application/json"}
        if self.kind == "clerk":
            offset, limit = int(query.get("offset", 0)), int(query["limit"])
            return 200, headers, json.dumps(list(self.users[offset : offset + limit]))
        if self.kind == "workos":
            limit = int(query["limit"])
            ids = [u["id"] for u in self.users]
            start = ids.index(query["after"]) + 1 if "after" in query else 0
            page = list(self.users[start : start + limit])
            more = start + limit < len(self.users)
            body = {
                "object": "list",
                "data": page,
                "list_metadata": {"before": None, "after": page[-1]["id"] if more else None},
            }
            return 200, headers, json.dumps(body)
        page_number, per_page = int(query["page"]), int(query["per_page"])
        start = (page_number - 1) * per_page
        headers["X-Total-Count"] = str(len(self.users))
        return (
            200,
            headers,
            json.dumps({"users": list(self.users[start : start + per_page]), "aud": "authenticated"}),
        )


def auth_user(kind: str, n: int, created: int, updated: int) -> dict[str, Any]:
    """User `n` as the provider's list API returns it (times in Unix seconds)."""
    email, first, last = f"user{n}@example.com", f"User{n}", "Example"
    if kind == "clerk":
        user: dict[str, Any] = copy.deepcopy(
            json.loads((FIXTURES / "clerk" / "user.created.json").read_text())["data"]
        )
        user.update(
            id=f"user_clerk{n:05d}",
            first_name=first,
            last_name=last,
            created_at=created * 1000,
            updated_at=updated * 1000,
            primary_email_address_id=f"idn_{n:05d}",
        )
        user["email_addresses"][0].update(id=f"idn_{n:05d}", email_address=email)
        return user
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    if kind == "workos":
        user = copy.deepcopy(json.loads((FIXTURES / "workos" / "user.created.json").read_text())["data"])
        user.update(
            id=f"user_workos{n:05d}",
            email=email,
            first_name=first,
            last_name=last,
            created_at=iso(created),
            updated_at=iso(updated),
        )
        return user
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "phone": "",
        "email_confirmed_at": iso(created),
        "confirmed_at": iso(created),
        "last_sign_in_at": None,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"full_name": f"{first} {last}"},
        "identities": [{"identity_id": "x", "provider": "email"}],
        "created_at": iso(created),
        "updated_at": iso(updated),
        "is_anonymous": False,
    }
