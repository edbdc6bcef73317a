"""Every API key against every route of the app's URL map: scopes by tenancy.

Keys: each scope (`ingest`, `read`, `admin`) account-wide, bound to project alpha (the owner of the
targets), and bound to project beta (the other project), plus no key, an unknown key and a revoked
one. Targets live in alpha or belong to the account (projects, account-wide keys, erasure). Every
answer is checked: the status (401/403/404 when refused, the success status when allowed) and the
body, which must never name anything the key cannot see (ids, emails, slugs and values of other
projects and of account-wide keys).

A route of the URL map that is not in `ROUTES` or `PUBLIC` fails `test_every_route_is_in_the_matrix`:
add its row here (the scope-only checks of `test_scopes_on_every_described_route` run regardless).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from tests.connectors.stripe_helpers import load
from tests.helpers import auth, identify, make_key
from tests.ops.test_events_access import _broken_event, _work
from tributary.app.auth import _GRANTS
from tributary.connectors.testkit import stripe_headers
from tributary.runtime.process import Runtime

SCOPES = ("ingest", "read", "admin")
BINDINGS = ("*", "alpha", "beta")  # account-wide, the targets' project, another project
SLUG = {"alpha": "proj-alpha", "beta": "proj-beta"}
# Routes that take no API key: their own authentication (webhook signatures) or none.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    # Its own optional token (TRIBUTARY_METRICS_TOKEN), tested in tests/ops.
    ("GET", "/metrics"),
    ("GET", "/webhooks/<source_id>"),
    ("POST", "/webhooks/<source_id>"),
    ("GET", "/static/<path:filename>"),
    ("GET", "/"),  # a redirect to the dashboard
}
# The dashboard's pages take no API key but a signed-in session cookie: sign-in, scopes, tenancy and
# CSRF are tested in tests/dashboard/test_security.py, and every page refuses a request without the
# cookie in `test_dashboard_pages_need_a_session` below.
DASHBOARD = "/dashboard/"


@dataclass
class World:
    """Projects alpha and beta, their sources, customers and keys, and what each area keeps private."""

    client: FlaskClient
    runtime: Runtime
    drain: Callable[[], None]
    keys: dict[str, str] = field(default_factory=dict)  # "scope@binding" -> token
    private: dict[str, set[str]] = field(default_factory=dict)  # "alpha" | "beta" | "*" -> tokens
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    events: dict[str, str] = field(default_factory=dict)  # binding -> an identify event of it
    failed_jobs: dict[str, list[str]] = field(default_factory=dict)  # binding -> jobs in the registry
    secrets: dict[str, str] = field(default_factory=dict)  # source id -> its signing secret
    deferred: dict[str, str] = field(default_factory=dict)  # binding -> an event waiting for a person

    @property
    def root(self) -> dict[str, str]:
        return auth(self.keys["admin@*"])

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = auth(token) if token else {}
        return self.client.open(path, method=method, json=body, headers=headers)

    def make(self, method: str, path: str, body: Any = None) -> Any:
        response = self.call(method, path, body, self.keys["admin@*"])
        assert response.status_code in (200, 201, 202), (path, response.get_json())
        return response.get_json()

    def fresh_key(self, binding: str) -> str:
        project = {"project": SLUG[binding]} if binding != "*" else {}
        key = self.make("POST", "/v1/keys", {"scopes": ["read"], **project})
        self.private[binding] |= {key["id"], key["prefix"]}
        return str(key["id"])

    def fresh_source(self, binding: str, *, secret: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"connector": "stripe", "project": SLUG.get(binding, "default")}
        if secret:
            body["secrets"] = [f"whsec_matrix_{next(self.counter):04d}_0123456789abcdef"]
        source: dict[str, Any] = self.make("POST", "/v1/sources", body)
        if secret:
            self.secrets[source["id"]] = body["secrets"][0]
        self.private[binding].add(source["id"])
        return source

    def deferred_event(self, binding: str) -> str:
        """A Stripe subscription event of binding's source for a customer nothing has named (and no
        `api_key` to ask): it waits as `deferred`, awaiting `stripe:cus_Wait<Binding>`."""
        if binding not in self.deferred:
            source_id = self.sources[binding]["id"]
            payload = copy.deepcopy(load("customer.subscription.updated"))
            payload["id"] = f"evt_wait_{binding}"
            payload["data"]["object"]["customer"] = f"cus_Wait{binding.title()}"
            raw = json.dumps(payload).encode()
            headers = {"Content-Type": "application/json", **stripe_headers(raw, self.secrets[source_id])}
            assert self.client.post(f"/webhooks/{source_id}", data=raw, headers=headers).status_code == 200
            self.drain()
            [event] = self.make("GET", f"/v1/events?status=deferred&source={source_id}")["data"]
            assert event["awaiting"] == f"stripe:cus_Wait{binding.title()}", event
            self.deferred[binding] = event["id"]
            self.private[binding] |= {event["id"], f"cus_Wait{binding.title()}", f"evt_wait_{binding}"}
        return self.deferred[binding]

    def fresh_replay(self, binding: str) -> str:
        """A background replay started by binding's admin key (account-wide: `*`)."""
        token = self.keys[f"admin@{binding}"]
        response = self.call("POST", "/v1/events/replay", {"connector": "identify"}, token)
        assert response.status_code == 202, response.get_json()
        replay_id = str(response.get_json()["id"])
        self.private[binding].add(replay_id)
        return replay_id

    def fresh_import(self, binding: str) -> str:
        body = {
            "kind": "csv",
            "project": SLUG[binding],
            "csv": "email\nimported@example.com\n",
            "dry_run": True,
        }
        import_id = str(self.make("POST", "/v1/imports", body)["id"])
        self.private[binding].add(import_id)
        return import_id

    def failed_job(self, binding: str) -> str:
        """A job of binding's project that is in the failed registry now (a retry or delete by a
        previous request took the last one out: make more)."""
        pool = self.failed_jobs.setdefault(binding, [])
        while (
            pool
            and self.call("GET", f"/v1/jobs/failed/{pool[0]}", token=self.keys["admin@*"]).status_code != 200
        ):
            pool.pop(0)
        if not pool:
            for _ in range(3):
                event_id = _broken_event(self.runtime, SLUG[binding])
                self.private[binding].add(event_id)
                pool.append(f"event-{event_id}")
            _work(self.runtime)
        return pool[0]

    def fresh_customer(self, *bindings: str) -> str:
        email = f"fresh{next(self.counter)}@example.com"
        for binding in bindings:
            identify(self.client, self.keys["admin@*"], email=email, project=SLUG[binding])
        self.drain()
        return email


