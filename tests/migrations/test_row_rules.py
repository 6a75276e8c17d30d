"""Revision 0008: each hot table's one CHECK (its _valid_* function) keeps exactly the rules of the
CHECK constraints it replaced, and PostgreSQL enforces it on every write.

The oracle is the schema itself: the test reads the replaced constraints from a database at
revision 0007, then upgrades it to head and evaluates both, the old constraints one by one (a row
passes when none is false) and the new one, over a grid of rows that crosses good, bad and null
values of every column the rules read.
"""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg.types.json import Jsonb
from helpers import call, contents, customer, fund, subscribe

from billingdb.migrate import alembic_config

T0, T1 = "'2026-01-01 00:00+00'", "'2026-02-01 00:00+00'"

#: table: {column: (type, values as SQL literals)}; the grid is their cross product.
GRIDS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "credit_transactions": {
        "transaction_type": ("text", ["'allocation'", "'usage'", "'refund'", "'adjustment'", "'expiration'",
                                      "'hold'", "'release'", "'bonus'", "null"]),
        "amount": ("integer", ["-5", "0", "5", "null"]),
        "balance_after": ("integer", ["-1", "0", "null"]),
        "refund_of": ("bigint", ["null", "1"]),
        "metadata": ("jsonb", ["'{}'", "'[]'"]),
        "user_id": ("text", ["'u1'", "' '"]),
    },
    "credit_holds": {
        "status": ("text", ["'held'", "'committed'", "'released'", "'expired'", "'gone'"]),
        "amount": ("integer", ["0", "3"]),
        "user_id": ("text", ["'u1'", "''"]),
        "idempotency_key": ("text", ["null", "' '", "'k1'"]),
        "metadata": ("jsonb", ["'{}'", "'1'"]),
        "result": ("jsonb", ["null", "'{}'"]),
        "created_at": ("timestamptz", [T0]),
        "expires_at": ("timestamptz", [T0, T1]),
        "settled_at": ("timestamptz", ["null", T1]),
        "release_transaction_id": ("bigint", ["null", "7"]),
        "usage_transaction_id": ("bigint", ["null", "8"]),
    },
    "stripe_events": {
        "stripe_event_id": ("text", ["'evt_1'", "''"]),
        "status": ("text", ["'received'", "'processed'", "'ignored'", "'stale'", "'pending'", "'failed'",
                            "'done'", "null"]),
        "retry_count": ("integer", ["-1", "0", "2", "null"]),
    },
    "subscriptions": {
        "subscription_id": ("text", ["'sub_1'", "'si_1'"]),
        "user_id": ("text", ["'u1'", "'  '"]),
        "stripe_customer_id": ("text", ["'cus_1'", "'acct_1'", "null"]),
        "status": ("text", ["'incomplete'", "'incomplete_expired'", "'trialing'", "'active'", "'past_due'",
                            "'unpaid'", "'canceled'", "'paused'", "'ended'"]),
        "current_period_start": ("timestamptz", [T0, T1, "null"]),
        "current_period_end": ("timestamptz", [T0, T1]),
    },
}


def _checks(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c' ORDER BY conname",
        (f"public.{table}",),
    ).fetchall()
    return {name: definition.removeprefix("CHECK ") for name, definition in rows}


def _verdicts(conn: psycopg.Connection[Any], table: str, checks: dict[str, str]) -> list[tuple[Any, ...]]:
    """(row, passes) for every row of the table's grid: passes when no check is false."""
    grid = GRIDS[table]
    columns = list(grid)
    rows = list(itertools.product(*(values for _, values in grid.values())))
    values = ",\n".join(
        "(" + ", ".join(f"{v}::{grid[c][0]}" for c, v in zip(columns, row, strict=True)) + ")" for row in rows
    )
    passes = " AND ".join(f"({expr}) IS NOT false" for expr in checks.values())
    result = conn.execute(
        f"SELECT {passes} FROM (VALUES {values}) AS t ({', '.join(columns)})"  # noqa: S608 (test-made SQL)
    ).fetchall()
    return [(row, ok) for row, (ok,) in zip(rows, result, strict=True)]


