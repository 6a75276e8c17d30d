"""Helpers for the webhook tests: deliver events, read the state a customer ended in, count rows.

Tests may carry SQL text (the library may not); every call of a billingdb
function here goes through the same function a service would call.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from helpers import qualified
from psycopg.types.json import Jsonb

__all__ = [
    "PLANS",
    "BILLING_TABLES",
    "setup_plans",
    "process",
    "retry",
    "world_state",
    "event_row",
    "table_counts",
    "table_contents",
]

#: The seed's three plans (price id -> name, credits per period).
PLANS = {
    "price_individual_test": ("Individual", 30),
    "price_team_test": ("Team", 200),
    "price_custom_test": ("Custom", 500),
}

#: Every table an event may change.
BILLING_TABLES = [
    "stripe_events",
    "stripe_customers",
    "subscriptions",
    "credit_balances",
    "credit_transactions",
    "activity_log",
    "subscription_cache",
    "plans",
]


def setup_plans(conn: psycopg.Connection[Any]) -> None:
    for price, (name, credits) in PLANS.items():
        conn.execute("SELECT public.set_plan(%s, %s, %s)", (price, name, credits))


def process(conn: psycopg.Connection[Any], event: dict[str, Any]) -> dict[str, Any]:
    """process_stripe_event(event) -> {event_id, status, detail}."""
    row = conn.execute("SELECT public.process_stripe_event(%s) AS r", (Jsonb(event),)).fetchone()
    assert row is not None
    return _value(row)


def retry(conn: psycopg.Connection[Any], event_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT public.retry_stripe_event(%s) AS r", (event_id,)).fetchone()
    assert row is not None
    return _value(row)


def _value(row: Any) -> Any:
    return row["r"] if isinstance(row, dict) else row[0]


def _rows(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(sql, params)
        return list(cur.fetchall())


def world_state(conn: psycopg.Connection[Any], user_id: str, customer_id: str) -> dict[str, Any]:
    """Everything billingdb holds about one customer, without ids, times of writing or event bookkeeping.

    Two deliveries of the same events, in any order, must end in equal states.
    """
    link = _rows(conn, "SELECT user_id, stripe_customer_id FROM billingdb.stripe_customers WHERE user_id = %s",
                 (user_id,))
    subs = _rows(
        conn,
        """SELECT subscription_id, user_id, stripe_customer_id, status, price_id, current_period_start,
                  current_period_end, cancel_at_period_end, canceled_at, last_event_created, last_event_id
           FROM billingdb.subscriptions WHERE user_id = %s ORDER BY subscription_id""",
        (user_id,),
    )
    balance = _rows(conn, "SELECT balance FROM billingdb.credit_balances WHERE user_id = %s", (user_id,))
    ledger = _rows(
        conn,
        """SELECT transaction_type, amount, reference, metadata->>'billing_reason' AS billing_reason,
                  metadata->>'invoice_id' AS invoice_id, metadata->>'price_id' AS price_id
           FROM public.credit_transactions WHERE user_id = %s ORDER BY reference, id""",
        (user_id,),
    )
    state = _value(_rows(conn, "SELECT public.get_user_subscription_state(%s) AS r", (user_id,))[0])
    events = _rows(
        conn,
        """SELECT count(*) FILTER (WHERE NOT processed) AS not_done FROM public.stripe_events
           WHERE customer_id = %s""",
        (customer_id,),
    )
    return {
        "link": link,
        "subscriptions": subs,
        "balance": balance[0]["balance"] if balance else None,
        "ledger": ledger,
        "state": {k: state.get(k) for k in ("status", "price_id", "plan", "can_use_credits", "reason",
                                            "cancel_at_period_end", "credits_balance", "current_period_end")},
        "events_not_done": events[0]["not_done"],
    }


def event_row(conn: psycopg.Connection[Any], event_id: str) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT * FROM public.stripe_events WHERE stripe_event_id = %s", (event_id,))
    return rows[0] if rows else None


def table_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {t: _rows(conn, f"SELECT count(*) AS n FROM {qualified(t)}")[0]["n"] for t in BILLING_TABLES}


def table_contents(conn: psycopg.Connection[Any], tables: list[str] | None = None) -> dict[str, str]:
    """Each table's rows as sorted JSON text (to compare before and after)."""
    out = {}
    for t in tables or BILLING_TABLES:
        rows = _rows(conn, f"SELECT to_jsonb(x) AS j FROM {qualified(t)} AS x")
        out[t] = json.dumps(sorted(json.dumps(r["j"], sort_keys=True) for r in rows))
    return out