@pytest.fixture
def world(
    client: FlaskClient,
    runtime: Runtime,
    account_id: str,
    drain: Callable[[], None],
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    # One automatic retry: a broken event's job reaches the failed registry in one worker run.
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, retry_intervals=(0,)))
    w = World(client, runtime, drain, private={"*": set(), "alpha": set(), "beta": set()})
    w.keys["admin@*"] = make_key(runtime, ["admin"])
    for binding in ("alpha", "beta"):
        project = w.make("POST", "/v1/projects", {"slug": SLUG[binding], "name": f"Name {binding}"})
        w.private[binding] |= {project["id"], SLUG[binding], f"Name {binding}"}
    for scope, binding in itertools.product(SCOPES, BINDINGS):
        project = {"project": SLUG[binding]} if binding != "*" else {}
        created = w.make("POST", "/v1/keys", {"scopes": [scope], "name": f"{scope}@{binding}", **project})
        w.keys.setdefault(f"{scope}@{binding}", created["key"])
        w.private[binding] |= {created["id"], created["prefix"], f"{scope}@{binding}"}
    revoked = w.make("POST", "/v1/keys", {"scopes": ["admin"]})
    w.make("DELETE", f"/v1/keys/{revoked['id']}")
    w.keys["revoked"], w.keys["unknown"] = revoked["key"], "trb_" + "x" * 32
    for binding in ("alpha", "beta", "*"):
        w.sources[binding] = w.fresh_source(binding, secret=True)
    # A customer per project, and one in both with different statuses and params.
    token = w.keys["admin@*"]
    for binding in ("alpha", "beta"):
        email = f"only-{binding}@example.com"
        event = identify(w.client, token, email=email, project=SLUG[binding], status=f"st-{binding}")
        shared = identify(
            w.client, token, email="both@example.com", project=SLUG[binding], params={f"p_{binding}": 1}
        )
        w.private[binding] |= {email, event["event_id"], shared["event_id"], f"st-{binding}", f"p_{binding}"}
        w.events[binding] = event["event_id"]
    drain()
    for binding in ("alpha", "beta"):
        w.private[binding].add(w.make("GET", f"/v1/customers/only-{binding}@example.com")["id"])
    return w


