"""Small helpers for the SQL tests: call a function, set up users, compare table contents."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "STATUSES",
    "BILLING_TABLES",
    "PUBLIC_TABLES",
    "qualified",
    "NOW",
    "call",
    "customer",
    "subscribe",
    "fund",
    "balance",
    "contents",
    "count",
]

#: Stripe's eight subscription statuses.
STATUSES = [
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "paused",
]

#: The seed's three tables: the interface, in schema public. Every other table is in billingdb.
PUBLIC_TABLES = {"stripe_events", "subscription_cache", "credit_transactions"}

#: Every table whose contents a refused or invalid call must leave unchanged.
BILLING_TABLES = [
    "stripe_customers",
    "plans",
    "subscriptions",
    "credit_balances",
    "credit_transactions",
    "credit_holds",
    "activity_log",
    "billing_settings",
    "subscription_cache",
]


def qualified(name: str) -> str:
    """The schema-qualified name of a billingdb table: public for the seed's three, else billingdb."""
    return f"public.{name}" if name in PUBLIC_TABLES else f"billingdb.{name}"


def _table(name: str) -> sql.Composable:
    return sql.Identifier(*qualified(name).split("."))

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def call(conn: psycopg.Connection[Any], function: str, *args: Any, **kwargs: Any) -> Any:
    """``SELECT public.function(args..., name => value...)`` and return the single value."""
    parts = [sql.Placeholder()] * len(args)
    parts += [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in kwargs]
    query = sql.SQL("SELECT public.{}({}) AS r").format(sql.Identifier(function), sql.SQL(", ").join(parts))
    row = conn.execute(query, [*args, *kwargs.values()]).fetchone()
    assert row is not None
    return row["r"] if isinstance(row, dict) else row[0]


def customer(conn: psycopg.Connection[Any], user_id: str, customer_id: str | None = None) -> str:
    """Create the user's customer row and link a Stripe customer (cus_<user_id> by default)."""
    customer_id = customer_id or f"cus_{user_id}"
    call(conn, "get_or_create_stripe_customer", user_id, None)
    call(conn, "link_stripe_customer", user_id, customer_id)
    return customer_id


def subscribe(
    conn: psycopg.Connection[Any],
    user_id: str,
    status: str = "active",
    *,
    subscription_id: str | None = None,
    price_id: str | None = "price_individual",
    period_end: datetime | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: datetime | None = None,
    event_created: datetime | None = None,
    event_id: str | None = None,
) -> Any:
    """Create or change a subscription through apply_subscription_change (period: 30 days ago..period_end)."""
    end = period_end if period_end is not None else NOW + timedelta(days=30)
    return call(
        conn,
        "apply_subscription_change",
        subscription_id or f"sub_{user_id}",
        user_id,
        None,
        status,
        price_id,
        end - timedelta(days=30),
        end,
        cancel_at_period_end,
        canceled_at,
        event_created,
        event_id,
    )


def fund(conn: psycopg.Connection[Any], user_id: str, amount: int) -> Any:
    """Grant ``amount`` credits (a manual adjustment)."""
    result = call(conn, "grant_credits", user_id, amount, "test funding")
    assert result["success"], result
    return result


def balance(conn: psycopg.Connection[Any], user_id: str) -> int | None:
    row = conn.execute("SELECT balance FROM billingdb.credit_balances WHERE user_id = %s", (user_id,)).fetchone()
    if row is None:
        return None
    return row["balance"] if isinstance(row, dict) else row[0]


def count(conn: psycopg.Connection[Any], table: str, where: str = "true", params: Any = None) -> int:
    query = sql.SQL("SELECT count(*) AS n FROM {} WHERE ").format(_table(table)) + sql.SQL(where)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row["n"] if isinstance(row, dict) else row[0])


def contents(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every row of every billing table as sorted text, to compare before and after a call."""
    out: dict[str, list[str]] = {}
    for name in BILLING_TABLES:
        query = sql.SQL("SELECT t::text AS row FROM {} AS t ORDER BY 1").format(_table(name))
        out[name] = [r["row"] if isinstance(r, dict) else r[0] for r in conn.execute(query)]
    return out
