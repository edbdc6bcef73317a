"""Which address a customer has, with event-time clocks so that delivery order does not matter
(SPEC §4, "Email change"). Pure: no I/O.

`EmailRecord` is the customer's address, the event time (microseconds) at which a provider identity
last asserted it, and its past addresses with the time each was last asserted. A provider saying
"user U's primary address is E at time t" is newer than the record (rename, or merge with whoever has
E) when t is at least the recorded time, and stale otherwise (E was U's address earlier: it joins the
past addresses). Addresses that were never asserted by an identity (a customer created by identify)
have no time and give way to any assertion. `since` is the earliest event time at which the customer
is known to have had its current address; a stale assertion merges a customer that had the address
by then (`held_for`, workers/batch/identity_resolution.py).

The record is stored in the customer's `clock` under `"email"` (`clock_entry`, `clock_with_email`),
beside the field clocks of workers/batch/merge_rules.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EMAIL_CLOCK", "EmailRecord", "EmailVerdict", "clock_with_email"]

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


def clock_with_email(clock: Mapping[str, Any], address: EmailRecord) -> dict[str, Any]:
    """A customer's stored clock: its field clocks with the address record under `"email"`."""
    merged = {key: value for key, value in dict(clock).items() if key != EMAIL_CLOCK}
    if (entry := address.clock_entry()) is not None:
        merged[EMAIL_CLOCK] = entry
    return merged