# -- what each route is asked, and what each key must get ------------------------------------------


@dataclass
class Target:
    """One request. `owner`: `alpha` (a resource of the project), `account` (only account-wide admin
    keys may), or `list` (everyone with the scope gets 200, filtered to what they may see)."""

    owner: str
    build: Callable[[World], tuple[str, Any]]  # -> (path with query, JSON body)
    success: int = 200
    # What a project-bound key gets that may not: for `alpha` targets a key of beta (default 404),
    # for `account` targets any bound key (default 403).
    other: int | None = None
    must_show: Callable[[World, str], set[str]] = lambda _w, _b: set()


def _own(kind: str) -> Callable[[World, str], set[str]]:
    """Tokens a list must contain for a key of `binding`: its own project's `kind` ids."""

    def tokens(w: World, binding: str) -> set[str]:
        areas = ("alpha", "beta", "*") if binding == "*" else (binding,)
        if kind == "source":
            return {w.sources[a]["id"] for a in areas}
        if kind == "project":
            return {SLUG[a] for a in areas if a in SLUG}
        if kind == "customer":
            return {f"only-{a}@example.com" for a in areas if a in SLUG}
        if kind == "event":
            return {w.events[a] for a in areas if a in SLUG}
        if kind == "deferred":
            return {w.deferred_event(a) for a in areas if a in SLUG}
        if kind == "failed_job":
            return {w.failed_job(a) for a in areas if a in SLUG}
        return {f"read@{a}" for a in areas}  # key names

    return tokens


def _alpha(path: str, body: Any = None, **kw: Any) -> Target:
    return Target("alpha", lambda w: (path, body), **kw)


