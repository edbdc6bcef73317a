"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
`tributary serve` (gunicorn + worker) on the embedded default. Screenshots of every page land in
tests/artifacts/dashboard/ (git-ignored).

Skipped, saying why, when Chromium or Playwright is missing; `.ci/run` installs Chromium.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks

from tests.connectors.stripe_helpers import API_KEY, SECRET
from tests.connectors.stripe_helpers import event as stripe_event
from tributary.connectors.testkit import stripe_headers

CHROMIUM = Path(os.environ.get("TRIBUTARY_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
LOAD_FAILED = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

if not CHROMIUM.exists():
    # On a developer's machine without it the suite is skipped; in CI (which installs it) a missing
    # browser is a failure, so the browser tests can never pass unseen.
    if os.environ.get("CI"):
        pytest.fail(f"Chromium not found at {CHROMIUM}; .ci/run installs it", pytrace=False)
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base: str
    admin: str
    log: Path
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
        # SQLite answers a write that meets the worker's batch with 503 (retry), as the API documents.
        for _ in range(20):
            status, answer = self._call(method, path, body, key)
            if status != 503:
                return status, answer
            time.sleep(0.25)
        return status, answer

    def _call(self, method: str, path: str, body: Any, key: str | None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {key or self.admin}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def _wait(predicate: Any, what: str, timeout: float = 30, server: Server | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            # What the server saw and logged, so a failure in CI can be read without a rerun.
            seen = "" if server is None else _state(server)
            pytest.fail(f"timed out waiting for {what}{seen}", pytrace=False)
        time.sleep(0.2)


def _state(server: Server) -> str:
    try:
        customers = server.call("GET", "/v1/customers?limit=20")[1]
        events = server.call("GET", "/v1/events?limit=50")[1]
    except OSError:  # a server that died still leaves its log, which matters most then
        customers = events = {}
    log = server.log.read_text(errors="replace").splitlines()[-60:]
    return "\n".join(
        ["", "customers:"]
        + [f"  {c['email']} {json.dumps(c['projects'], sort_keys=True)}" for c in customers.get("data", [])]
        + ["events:"]
        + [
            f"  {e['id']} {e['type']} {e['email']} {e['status']} {e['occurred_at']}"
            for e in events.get("data", [])
        ]
        + ["serve.log (tail):", *log]
    )


def _identify(who: str, project: str, day: int, **fields: Any) -> dict[str, Any]:
    return {
        "email": f"{who}@example.com",
        "project": project,
        "timestamp": f"2026-01-0{day}T09:00:00Z",
        **fields,
    }


def _seed(server: Server) -> None:
    for slug in ("shop", "app"):
        assert server.call("POST", "/v1/projects", {"slug": slug})[0] == 201
    calls = [
        _identify(
            "ada", "shop", 1, name="Ada Lovelace", status="trial", params={"plan": "basic", "seats": 1}
        ),
        _identify("ada", "shop", 3, status="paid", params={"plan": "pro", "seats": 3}),
        _identify("ada", "shop", 2, status="past_due"),
        _identify("ada", "app", 4, status="free", params_once={"signup_source": "hn"}),
        _identify("bob", "shop", 5, name="Bob Stone", status="trial", params={"plan": "basic"}),
        _identify("cy", "app", 6, name="Cy Young", status="active", params={"plan": "team"}),
        _identify("dee", "shop", 7, name="Dee Park", status="canceled", params={"plan": "pro"}),
    ]
    for body in calls:
        status, accepted = server.call("POST", "/v1/identify", body)
        assert status == 202, accepted
        if body.get("status") == "paid":
            server.ids["plan_event"] = accepted["event_id"]
    status, _ = server.call(
        "POST", "/v1/sources", {"connector": "stripe", "project": "shop", "name": "Stripe live",
                                "secrets": ["whsec_0123456789abcdefABCDEF"]},
    )  # fmt: skip
    assert status == 201
    _deliver_webhooks(server)
    _failed_stripe_events(server)

    def applied() -> bool:
        status, body = server.call("GET", "/v1/customers?limit=10")
        return status == 200 and len(body["data"]) == 6 and _settled(server)

    _wait(applied, "the worker to apply the seed events", server=server)
    for name in ("ada", "bob", "cy"):
        server.ids[name] = server.call("GET", f"/v1/customers/{name}@example.com")[1]["id"]
    for label, scopes, project in [("read", ["read"], None), ("bound", ["read"], "app")]:
        status, created = server.call(
            "POST", "/v1/keys", {"scopes": scopes, "project": project, "name": label}
        )
        assert status == 201, created
        server.keys[label] = created["key"]


def _deliver_webhooks(server: Server) -> None:
    """A `standard` source fed by signed deliveries, so the overview charts a webhook source too."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    status, source = server.call(
        "POST",
        "/v1/sources",
        {"connector": "standard", "project": "app", "name": "Billing app", "secrets": [secret]},
    )
    assert status == 201, source
    signer = standardwebhooks.Webhook(secret)
    bodies = [
        {"type": "identify", "data": {"email": "cy@example.com", "params": {"seats": n}}} for n in range(1, 5)
    ] + [{"type": "ping", "data": {"email": "ada@example.com"}}, {"type": "invoice.paid", "data": {}}]
    now = datetime.now(UTC)
    for n, body in enumerate(bodies):
        # A time of its own for each: the signed header's is in seconds, and between equal times the
        # one applied last wins, so the seats would depend on the order the worker met them in.
        body["timestamp"] = (now - timedelta(seconds=len(bodies) - n)).isoformat()
        raw = json.dumps(body)
        msg_id = f"msg_{n}_{secrets.token_hex(4)}"
        request = urllib.request.Request(
            source["url"],
            data=raw.encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(msg_id, now, raw),
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 202)


def _stripe_delivery(url: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **stripe_headers(raw, SECRET)}
    with urllib.request.urlopen(urllib.request.Request(url, data=raw, headers=headers), timeout=10) as answer:
        assert answer.status == 200


def _failed_stripe_events(server: Server) -> None:
    """Two subscription updates whose customer lookup fails (the server's proxy for the Stripe API
    refuses connections, and it retries nothing): `failed`, their jobs in the failed registry. Then
    the customers' creations arrive, so applying the updates again would now succeed."""
    status, source = server.call(
        "POST", "/v1/sources", {"connector": "stripe", "project": "shop", "name": "Stripe with lookups",
                                "secrets": [SECRET], "options": {"api_key": API_KEY}},
    )  # fmt: skip
    assert status == 201, source
    people = {"failed_a": ("cus_BrowserAaaa01", "erin"), "failed_b": ("cus_BrowserBbbb02", "finn")}
    names = {"erin": "Erin Cole", "finn": "Finn Hale"}
    for label, (customer, _) in people.items():
        body = stripe_event("customer.subscription.updated", event_id=f"evt_{label}", customer=customer)
        _stripe_delivery(source["url"], body)

    def failed() -> bool:
        status, body = server.call("GET", "/v1/jobs/failed")
        return status == 200 and len(body["data"]) == 2

    _wait(failed, "the two lookups to fail", server=server)
    for label, (customer, who) in people.items():
        created = stripe_event(
            "customer.created",
            event_id=f"evt_created_{label}",
            id=customer,
            email=f"{who}@example.com",
            name=names[who],
        )
        _stripe_delivery(source["url"], created)
        server.ids[label] = next(
            e["id"] for e in server.call("GET", "/v1/events?status=failed")[1]["data"]
            if e["provider_event_id"] == f"evt_{label}"
        )  # fmt: skip

    def created() -> bool:
        return all(
            server.call("GET", f"/v1/customers/{who}@example.com")[0] == 200 for _, who in people.values()
        )

    _wait(created, "the customers' creations to be applied", server=server)
    # A forged delivery: the Sources page lists it, the overview names the source.
    forged = urllib.request.Request(source["url"], data=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(forged, timeout=10)


def _settled(server: Server) -> bool:
    ada = server.call("GET", "/v1/customers/ada@example.com")
    cy = server.call("GET", "/v1/customers/cy@example.com")
    if ada[0] != 200 or cy[0] != 200:
        return False
    shop_paid = ada[1]["projects"].get("shop", {}).get("status") == "paid" and "app" in ada[1]["projects"]
    return shop_paid and cy[1]["projects"]["app"]["params"].get("seats") == 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("dashboard-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env = {k: v for k, v in env.items() if not k.startswith("TRIBUTARY_")}
    env["TRIBUTARY_HOME"] = str(home)
    # Dead letters at once, for the failed-event tests: one immediate retry job and no more, and the
    # Stripe API behind a proxy that refuses connections (nothing leaves the machine).
    env["TRIBUTARY_RETRY_INTERVALS"] = "0"
    env["HTTPS_PROXY"] = f"http://127.0.0.1:{_free_port()}"
    env["NO_PROXY"] = "127.0.0.1,localhost"
    log = (home / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "tributary.app.cli", "serve", "--port", str(port), "--web-workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        key: list[str] = []

        def banner() -> bool:
            assert process.poll() is None, (home / "serve.log").read_text()
            key.extend(re.findall(r"(trb_[A-Za-z0-9]+)", (home / "serve.log").read_text())[:1])
            return bool(key)

        _wait(banner, "tributary serve to print its admin key")
        server = Server(f"http://127.0.0.1:{port}", key[0], home / "serve.log")

        def ready() -> bool:
            try:
                return server.call("GET", "/readyz")[0] == 200
            except OSError:
                return False

        _wait(ready, "the server to be ready")
        _seed(server)
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Tab:
    """A page in a fresh context that records console errors and failed page scripts."""

    def __init__(self, browser: Any, server: Server, **context: Any) -> None:
        self.server = server
        self.context = browser.new_context(**{"viewport": {"width": 1366, "height": 900}, **context})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.allowed: set[int] = set()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def allow(self, status: int) -> None:
        """An error status the test asks for: the browser logs its load, and that is no fault."""
        self.allowed.add(status)

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        expected = LOAD_FAILED.match(message.text)
        if expected and int(expected.group(1)) in self.allowed:
            return
        self.errors.append(message.text)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.server.base + path)

    def sign_in(self, key: str) -> None:
        self.goto("/dashboard/sign-in")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r"/dashboard/$"))

    def shot(self, name: str, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    opened = Tab(browser, server)
    yield opened
    opened.close()


def test_admin_walks_every_page(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.goto("/dashboard/sign-in")
    tab.shot("01-sign-in", full_page=False)
    tab.sign_in(server.admin)
    page.wait_for_selector(".uplot")  # the chart library drew the 24 h chart
    tab.shot("02-overview")

    # Customers: filter by project and a param through the form (htmx swaps the results).
    tab.goto("/dashboard/customers")
    page.get_by_label("Project").select_option("shop")
    page.get_by_label("Param key 1").fill("plan")
    page.get_by_label("Param value 1").fill("pro")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"project=shop.*pk=plan"))
    results = page.locator("#results")
    results.get_by_text("dee@example.com").wait_for()
    assert results.get_by_text("ada@example.com").count() == 1
    assert results.get_by_text("bob@example.com").count() == 0
    tab.shot("03-customers-filtered")
    # An invalid filter: the errors replace the results (a 400 that htmx is told to show).
    tab.allow(400)
    page.get_by_label("Status").fill("Not A Slug")
    page.get_by_role("button", name="Apply filters").click()
    results.get_by_text("Some filters are not valid").wait_for()
    page.get_by_label("Status").fill("")
    page.get_by_role("button", name="Apply filters").click()
    results.get_by_text("dee@example.com").wait_for()

    # A customer, then the provenance link of her plan to the event that set it.
    results.get_by_role("link", name="ada@example.com").click()
    page.wait_for_url(re.compile(r"/dashboard/customers/cus_"))
    assert page.get_by_text("stale write").count() >= 1
    tab.shot("04-customer")
    plan = page.locator("tr", has=page.locator("code", has_text="plan"))
    plan.get_by_role("link").first.click()
    page.wait_for_url(re.compile(rf"/dashboard/events/{server.ids['plan_event']}$"))
    assert page.get_by_text('"plan": "pro"').count() >= 1
    tab.shot("05-event")

    pages = {
        "06-events": "/dashboard/events",
        "07-sources": "/dashboard/sources",
        "08-keys": "/dashboard/keys",
    }
    more = {
        "09-source-new": "/dashboard/sources/new",
        "13-failed-jobs": "/dashboard/failed-jobs",
        "14-events-failed": "/dashboard/events?status=failed",
    }
    for name, path in {**pages, **more}.items():
        assert tab.goto(path).status == 200
        tab.shot(name)
    assert page.get_by_role("button", name="Copy").count() == 0  # the create form has no URL yet
    tab.goto("/dashboard/sources")
    assert page.get_by_role("button", name="Copy").first.is_visible()


def test_phone_width_and_keyboard(browser: Any, server: Server) -> None:
    tab = Tab(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        tab.goto("/dashboard/sign-in")
        # The key field takes focus itself (autofocus). Chromium applies autofocus at its next
        # rendering step, which may come after "load": wait for it, or the first keys are lost.
        field = tab.page.get_by_label("API key")
        sync_api.expect(field).to_be_focused()
        tab.page.keyboard.type(server.admin)
        sync_api.expect(field).to_have_value(server.admin)  # every key reached the field
        tab.page.keyboard.press("Enter")
        tab.page.wait_for_url(re.compile(r"/dashboard/$"))
        tab.page.keyboard.press("Tab")
        assert tab.page.evaluate("document.activeElement.textContent") == "Skip to content"
        tab.goto("/dashboard/customers")
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
        tab.shot("10-customers-phone")
        tab.goto(f"/dashboard/customers/{server.ids['ada']}")
        tab.shot("11-customer-phone")
    finally:
        tab.close()


def test_pages_are_readable_without_javascript(browser: Any, server: Server) -> None:
    tab = Tab(browser, server, java_script_enabled=False)
    try:
        tab.sign_in(server.admin)
        tab.goto("/dashboard/customers?project=app")
        assert tab.page.get_by_text("cy@example.com").count() == 1
        tab.page.get_by_label("Status").fill("active")
        tab.page.get_by_role("button", name="Apply filters").click()
        tab.page.wait_for_url(re.compile(r"status=active"))
        assert tab.page.get_by_text("ada@example.com").count() == 0
        tab.goto("/dashboard/")
        assert (
            tab.page.get_by_role("rowheader", name="API (identify, ping)").count() == 1
        )  # the chart's table
    finally:
        tab.close()


def test_read_key_sees_no_mutation_buttons(tab: Tab, server: Server) -> None:
    tab.sign_in(server.keys["read"])
    page = tab.page
    assert page.get_by_role("link", name="Keys").count() == 0
    tab.goto(f"/dashboard/customers/{server.ids['ada']}")
    assert page.get_by_text("Erase").count() == 0
    tab.goto("/dashboard/sources")
    assert page.get_by_text("New source").count() == 0
    tab.shot("12-read-only-sources")
    tab.allow(403)
    assert tab.goto("/dashboard/keys").status == 403


def test_project_bound_key_gets_404_for_another_projects_customer(tab: Tab, server: Server) -> None:
    tab.sign_in(server.keys["bound"])
    assert tab.goto(f"/dashboard/customers/{server.ids['cy']}").status == 200
    tab.allow(404)
    assert tab.goto(f"/dashboard/customers/{server.ids['bob']}").status == 404


def test_csrf_less_post_is_refused(tab: Tab, server: Server) -> None:
    tab.sign_in(server.admin)
    tab.allow(403)
    status = tab.page.evaluate(
        """() => fetch('/dashboard/keys', {method: 'POST', body: new URLSearchParams({scopes: 'admin'})})
                 .then(r => r.status)"""
    )
    assert status == 403
    _, keys = server.call("GET", "/v1/keys")
    assert len(keys["data"]) == 3  # the first-start admin key and the two the seed made: none added


def test_admin_replays_a_failed_event_and_retries_a_failed_job(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.sign_in(server.admin)
    failed_a, failed_b = server.ids["failed_a"], server.ids["failed_b"]

    # Open the failed event from the failed list, preview its replay, then apply it.
    tab.goto("/dashboard/events?status=failed")
    page.locator(f'a[href="/dashboard/events/{failed_a}"]').click()
    page.wait_for_url(re.compile(rf"/dashboard/events/{failed_a}$"))
    assert page.locator("#event-status").inner_text() == "failed"
    assert page.get_by_text("CustomerLookupFailed").count() >= 1
    page.get_by_role("button", name="Preview replay").click()
    diff = page.locator("table.diff")
    diff.wait_for()
    status_row = diff.locator("tr", has=page.locator("code", has_text="projects.shop.status"))
    assert status_row.inner_text().split("\t") == [
        "erin@example.com",
        "projects.shop.status",
        "null",
        '→ "paid"',
    ]
    tab.shot("15-replay-preview", full_page=False)
    page.get_by_role("button", name="Apply replay").click()
    page.locator("#replay-result").wait_for()
    assert page.locator("#event-status").inner_text() == "processed"
    tab.shot("16-replayed")

    # The replay settled A's dead-letter job; B's is still there. Delete asks first; retry requeues.
    tab.goto("/dashboard/failed-jobs")
    assert page.get_by_role("button", name=f"Retry event-{failed_a}").count() == 0
    page.get_by_role("link", name=f"Delete event-{failed_b}").click()
    page.get_by_role("button", name="Delete job").wait_for()
    tab.shot("17-failed-job-delete")
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("button", name=f"Retry event-{failed_b}").click()
    page.wait_for_url(re.compile(r"/dashboard/failed-jobs$"))

    def processed() -> bool:
        return server.call("GET", f"/v1/events/{failed_b}")[1]["status"] == "processed"

    _wait(processed, "the worker to run the retried job", server=server)
    tab.goto("/dashboard/failed-jobs")
    page.get_by_text("No failed jobs.").wait_for()
    tab.goto(f"/dashboard/events/{failed_b}")
    assert page.locator("#event-status").inner_text() == "processed"
    tab.goto("/dashboard/sources")
    assert page.get_by_text("invalid_signature").count() >= 1
    tab.goto("/dashboard/")
    assert page.get_by_text("Sources refusing deliveries").count() == 1
