"""The merge rules: pure functions of (current record, change) -> new record. No I/O.

Every overwritable field is a *register* with a clock, so that applying the same changes in any
order gives the result of applying them in event-time order (SPEC §4, "Order"):

- A **strong** write (`name`, `status`, a `params` key, a `params_unset`) lands only if its event
  time is at least that of the strong write that set the field; otherwise it is ignored as stale.
- A **weak** write (`params_once`, a signup's `status_if_absent`) fills the field only while no
  strong write holds it. Weak writes later than the latest strong write are remembered, earliest
  first, because a late-arriving `params_unset` may land before them and leave the key to the
  earliest of them, as replaying in order would. At most `MAX_PENDING_WEAK` are kept per field: a
  field with more weak writes than that after its latest strong write keeps the earliest ones.

Clock entries are small JSON objects stored beside the values:
`{"t": micros}` strong set, `{"t": micros, "u": 1}` strong unset, `"o": [[micros, value], …]` weak
writes later than `t`. Ties between strong writes go to the one applied last ("at least as new").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

from tributary.connectors.changes import CustomerChange
from tributary.models.base import to_micros

MAX_PENDING_WEAK = 8


class Outcome(Enum):
    APPLIED = "applied"
    STALE = "stale"
    UNCHANGED = "unchanged"


class _Absent:
    """The value of a field nobody holds (distinct from JSON null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def _strong(values: dict[str, Any], clock: dict[str, Any], key: str, t: int, value: Any) -> Outcome:
    entry = clock.get(key) or {}
    if "t" in entry and t < entry["t"]:
        return Outcome.STALE
    old = values.get(key, ABSENT)
    pending = [w for w in entry.get("o", ()) if w[0] > t]
    new_entry: dict[str, Any] = {"t": t}
    if value is ABSENT:
        new_entry["u"] = 1
    if pending:
        new_entry["o"] = pending
    clock[key] = new_entry
    _settle(values, key, value if value is not ABSENT else (pending[0][1] if pending else ABSENT))
    return Outcome.APPLIED if values.get(key, ABSENT) != old else Outcome.UNCHANGED


def _weak(values: dict[str, Any], clock: dict[str, Any], key: str, t: int, value: Any) -> Outcome:
    entry = clock.get(key) or {}
    if "t" in entry and t <= entry["t"]:
        # In event order this write came before the strong write that now holds the field.
        return Outcome.STALE
    pending = sorted([*entry.get("o", ()), [t, value]], key=lambda w: w[0])[:MAX_PENDING_WEAK]
    clock[key] = {**entry, "o": pending}
    held_strongly = "t" in entry and "u" not in entry
    if held_strongly:
        return Outcome.UNCHANGED
    old = values.get(key, ABSENT)
    _settle(values, key, pending[0][1])
    return Outcome.APPLIED if values[key] != old else Outcome.UNCHANGED


def _settle(values: dict[str, Any], key: str, value: Any) -> None:
    if value is ABSENT:
        values.pop(key, None)
    else:
        values[key] = value


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """The customer-level fields the merge rules own."""

    name: str | None = None
    clock: Mapping[str, Any] = field(default_factory=dict)
    last_activity_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    """A customer's state in one project."""

    first_seen_at: datetime
    status: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    clock: Mapping[str, Any] = field(default_factory=dict)
    last_activity_at: datetime | None = None


@dataclass(slots=True)
class MergeResult:
    customer: CustomerRecord
    project: ProjectRecord
    # field -> [old, new] for what changed; field -> the ignored value for stale writes.
    changed: dict[str, list[Any]] = field(default_factory=dict)
    stale: dict[str, Any] = field(default_factory=dict)

    @property
    def touched(self) -> bool:
        return bool(self.changed or self.stale)


def _record(result: MergeResult, name: str, outcome: Outcome, old: Any, new: Any, attempted: Any) -> None:
    if outcome is Outcome.STALE:
        result.stale[name] = attempted
    elif outcome is Outcome.APPLIED:
        result.changed[name] = [None if old is ABSENT else old, None if new is ABSENT else new]


def new_project_record(change: CustomerChange) -> ProjectRecord:
    return ProjectRecord(first_seen_at=change.occurred_at)


def apply_change(customer: CustomerRecord, project: ProjectRecord, change: CustomerChange) -> MergeResult:
    """Apply one change; returns new records and what happened to each field. Inputs are not mutated."""
    t = to_micros(change.occurred_at)
    customer_clock = dict(customer.clock)
    status_values: dict[str, Any] = {} if project.status is None else {"status": project.status}
    status_clock = {"status": project.clock["status"]} if "status" in project.clock else {}
    params = dict(project.params)
    params_clock: dict[str, Any] = dict(project.clock.get("params") or {})
    result = MergeResult(customer=customer, project=project)

    name = customer.name
    if change.name is not None:
        values = {} if name is None else {"name": name}
        outcome = _strong(values, customer_clock, "name", t, change.name)
        _record(result, "name", outcome, name, values.get("name"), change.name)
        name = values.get("name")

    if change.status is not None:
        old = status_values.get("status", ABSENT)
        outcome = _strong(status_values, status_clock, "status", t, change.status)
        _record(result, "status", outcome, old, status_values.get("status", ABSENT), change.status)
    if change.status_if_absent is not None:
        old = status_values.get("status", ABSENT)
        outcome = _weak(status_values, status_clock, "status", t, change.status_if_absent)
        _record(result, "status", outcome, old, status_values.get("status", ABSENT), change.status_if_absent)

    for key in change.params_unset:
        old = params.get(key, ABSENT)
        outcome = _strong(params, params_clock, key, t, ABSENT)
        _record(result, f"params.{key}", outcome, old, params.get(key, ABSENT), None)
    for key, value in change.params.items():
        old = params.get(key, ABSENT)
        outcome = _strong(params, params_clock, key, t, value)
        _record(result, f"params.{key}", outcome, old, params.get(key, ABSENT), value)
    for key, value in change.params_once.items():
        old = params.get(key, ABSENT)
        outcome = _weak(params, params_clock, key, t, value)
        _record(result, f"params.{key}", outcome, old, params.get(key, ABSENT), value)

    first_seen = min(project.first_seen_at, change.occurred_at)
    project_activity = project.last_activity_at
    customer_activity = customer.last_activity_at
    if change.activity:
        if project_activity is None or change.occurred_at > project_activity:
            result.changed["last_activity_at"] = [project_activity, change.occurred_at]
            project_activity = change.occurred_at
        if customer_activity is None or change.occurred_at > customer_activity:
            customer_activity = change.occurred_at

    project_clock: dict[str, Any] = {}
    if "status" in status_clock:
        project_clock["status"] = status_clock["status"]
    if params_clock:
        project_clock["params"] = params_clock
    result.customer = replace(customer, name=name, clock=customer_clock, last_activity_at=customer_activity)
    result.project = replace(
        project,
        status=status_values.get("status"),
        params=params,
        clock=project_clock,
        first_seen_at=first_seen,
        last_activity_at=project_activity,
    )
    return result