ROUTES: dict[tuple[str, str], list[Target]] = {
    ("GET", "/v1/projects"): [Target("list", lambda w: ("/v1/projects", None), must_show=_own("project"))],
    ("POST", "/v1/projects"): [
        Target("account", lambda w: ("/v1/projects", {"slug": f"new-{next(w.counter)}"}), success=201)
    ],
    ("GET", "/v1/keys"): [Target("list", lambda w: ("/v1/keys", None), must_show=_own("key"))],
    ("POST", "/v1/keys"): [
        _alpha("/v1/keys", {"scopes": ["read"], "project": SLUG["alpha"]}, success=201, other=403),
        Target("account", lambda w: ("/v1/keys", {"scopes": ["read"]}), success=201),
    ],
    ("DELETE", "/v1/keys/<key_id>"): [
        Target("alpha", lambda w: (f"/v1/keys/{w.fresh_key('alpha')}", None)),
        Target("account", lambda w: (f"/v1/keys/{w.fresh_key('*')}", None), other=404),
    ],
    ("GET", "/v1/sources"): [
        Target("list", lambda w: ("/v1/sources", None), must_show=_own("source")),
        _alpha(f"/v1/sources?project={SLUG['alpha']}", other=403),
    ],
    ("POST", "/v1/sources"): [
        _alpha("/v1/sources", {"connector": "stripe", "project": SLUG["alpha"]}, success=201, other=403)
    ],
    ("GET", "/v1/sources/<source_id>"): [
        Target("alpha", lambda w: (f"/v1/sources/{w.sources['alpha']['id']}", None))
    ],
    ("DELETE", "/v1/sources/<source_id>"): [
        Target("alpha", lambda w: (f"/v1/sources/{w.fresh_source('alpha')['id']}", None))
    ],
    ("POST", "/v1/sources/<source_id>/secrets"): [
        Target(
            "alpha",
            lambda w: (f"/v1/sources/{w.fresh_source('alpha')['id']}/secrets", {"secret": "whsec_x" * 4}),
            success=201,
        )
    ],
    ("DELETE", "/v1/sources/<source_id>/secrets/<secret_id>"): [
        Target(
            "alpha",
            lambda w: (
                (s := w.fresh_source("alpha", secret=True))
                and f"/v1/sources/{s['id']}/secrets/{s['secrets'][0]['id']}",
                None,
            ),
        )
    ],
    ("GET", "/v1/customers"): [
        Target("list", lambda w: ("/v1/customers", None), must_show=_own("customer")),
        _alpha(f"/v1/customers?project={SLUG['alpha']}", other=403),
    ],
    ("GET", "/v1/customers/<ref>"): [
        _alpha("/v1/customers/only-alpha@example.com"),
        _alpha("/v1/customers/both@example.com", other=200),
    ],
    ("GET", "/v1/customers/<ref>/timeline"): [
        _alpha("/v1/customers/only-alpha@example.com/timeline"),
        _alpha("/v1/customers/both@example.com/timeline", other=200),
    ],
    # Erasure removes the whole person: a bound key only erases people no other project knows.
    ("DELETE", "/v1/customers/<ref>"): [
        Target("alpha", lambda w: (f"/v1/customers/{w.fresh_customer('alpha')}", None), success=204),
        Target(
            "account", lambda w: (f"/v1/customers/{w.fresh_customer('alpha', 'beta')}", None), success=204
        ),
    ],
    ("POST", "/v1/identify"): [
        _alpha("/v1/identify", {"email": "new@example.com", "project": SLUG["alpha"]}, success=202, other=403)
    ],
    # A batch whose every message names a project the key may not use has nothing valid: a 400
    # whose per-message results carry the 403.
    ("POST", "/v1/batch"): [
        _alpha(
            "/v1/batch",
            {"batch": [{"type": "identify", "email": "new@example.com", "project": SLUG["alpha"]}]},
            success=202,
            other=400,
        )
    ],
    ("POST", "/v1/ping"): [
        _alpha("/v1/ping", {"email": "new@example.com", "project": SLUG["alpha"]}, success=202, other=403)
    ],
    # Operators' routes (tests/ops): events, replays and failed jobs of project alpha; account-wide
    # replays; lists filtered to the key's project.
    ("GET", "/v1/events"): [
        Target("list", lambda w: ("/v1/events", None), must_show=_own("event")),
        _alpha(f"/v1/events?project={SLUG['alpha']}", other=403),
        Target(
            "list",
            lambda w: (
                w.deferred_event("alpha") and w.deferred_event("beta") and "/v1/events?status=deferred",
                None,
            ),
            must_show=_own("deferred"),
        ),
    ],
    ("GET", "/v1/events/<event_id>"): [Target("alpha", lambda w: (f"/v1/events/{w.events['alpha']}", None))],
    ("POST", "/v1/events/<event_id>/replay"): [
        Target("alpha", lambda w: (f"/v1/events/{w.events['alpha']}/replay?dry_run=true", None)),
        Target("alpha", lambda w: (f"/v1/events/{w.events['alpha']}/replay", None)),
    ],
    ("POST", "/v1/events/replay"): [
        Target("list", lambda w: ("/v1/events/replay", {"connector": "identify", "dry_run": True})),
        Target("list", lambda w: ("/v1/events/replay", {"connector": "identify"}), success=202),
        _alpha("/v1/events/replay", {"project": SLUG["alpha"], "dry_run": True}, other=403),
        _alpha("/v1/events/replay", {"project": SLUG["alpha"]}, success=202, other=403),
    ],
    ("GET", "/v1/replays/<replay_id>"): [
        Target("alpha", lambda w: (f"/v1/replays/{w.fresh_replay('alpha')}", None)),
        Target("account", lambda w: (f"/v1/replays/{w.fresh_replay('*')}", None), other=404),
    ],
    ("DELETE", "/v1/replays/<replay_id>"): [
        Target("alpha", lambda w: (f"/v1/replays/{w.fresh_replay('alpha')}", None)),
        Target("account", lambda w: (f"/v1/replays/{w.fresh_replay('*')}", None), other=404),
    ],
    ("GET", "/v1/jobs/failed"): [
        Target(
            "list",
            lambda w: (w.failed_job("alpha") and w.failed_job("beta") and "/v1/jobs/failed", None),
            must_show=_own("failed_job"),
        ),
    ],
    ("GET", "/v1/jobs/failed/<job_id>"): [
        Target("alpha", lambda w: (f"/v1/jobs/failed/{w.failed_job('alpha')}", None))
    ],
    ("POST", "/v1/jobs/failed/<job_id>/retry"): [
        Target("alpha", lambda w: (f"/v1/jobs/failed/{w.failed_job('alpha')}/retry", None), success=202)
    ],
    ("POST", "/v1/jobs/failed/retry"): [
        Target(
            "list",
            lambda w: (w.failed_job("alpha") and w.failed_job("beta") and "/v1/jobs/failed/retry", None),
            success=202,
        )
    ],
    ("DELETE", "/v1/jobs/failed/<job_id>"): [
        Target("alpha", lambda w: (f"/v1/jobs/failed/{w.failed_job('alpha')}", None), success=204)
    ],
    ("GET", "/v1/sources/<source_id>/rejections"): [
        Target("alpha", lambda w: (f"/v1/sources/{w.sources['alpha']['id']}/rejections", None))
    ],
    ("POST", "/v1/imports"): [
        _alpha(
            "/v1/imports",
            {"kind": "csv", "project": SLUG["alpha"], "csv": "email\nnew@example.com\n", "dry_run": True},
            success=202,
            other=403,
        ),
        Target(
            "alpha",
            lambda w: (
                "/v1/imports",
                {"kind": "stripe", "source": w.sources["alpha"]["id"], "dry_run": True},
            ),
            success=202,
        ),
    ],
    ("GET", "/v1/imports/<import_id>"): [
        Target("alpha", lambda w: (f"/v1/imports/{w.fresh_import('alpha')}", None))
    ],
}


