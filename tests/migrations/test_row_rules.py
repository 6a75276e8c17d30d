"""Row rules: each hot table's one CHECK (its _valid_* function) holds exactly the rules written out
below as plain CHECK expressions, and PostgreSQL enforces it on every write.

The table checks its rows with one function because PostgreSQL reads and plans every CHECK
expression again for each statement that writes the table (nine on the ledger cost about 30
microseconds per INSERT). The test evaluates both, the plain expressions one by one (a row passes
when none is false) and the table's CHECK, over a grid of rows that crosses good, bad and null
values of every column the rules read.
"""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest
from helpers import call, contents, customer, fund, qualified, subscribe
from psycopg.types.json import Jsonb

T0, T1 = "'2026-01-01 00:00+00'", "'2026-02-01 00:00+00'"

#: table: {column: (type, values as SQL literals)}; the grid is their cross product.
GRIDS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "credit_transactions": {
        "transaction_type": ("text", ["'allocation'", "'usage'", "'refund'", "'adjustment'", "'expiration'",
                                      "'hold'", "'release'", "'clawback'", "'reinstatement'", "'bonus'", "null"]),
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


#: The rules as plain CHECK constraints (as the tables had them before the rules moved into one
#: function per table): the oracle the function is compared with.
PLAIN_CHECKS: dict[str, list[str]] = {
    "credit_transactions": [
        "btrim(user_id) <> ''",
        "amount <> 0",
        "transaction_type IN ('allocation', 'usage', 'refund', 'adjustment', 'expiration', 'hold', 'release', "
        "'clawback', 'reinstatement')",
        "jsonb_typeof(metadata) = 'object'",
        "balance_after >= 0",
        "transaction_type NOT IN ('allocation', 'refund', 'reinstatement') OR amount > 0",
        "transaction_type NOT IN ('usage', 'expiration', 'clawback') OR amount < 0",
        "(transaction_type = 'refund') = (refund_of IS NOT null)",
        "(transaction_type <> 'hold' OR amount < 0) AND (transaction_type <> 'release' OR amount > 0)",
    ],
    "credit_holds": [
        "btrim(user_id) <> ''",
        "amount > 0",
        "status IN ('held', 'committed', 'released', 'expired')",
        "btrim(idempotency_key) <> ''",
        "jsonb_typeof(metadata) = 'object'",
        "expires_at > created_at",
        "(status = 'held') = (settled_at IS null)",
        "(status = 'held') = (release_transaction_id IS null)",
        "(status = 'committed') = (usage_transaction_id IS NOT null)",
        "status = 'committed' OR result IS null",
    ],
    "stripe_events": [
        "stripe_event_id <> ''",
        "retry_count >= 0",
        "status IN ('received', 'processed', 'ignored', 'stale', 'pending', 'failed')",
    ],
    "subscriptions": [
        "subscription_id ~ '^sub_'",
        "btrim(user_id) <> ''",
        "stripe_customer_id ~ '^cus_'",
        "status IN ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'unpaid', 'canceled', "
        "'paused')",
        "current_period_end >= current_period_start",
    ],
}


def _checks(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT conname AS name, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c' ORDER BY conname",
        (qualified(table),),
    ).fetchall()
    return {r["name"]: r["definition"].removeprefix("CHECK ") for r in rows}


def _verdicts(conn: psycopg.Connection[Any], table: str, checks: list[str]) -> list[tuple[Any, ...]]:
    """(row, passes) for every row of the table's grid: passes when no check is false."""
    grid = GRIDS[table]
    columns = list(grid)
    rows = list(itertools.product(*(values for _, values in grid.values())))
    values = ",\n".join(
        "(" + ", ".join(f"{v}::{grid[c][0]}" for c, v in zip(columns, row, strict=True)) + ")" for row in rows
    )
    passes = " AND ".join(f"({expr}) IS NOT false" for expr in checks)
    result = conn.execute(
        f"SELECT {passes} AS ok FROM (VALUES {values}) AS t ({', '.join(columns)})"  # noqa: S608 (test-made SQL)
    ).fetchall()
    return [(row, r["ok"]) for row, r in zip(rows, result, strict=True)]


@pytest.mark.parametrize("table", sorted(GRIDS))
def test_one_check_judges_rows_as_the_plain_rules(conn, table: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SET search_path = public, pg_catalog")
    checks = _checks(conn, table)
    # One CHECK on the table, the one calling its function.
    assert list(checks) == [f"{table}_valid"], checks
    assert "_valid_" in checks[f"{table}_valid"]
    plain = _verdicts(conn, table, PLAIN_CHECKS[table])
    function = _verdicts(conn, table, list(checks.values()))
    differ = [row for (row, ok), (_, ok_now) in zip(plain, function, strict=True) if ok != ok_now]
    assert not differ, f"{table}: {len(differ)} rows judged differently, e.g. {differ[:3]}"
    # The grid holds rows that pass and rows that break a rule.
    assert {ok for _, ok in function} == {True, False}, table


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
        "UPDATE billingdb.subscriptions SET status = 'ended'",
        "subscriptions_valid",
    ),
    "period ends before it starts": (
        "UPDATE billingdb.subscriptions SET current_period_end = current_period_start - interval '1 day'",
        "subscriptions_valid",
    ),
    "settled hold without its release": (
        "UPDATE billingdb.credit_holds SET status = 'released', settled_at = now()",
        "credit_holds_valid",
    ),
    "committed hold without its usage": (
        "UPDATE billingdb.credit_holds SET status = 'committed', settled_at = now(), "
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
        assert conn.execute(f"SELECT count(*) AS n FROM {qualified(table)}").fetchone()["n"] >= 1, table  # noqa: S608
    before = contents(conn)
    statement, constraint = BAD_WRITES[case]
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        conn.execute(statement)
    assert info.value.diag.constraint_name == constraint
    assert contents(conn) == before
