"""The SELECTs a batch's load runs (workers/batch/state.py), each built once per backend.

Under steady load a batch holds a few events, and building its statements anew for each batch
(coercing every operand, then hashing the whole tree to find SQLAlchemy's compiled form) cost
about as much as running them: in `tributary serve`'s worker the load was two fifths of the drain.
Built once, a statement's cache key is computed once too, and a batch only binds its values. On
PostgreSQL each list of values is one array parameter (`models.sql.among`): as an expanding `IN`, a
batch of 500 sent a statement of 12 KB with 500 parameters, rendered by SQLAlchemy and parsed by
psycopg again for every batch (psycopg caches only statements under 4 KB and 50 parameters): a
sixth of the worker's CPU at that batch size (bench/README.md, 2026-12-04 21:15). SQLite keeps the
expanding form, which it plans by index.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
    type_coerce,
    union,
)
from sqlalchemy.dialects.postgresql import JSONB

from tributary.models import Customer, CustomerProject
from tributary.models.customer import HAS_PAST_EMAILS
from tributary.models.sql import among, sqlite_unindexed

__all__ = ["customers", "project_rows"]


@cache
def customers(postgres: bool, by_email: bool, by_id: bool, by_past: bool) -> Select[Customer]:
    """The account's customers holding any of `:emails`, with any of `:ids`, and/or whose past
    addresses hold any of `:past`, in id order; locked on PostgreSQL (the customer row is the lock
    that serializes workers writing the same person). The past addresses are one more condition of
    this statement, not a read of their own: one statement fewer per batch that meets a new address."""
    account = Customer.account_id == bindparam("account")
    if postgres:
        arms: list[ColumnElement[bool]] = []
        if by_email:
            arms.append(among(Customer.email, None, postgres, name="emails"))
        if by_id:
            arms.append(among(Customer.id, None, postgres))
        if by_past:
            arms.append(_had_past(postgres))
        # One index scan per arm, OR'ed in a BitmapOr (tests/workers/test_lock_plan.py).
        stmt = select(Customer).where(account, or_(*arms)).with_for_update()
    else:
        stmt = select(Customer).where(_sqlite_arms(account, by_email, by_id, by_past))
    return stmt.order_by(Customer.id).execution_options(populate_existing=True)


def _sqlite_arms(
    account: ColumnElement[bool], by_email: bool, by_id: bool, by_past: bool
) -> ColumnElement[bool]:
    """SQLite's form of the arms. It walked every customer of the account for an OR of arms that
    are not all plain column tests (12 ms a batch at 16,000 customers in `tributary serve`, and
    growing), so each address arm is a SELECT of ids on its own index, in a UNION; the ids arm is
    the primary key's; the account is checked again outside them, on the rows they found
    (`sqlite_unindexed`)."""
    addresses = []
    if by_email:
        addresses.append(
            select(Customer.id).where(account, Customer.email.in_(bindparam("emails", expanding=True)))
        )
    if by_past:
        addresses.append(select(Customer.id).where(account, _had_past(False)))
    found: list[ColumnElement[bool]] = []
    if by_id:
        found.append(Customer.id.in_(bindparam("ids", expanding=True)))
    if addresses:
        found.append(Customer.id.in_(union(*addresses)))
    return and_(sqlite_unindexed(Customer.account_id) == bindparam("account"), or_(*found))


def _had_past(postgres: bool) -> ColumnElement[bool]:
    """A customer whose past addresses hold any of `:past`."""
    had: Any
    if postgres:
        # `?|`: any of the addresses is an element of the array; one bound array, not a
        # containment test per address.
        past = type_coerce(Customer.past_emails, JSONB())
        had = past.has_any(bindparam("past", type_=ARRAY(Text())))
    else:
        each = func.json_each(Customer.past_emails).table_valued("value")
        had = select(each.c.value).where(each.c.value.in_(bindparam("past", expanding=True))).exists()
    # Served by the partial index on customers with past addresses (models/customer.py).
    some_past = text(HAS_PAST_EMAILS["postgresql" if postgres else "sqlite"])
    return and_(some_past, had)


@cache
def project_rows(postgres: bool) -> Select[CustomerProject]:
    """The project rows of the customers `:ids`."""
    return select(CustomerProject).where(among(CustomerProject.customer_id, None, postgres))
