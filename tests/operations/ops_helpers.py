"""Builders of breaching data for the runbook tests (health, reconcile).

Tests may carry SQL text. Breaking the ledger on purpose needs a superuser:
the append-only trigger is bypassed with session_replication_role = replica,
and every breakage is undone by the test (the suite checks the ledger
invariant after each test).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg


def grant(conn: psycopg.Connection[Any], user_id: str, amount: int, reason: str = "test") -> None:
    result = conn.execute("SELECT public.grant_credits(%s, %s, %s, null) AS r", (user_id, amount, reason)).fetchone()
    assert result["r"]["success"], result


@contextmanager
def ledger_bypass(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Write the ledger tables directly (triggers off) for the duration of the block."""
    conn.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        conn.execute("RESET session_replication_role")


@contextmanager
def wrong_balance(conn: psycopg.Connection[Any], user_id: str, delta: int) -> Iterator[None]:
    """A balance row that disagrees with the user's ledger by delta, restored afterwards."""
    conn.execute("UPDATE billingdb.credit_balances SET balance = balance + %s WHERE user_id = %s", (delta, user_id))
    try:
        yield
    finally:
        conn.execute("UPDATE billingdb.credit_balances SET balance = balance - %s WHERE user_id = %s", (delta, user_id))


@contextmanager
def negative_ledger(conn: psycopg.Connection[Any], user_id: str, amount: int) -> Iterator[None]:
    """A usage entry that takes the user's ledger below zero (no balance row change), removed afterwards."""
    with ledger_bypass(conn):
        row = conn.execute(
            """INSERT INTO public.credit_transactions (user_id, amount, transaction_type, balance_after)
               VALUES (%s, %s, 'usage', 0) RETURNING id""",
            (user_id, -amount),
        ).fetchone()
    try:
        yield
    finally:
        with ledger_bypass(conn):
            conn.execute("DELETE FROM public.credit_transactions WHERE id = %s", (row["id"],))


def event(conn: psycopg.Connection[Any], event_id: str, status: str, age: str = "1 hour") -> None:
    conn.execute(
        """INSERT INTO public.stripe_events (stripe_event_id, event_type, payload, processed, status, created_at)
           VALUES (%s, 'invoice.paid', '{}', %s, %s, now() - %s::interval)""",
        (event_id, status in ("processed", "ignored", "stale"), status, age),
    )
