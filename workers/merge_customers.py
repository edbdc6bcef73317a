"""Email changes and customer merges as pure functions on snapshots. No I/O.

Two questions are answered here, both with the event-time clocks of workers/merge.py so that the
result does not depend on the order in which deliveries arrive:

- **Which email does a customer have?** `EmailRecord` is the customer's address, the event time
  (microseconds) at which a provider identity last asserted it, and its past addresses with the
  time each was last asserted. A provider saying "user U's primary address is E at time t" is
  newer than the record (rename, or merge with whoever has E) when t is at least the recorded
  time, and stale otherwise (E was U's address earlier: it joins the past addresses). Addresses
  that were never asserted by an identity (a customer created by identify) have no time and give
  way to any assertion. `since` is the earliest event time at which the customer is known to have
  had its current address; a stale assertion merges a customer that had the address by then
  (`held_for`, workers/identities.py).
- **What is the union of two customers?** `unite_customers` / `unite_projects` join every clocked
  register (name, status, each params key): the value set by the later strong write wins, weak
  writes (`params_once`, signup statuses) are pooled, activity takes the maximum and first-seen
  the minimum. Joining is commutative, so the merged record is the same whichever customer
  survives; ties between equal event times go to the value that sorts first as JSON, for the
  same reason.

Clock entry layout (see workers/merge.py): `{"t": micros}` strong set, `"u": 1` strong unset,
`"o": [[micros, value], ...]` weak writes later than `t`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from workers.merge import ABSENT, MAX_PENDING_WEAK, CustomerRecord, ProjectRecord

__all__ = [
    "EmailRecord",
    "EmailVerdict",
    "unite_customers",
    "unite_projects",
]

EMAIL_CLOCK = "email"

# "same": nothing to do; "newer": rename, or merge with the customer who has the address;
# "stale": the address was the customer's before, keep it among the past ones.
EmailVerdict = Literal["same", "newer", "stale"]


@dataclass(frozen=True, slots=True)
class EmailRecord:
    email: str
    # Event time of the latest identity assertion of `email`; None: never asserted.
    asserted_at: int | None = None
    # Past address -> event time it was last asserted (0 when unknown).
    past: Mapping[str, int] = field(default_factory=dict)
    # Earliest event time at which this customer is known to have had `email`; None: unknown
    # (a row written before this was recorded).
    since: int | None = None

    @classmethod
    def load(cls, email: str, past_emails: list[Any], clock: Mapping[str, Any]) -> EmailRecord:
        entry = clock.get(EMAIL_CLOCK) or {}
        times = entry.get("past") or {}
        past = {str(a): int(times.get(a, 0)) for a in past_emails if isinstance(a, str) and a != email}
        t, since = entry.get("t"), entry.get("since")
        return cls(
            email,
            int(t) if isinstance(t, int) else None,
            past,
            int(since) if isinstance(since, int) else None,
        )

    def past_emails(self) -> list[str]:
        """Oldest first: by the time each address was last asserted, then alphabetically."""
        return [a for a, _ in sorted(self.past.items(), key=lambda item: (item[1], item[0]))]

    def clock_entry(self) -> dict[str, Any] | None:
        entry: dict[str, Any] = {}
        if self.asserted_at is not None:
            entry["t"] = self.asserted_at
        if any(self.past.values()):
            entry["past"] = {a: t for a, t in sorted(self.past.items()) if t}
        if self.since is not None:
            entry["since"] = self.since
        return entry or None

    def verdict(self, email: str, t: int) -> EmailVerdict:
        if email == self.email:
            return "same"
        if self.asserted_at is None or t >= self.asserted_at:
            return "newer"
        return "stale"

    def asserted(self, t: int) -> EmailRecord:
        """The current address asserted again at `t`."""
        if (
            self.asserted_at is not None
            and self.asserted_at >= t
            and self.since is not None
            and self.since <= t
        ):
            return self
        latest = t if self.asserted_at is None else max(self.asserted_at, t)
        return EmailRecord(self.email, latest, self.past, _earliest(self.since, t))

    def held(self, t: int) -> EmailRecord:
        """A change at `t` named this customer by its current address."""
        return EmailRecord(self.email, self.asserted_at, self.past, _earliest(self.since, t))

    def held_for(self, t: int, left_by: int) -> bool:
        """Whether this customer's address can be the one an identity asserted at `t` and had
        left by `left_by` (a stale assertion): this customer had it at or before `t`, and no
        identity asserted it here after `left_by` (whoever did may have got it later)."""
        return (
            self.since is not None
            and self.since <= t
            and (self.asserted_at is None or self.asserted_at <= left_by)
        )

    def renamed(self, email: str, t: int) -> EmailRecord:
        """`email` becomes the address at `t`; the current one joins the past."""
        past = dict(self.past)
        past[self.email] = max(past.get(self.email, 0), self.asserted_at or 0)
        past.pop(email, None)
        return EmailRecord(email, t, past, t)

    def remembered(self, email: str, t: int) -> EmailRecord:
        """A stale assertion: `email` was the address before; keep it among the past ones."""
        if email == self.email:
            return self
        past = dict(self.past)
        past[email] = max(past.get(email, 0), t)
        return EmailRecord(self.email, self.asserted_at, past, self.since)

    def united(self, other: EmailRecord, email: str, t: int) -> EmailRecord:
        """Both customers' addresses after a merge on `email` asserted at `t` for this one. A newer
        assertion makes `email` the survivor's address; a stale one (`held_for`) leaves the
        survivor's address as it is and `email` joins the past, as after the in-order rename."""
        if self.verdict(email, t) == "stale":
            past = dict(self.past)
            for address, when in [*other.past.items(), (other.email, max(t, other.asserted_at or 0))]:
                if address != self.email:
                    past[address] = max(past.get(address, 0), when)
            return EmailRecord(self.email, self.asserted_at, past, self.since)
        past = dict(self.past)
        for address, when in [*other.past.items(), (other.email, other.asserted_at or 0)]:
            past[address] = max(past.get(address, 0), when)
        merged = EmailRecord(self.email, self.asserted_at, past).renamed(email, t)
        latest = max(t, other.asserted_at or 0) if other.email == email else t
        since = _earliest(other.since, t) if other.email == email else t
        return EmailRecord(email, latest, merged.past, since)


def _earliest(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


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
    (EmailRecord.united), so it is carried over from `survivor` untouched."""
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
