"""How a batch creates customers, and how concurrent batches agree on who holds an address.

An address that a batch names and nobody holds gets a new customer. Two batches must never create two
customers for one address; the unique index on (account_id, email) is the last word, but a batch has
to know before it merges whether the address is someone's.

- SQLite has one writer at a time (the drain's BEGIN IMMEDIATE): the load reads which addresses
  nobody holds (`unheld`), and they stay free until the batch commits.
- PostgreSQL: the load reads which addresses nobody holds and takes a transaction-scoped advisory
  lock on each of them, in one statement (`lock_unheld`; in one order, so two batches never wait on
  each other in a circle). Every batch that writes a new address (a new customer or a rename) holds its
  lock, so an address read as free stays free until the batch commits, and a second batch naming it
  waits, then finds the first one's customer.

On both, the new customer lives in memory (`NewCustomer`) and write-back inserts it once, with its
final values (`write_customers` in write_back_pg.py and write_back_sqlite.py). Inserting an empty row
at load and updating it at write-back wrote every index of the table twice: 26 of the 69 ms
PostgreSQL spent on a batch of 500 new customers (bench/README.md, 2026-12-02); on SQLite, where the
worker's batch holds the write lock that `tributary serve`'s web processes wait for, the insert and
the reload of those rows as ORM objects were a third of the batch (bench/README.md, 2026-12-05).

The advisory locks live in PostgreSQL's shared lock table until the batch commits, one per new
address: `max_locks_per_transaction` x `max_connections` (6,400 by default) must exceed the workers'
batch size times their number (README, "Production"). A batch refused for want of room is split in
halves like any batch the database refuses (workers/isolation.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Text, bindparam, select, text
from sqlalchemy.orm import Session

from tributary.models import Customer
from tributary.models.base import sortable_id

__all__ = ["NewCustomer", "address_key", "lock_addresses", "lock_unheld", "unheld"]

# The addresses nobody holds, each locked as the outer query reads it: the subquery's ORDER BY keeps
# PostgreSQL from merging it into the outer query (PostgreSQL's documented way to take advisory
# locks in a given order), so the locks are taken in key order and only for the rows it returns.
# One statement where a read then a lock were two: the load's fixed cost per batch is what a
# trickle pays per event (bench/README.md, 2026-12-04).
_LOCK_UNHELD = text(
    "SELECT free.e, pg_advisory_xact_lock(free.k) FROM ("
    " SELECT a.e, a.k FROM unnest(:emails, :keys) AS a(e, k)"
    " WHERE NOT EXISTS (SELECT 1 FROM customers AS c WHERE c.account_id = :account AND c.email = a.e)"
    " ORDER BY a.k) AS free"
).bindparams(bindparam("emails", type_=ARRAY(Text())), bindparam("keys", type_=ARRAY(BigInteger())))

# SQLite: the addresses of `:emails` someone holds, on the unique (account, address) index.
_HELD = select(Customer.email).where(
    Customer.account_id == bindparam("account"), Customer.email.in_(bindparam("emails", expanding=True))
)

# unnest returns the array in order and the lock is taken row by row as it is read: the order of
# `keys`, sorted by the caller.
_LOCK = text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(:keys) AS k").bindparams(
    bindparam("keys", type_=ARRAY(BigInteger()))
)


def address_key(account_id: str, email: str) -> int:
    """The advisory lock key of an address: 64 bits of a keyed hash of account and address. Two
    addresses sharing a key only make their batches wait for each other."""
    digest = hashlib.blake2b(
        f"{account_id}\n{email}".encode("utf-8", "surrogatepass"), digest_size=8, person=b"tributary.addr"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_unheld(session: Session, account_id: str, emails: Sequence[str]) -> list[str]:
    """Which of `emails` no customer of the account holds now, each address's advisory lock held
    until the transaction ends (PostgreSQL); sorted."""
    if not emails:
        return []
    keyed = sorted((address_key(account_id, email), email) for email in set(emails))
    params = {
        "emails": [email for _, email in keyed],
        "keys": [key for key, _ in keyed],
        "account": account_id,
    }
    return sorted(session.scalars(_LOCK_UNHELD, params))


def lock_addresses(session: Session, account_id: str, emails: Sequence[str]) -> None:
    """Hold each address's advisory lock until the transaction ends (PostgreSQL), in key order."""
    keys = sorted({address_key(account_id, email) for email in emails})
    if keys:
        session.execute(_LOCK, {"keys": keys})


@dataclass(slots=True)
class NewCustomer:
    """A customer the batch creates: what the batch reads of a customer row, held in
    memory until write-back inserts it. Not an ORM instance: building 500 of those cost a batch
    15 ms, more than the statement they save. Created at the batch's own time, so it is never
    created after it was last updated."""

    id: str
    account_id: str
    email: str
    created_at: datetime
    name: str | None = None
    last_activity_at: datetime | None = None
    past_emails: list[Any] = field(default_factory=list)
    clock: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, account_id: str, email: str, now: datetime) -> NewCustomer:
        return cls(sortable_id("cus"), account_id, email, now)

    def to_row(self) -> Customer:
        """The ORM row of this customer, for a session to insert."""
        return Customer(
            id=self.id,
            account_id=self.account_id,
            email=self.email,
            name=self.name,
            past_emails=list(self.past_emails),
            clock=dict(self.clock),
            created_at=self.created_at,
            updated_at=self.created_at,
            last_activity_at=self.last_activity_at,
        )


def unheld(session: Session, account_id: str, emails: Sequence[str]) -> list[str]:
    """Which of `emails` no customer of the account holds (SQLite, whose batch holds the one write
    lock: they stay free until it commits); sorted."""
    wanted = set(emails)
    if not wanted:
        return []
    held = set(session.scalars(_HELD, {"account": account_id, "emails": sorted(wanted)}))
    return sorted(wanted - held)