def _expected(target: Target, scope_needed: str, key: str) -> int:
    if key in ("none", "unknown", "revoked"):
        return 401
    scope, binding = key.split("@")
    if scope not in _GRANTS[scope_needed]:
        return 403
    if target.owner == "account" and binding != "*":
        return target.other or 403
    if target.owner == "alpha" and binding == "beta":
        return target.other or 404
    return target.success


KEYS = ["none", "unknown", "revoked", *(f"{s}@{b}" for s, b in itertools.product(SCOPES, BINDINGS))]


def _rules(app: Flask) -> dict[tuple[str, str], Rule]:
    return {
        (method, rule.rule): rule
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    }


def _leaks(world: World, key: str, request_text: str, body: str) -> set[str]:
    """Tokens in `body` the key may not see (those it sent itself excepted)."""
    if "@" not in key or key.endswith("@*"):
        hidden = set().union(*world.private.values()) if "@" not in key else set()
    else:
        binding = key.split("@")[1]
        hidden = set().union(*(tokens for area, tokens in world.private.items() if area != binding))
    return {t for t in hidden if t in body and t not in request_text}


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_key_matrix(app: Flask, world: World, route: tuple[str, str]) -> None:
    rule = _rules(app).get(route)
    assert rule is not None, f"{route} is in ROUTES but not in the app"
    operation = getattr(app.view_functions[rule.endpoint], "openapi", None)
    assert operation is not None and operation.scope, f"{route} declares no scope with @describe"
    failures = []
    for target in ROUTES[route]:
        for key in KEYS:
            path, body = target.build(world)
            response = world.call(route[0], path, body, world.keys.get(key))
            expected = _expected(target, operation.scope, key)
            text = response.get_data(as_text=True)
            request_text = path + json.dumps(body)
            if response.status_code != expected:
                failures.append(
                    f"{key} {route[0]} {path}: {response.status_code}, expected {expected}: {text}"
                )
            if leaked := _leaks(world, key, request_text, text):
                failures.append(f"{key} {route[0]} {path}: leaks {sorted(leaked)}")
            if response.status_code >= 400 and text:
                assert set(json.loads(text)) == {"error"}, text
            if expected == 200 and target.owner == "list" and "@" in key:
                missing = target.must_show(world, key.split("@")[1]) - set(_strings(json.loads(text)))
                if missing:
                    failures.append(f"{key} GET {path}: misses its own {sorted(missing)}")
    assert not failures, "\n".join(failures)