def test_one_check_keeps_the_rules_it_replaced(empty_database_url: str) -> None:
    cfg = alembic_config(url=empty_database_url)
    command.upgrade(cfg, "0007")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("SET search_path = public, pg_catalog")
        old = {table: _checks(conn, table) for table in GRIDS}
        before = {table: _verdicts(conn, table, old[table]) for table in GRIDS}
    command.upgrade(cfg, "head")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("SET search_path = public, pg_catalog")
        for table in GRIDS:
            new = _checks(conn, table)
            # One CHECK on the table now, the one calling its function; the replaced ones are gone.
            assert list(new) == [f"{table}_valid"], new
            assert "_valid_" in new[f"{table}_valid"]
            assert len(old[table]) >= 3, old[table]
            after = _verdicts(conn, table, new)
            differ = [row for (row, ok), (_, ok_now) in zip(before[table], after, strict=True) if ok != ok_now]
            assert not differ, f"{table}: {len(differ)} rows judged differently, e.g. {differ[:3]}"
            # The grid holds rows that pass and rows that break a rule.
            assert {ok for _, ok in after} == {True, False}, table


def test_downgrade_restores_the_constraints(empty_database_url: str) -> None:
    cfg = alembic_config(url=empty_database_url)
    command.upgrade(cfg, "0007")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        old = {table: _checks(conn, table) for table in GRIDS}
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "0007")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert {table: _checks(conn, table) for table in GRIDS} == old
        left = conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_valid\\_%'").fetchone()
        assert left == (0,)


# --- enforced on every write ---------------------------------------------------------------------

BAD_WRITES = {
    "usage that adds": (
        "INSERT INTO public.credit_transactions (user_id, amount, transaction_type, balance_after) "
        "VALUES ('u1', 5, 'usage', 10)",
        "credit_transactions_valid",
    ),
    "refund of nothing": (
        "INSERT INTO public.credit_transactions (user_id, amount, transaction_type, balance_after) "
        "VALUES ('u1', 5, 'refund', 10)",
        "credit_transactions_valid",
    ),
    "unknown entry type": (
        "INSERT INTO public.credit_transactions (user_id, amount, transaction_type, balance_after) "
        "VALUES ('u1', 5, 'bonus', 10)",
        "credit_transactions_valid",
    ),
    "event status": (
        "UPDATE public.stripe_events SET status = 'done'",
        "stripe_events_valid",
    ),
    "negative retry count": (
        "UPDATE public.stripe_events SET retry_count = -1",
        "stripe_events_valid",
    ),
    "subscription status": (
        "UPDATE public.subscriptions SET status = 'ended'",
        "subscriptions_valid",
    ),
    "period ends before it starts": (
        "UPDATE public.subscriptions SET current_period_end = current_period_start - interval '1 day'",
        "subscriptions_valid",
    ),
    "settled hold without its release": (
        "UPDATE public.credit_holds SET status = 'released', settled_at = now()",
        "credit_holds_valid",
    ),
    "committed hold without its usage": (
        "UPDATE public.credit_holds SET status = 'committed', settled_at = now(), "
        "release_transaction_id = hold_transaction_id",
        "credit_holds_valid",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_WRITES))
def test_a_write_that_breaks_a_rule_is_refused(conn, case: str) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 5)
    call(conn, "reserve_credits", "u1", 2)
    call(conn, "process_stripe_event", Jsonb({
        "id": "evt_rule_1", "type": "product.created", "created": 1_700_000_000, "data": {"object": {"id": "prod_1"}},
    }))
    for table in ("credit_transactions", "stripe_events", "subscriptions", "credit_holds"):
        assert conn.execute(f"SELECT count(*) AS n FROM public.{table}").fetchone()["n"] >= 1, table  # noqa: S608
    before = contents(conn)
    statement, constraint = BAD_WRITES[case]
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        conn.execute(statement)
    assert info.value.diag.constraint_name == constraint
    assert contents(conn) == before
