"""Order independence through the real API, database and worker, not just the pure rules."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import customer, identify
from tributary.runtime.process import Runtime
from tributary.workers.jobs import drain_batch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
values = st.one_of(st.integers(0, 3), st.sampled_from(["basic", "pro"]), st.booleans())


@st.composite
def calls(draw: Any) -> list[dict[str, Any]]:
    minutes = draw(st.lists(st.integers(0, 5000), min_size=1, max_size=8, unique=True))
    out = []
    for minute in minutes:
        keys = draw(st.lists(st.sampled_from(["plan", "seats", "coupon"]), unique=True, max_size=3))
        ops = {k: draw(st.sampled_from(["set", "once", "unset"])) for k in keys}
        call: dict[str, Any] = {"timestamp": (T0 + timedelta(minutes=minute)).isoformat()}
        if name := draw(st.one_of(st.none(), st.sampled_from(["Ada", "Grace"]))):
            call["name"] = name
        if status := draw(st.one_of(st.none(), st.sampled_from(["trial", "paid", "churned"]))):
            call["status"] = status
        for op, field in (("set", "params"), ("once", "params_once")):
            if chosen := {k: draw(values) for k, o in ops.items() if o == op}:
                call[field] = chosen
        if unset := [k for k, o in ops.items() if o == "unset"]:
            call["params_unset"] = unset
        out.append(call)
    return out


def _view(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["name"], record["last_activity_at"], record["projects"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=calls(), seed=st.integers(0, 2**32))
def test_shuffled_deliveries_converge_to_the_in_order_record(
    client: FlaskClient, admin_key: str, runtime: Runtime, changes: list[dict[str, Any]], seed: int
) -> None:
    tag = uuid.uuid4().hex[:10]
    ordered, shuffled = f"in-order-{tag}@example.com", f"shuffled-{tag}@example.com"
    for call in sorted(changes, key=lambda c: c["timestamp"]):
        identify(client, admin_key, email=ordered, **call)
    drain_batch(runtime, limit=1000)
    rng = random.Random(seed)
    for call in rng.sample(changes, len(changes)):
        identify(client, admin_key, email=shuffled, **call)
        if rng.random() < 0.5:  # sometimes several in one batch, sometimes one per batch
            drain_batch(runtime, limit=1000)
    drain_batch(runtime, limit=1000)
    assert _view(customer(client, admin_key, shuffled)) == _view(customer(client, admin_key, ordered))