def _strings(data: Any) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return [data] if isinstance(data, str) else []


def test_every_route_is_in_the_matrix(app: Flask) -> None:
    missing = sorted(r for r in set(_rules(app)) - set(ROUTES) - PUBLIC if not r[1].startswith(DASHBOARD))
    assert not missing, (
        "routes without a row in tests/app/test_access_matrix.py ROUTES (or PUBLIC): "
        + ", ".join(f"{m} {p}" for m, p in missing)
    )


def test_scopes_on_every_described_route(app: Flask, world: World) -> None:
    """Without a row of ROUTES too: no key is a 401 and a key without the scope a 403, everywhere."""
    failures = []
    for (method, path), rule in _rules(app).items():
        operation = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if (method, path) in PUBLIC or path.startswith(DASHBOARD):
            continue
        if operation is None or not operation.scope:
            failures.append(f"{method} {path}: not public and declares no scope")
            continue
        concrete = _fill(rule)
        for key in KEYS:
            scope = key.split("@")[0]
            if "@" in key and scope in _GRANTS[operation.scope]:
                continue
            response = world.call(method, concrete, {}, world.keys.get(key))
            expected = 403 if "@" in key else 401
            if response.status_code != expected:
                failures.append(f"{key} {method} {concrete}: {response.status_code}, expected {expected}")
    assert not failures, "\n".join(failures)


def _fill(rule: Rule) -> str:
    path = rule.rule
    for name in rule.arguments:
        for converter in ("", "string:", "path:", "int:"):
            path = path.replace(f"<{converter}{name}>", "x1" if converter != "int:" else "1")
    return path


def test_dashboard_pages_need_a_session(app: Flask, world: World) -> None:
    """Without the session cookie every dashboard page sends to sign-in, and no post is carried out;
    an API key is no way in either."""
    open_pages = {"/dashboard/sign-in", "/dashboard/static/<path:filename>"}
    failures = []
    for (method, path), rule in _rules(app).items():
        if not path.startswith(DASHBOARD) or path in open_pages:
            continue
        for key in ("none", "admin@*"):
            response = world.call(method, _fill(rule), None, world.keys.get(key))
            location = response.headers.get("Location", "")
            refused = response.status_code in (400, 403) or (
                response.status_code == 302 and "/dashboard/sign-in" in location
            )
            if not refused:
                failures.append(f"{key} {method} {path}: {response.status_code} {location}")
    assert not failures, "\n".join(failures)
