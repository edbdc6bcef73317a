"""Uniting two customers into one (SPEC §4, "Email change"): pure functions on snapshots. No I/O.

When an email change shows that two customer records are one person, `unite_customers` /
`unite_projects` join every clocked register (name, status, each params key) with the event-time
clocks of workers/batch/merge_rules.py, so that the result does not depend on the order in which
deliveries arrive: the value set by the later strong write wins, weak writes (`params_once`, signup
statuses) are pooled, activity takes the maximum and first-seen the minimum. Joining is commutative,
so the united record is the same whichever customer survives; ties between equal event times go to
the value that sorts first as JSON, for the same reason. The two addresses are joined by
`EmailRecord.united` (workers/batch/email_record.py).

Clock entry layout (see workers/batch/merge_rules.py): `{"t": micros}` strong set, `"u": 1` strong
unset, `"o": [[micros, value], ...]` weak writes later than `t`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tributary.workers.batch.merge_rules import ABSENT, MAX_PENDING_WEAK, CustomerRecord, ProjectRecord

__all__ = ["unite_customers", "unite_projects"]


def _order(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _join_register(
    key: str,
    a_values: Mapping[str, Any],
    a_clock: Mapping[str, Any],
    b_values: Mapping[str, Any],
    b_clock: Mapping[str, Any],
) -> tuple[Any, dict[str, Any] | None]:
    """The value and clock entry of one register after uniting two records."""
    a_entry, b_entry = a_clock.get(key) or {}, b_clock.get(key) or {}
    a_value, b_value = a_values.get(key, ABSENT), b_values.get(key, ABSENT)
    if not a_entry and not b_entry:
        # Unclocked values (written before clocks existed): keep whichever is present.
        if a_value is ABSENT:
            return b_value, None
        if b_value is ABSENT:
            return a_value, None
        return min(a_value, b_value, key=_order), None
    # The strong write with the later time holds the register (absent entries lose).
    strong: tuple[int, bool, Any] | None = None
    for entry, value in ((a_entry, a_value), (b_entry, b_value)):
        if "t" not in entry:
            continue
        unset = "u" in entry
        # The value a strong *set* wrote is the one currently held; after an unset it may be a
        # pending weak value, which the pooled list below re-derives.
        candidate = (int(entry["t"]), unset, None if unset else value)
        if strong is None or candidate[0] > strong[0]:
            strong = candidate
        elif candidate[0] == strong[0]:
            if strong[1] and not unset:
                strong = candidate  # a set beats an unset at the same time, deterministically
            elif not strong[1] and not unset and _order(candidate[2]) < _order(strong[2]):
                strong = candidate
    pooled = sorted(
        {(int(w[0]), _order(w[1])): w for w in [*a_entry.get("o", ()), *b_entry.get("o", ())]}.values(),
        key=lambda w: (w[0], _order(w[1])),
    )
    if strong is not None:
        pooled = [w for w in pooled if w[0] > strong[0]]
    pending = [list(w) for w in pooled[:MAX_PENDING_WEAK]]
    entry_out: dict[str, Any] = {}
    if strong is not None:
        entry_out["t"] = strong[0]
        if strong[1]:
            entry_out["u"] = 1
    if pending:
        entry_out["o"] = pending
    if strong is not None and not strong[1]:
        return strong[2], entry_out
    return (pending[0][1] if pending else ABSENT), entry_out or None


def unite_customers(survivor: CustomerRecord, absorbed: CustomerRecord) -> CustomerRecord:
    """Customer-level registers (name) joined, activity maximal. The email clock is the caller's
    (`EmailRecord.united`), so it is carried over from `survivor` untouched."""
    clock = dict(survivor.clock)
    a_values = {} if survivor.name is None else {"name": survivor.name}
    b_values = {} if absorbed.name is None else {"name": absorbed.name}
    name, entry = _join_register("name", a_values, survivor.clock, b_values, absorbed.clock)
    clock.pop("name", None)
    if entry is not None:
        clock["name"] = entry
    activity = [t for t in (survivor.last_activity_at, absorbed.last_activity_at) if t is not None]
    return CustomerRecord(
        name=None if name is ABSENT else name,
        clock=clock,
        last_activity_at=max(activity) if activity else None,
    )


def unite_projects(a: ProjectRecord, b: ProjectRecord) -> ProjectRecord:
    """One project's state of two customers, joined register by register."""
    clock: dict[str, Any] = {}
    a_status = {} if a.status is None else {"status": a.status}
    b_status = {} if b.status is None else {"status": b.status}
    status, entry = _join_register("status", a_status, a.clock, b_status, b.clock)
    if entry is not None:
        clock["status"] = entry
    a_params_clock: Mapping[str, Any] = a.clock.get("params") or {}
    b_params_clock: Mapping[str, Any] = b.clock.get("params") or {}
    params: dict[str, Any] = {}
    params_clock: dict[str, Any] = {}
    for key in sorted({*a.params, *b.params, *a_params_clock, *b_params_clock}):
        value, key_entry = _join_register(key, a.params, a_params_clock, b.params, b_params_clock)
        if value is not ABSENT:
            params[key] = value
        if key_entry is not None:
            params_clock[key] = key_entry
    if params_clock:
        clock["params"] = params_clock
    activity = [t for t in (a.last_activity_at, b.last_activity_at) if t is not None]
    return ProjectRecord(
        first_seen_at=min(a.first_seen_at, b.first_seen_at),
        status=None if status is ABSENT else status,
        params=params,
        clock=clock,
        last_activity_at=max(activity) if activity else None,
    )
