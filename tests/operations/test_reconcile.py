"""`billingdb reconcile`: the seed's weekly check (reconcile_credits()), per user allocated / used / balance,
every mismatch or negative balance named, exit 1 on a finding."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from ops_helpers import grant, ledger_bypass, negative_ledger, wrong_balance
from typer.testing import CliRunner

from billingdb.cli import app

runner = CliRunner()


def _reconcile(database_url: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["reconcile", *args, "--database-url", database_url])


def _rows(conn: psycopg.Connection[Any], since: str | None = None) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM public.reconcile_credits(%s::timestamptz)", (since,)).fetchall()


def _backdate(conn: psycopg.Connection[Any], user_id: str, age: str) -> None:
    with ledger_bypass(conn):
        conn.execute(
            "UPDATE public.credit_transactions SET created_at = now() - %s::interval WHERE user_id = %s",
            (age, user_id),
        )


def test_clean_ledger_lists_users_and_exits_0(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_a", 30, "allocation stand-in")
    grant(conn, "u_a", -4, "usage stand-in")
    grant(conn, "u_b", 7)
    result = _reconcile(database_url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("credits since ") and lines[0].endswith(": 2 users listed, 0 with a balance finding")
    assert lines[2].split() == ["u_a", "0", "0", "0", "26", "0", "26", "26"]
    assert lines[-2] == "no finding: every balance equals the sum of its ledger and none is negative"
    assert lines[-1] == "every paid invoice received allocated its credits"
    (row,) = [r for r in _rows(conn) if r["user_id"] == "u_a"]
    assert (row["adjusted"], row["ledger_balance"], row["balance"], row["findings"]) == (26, 26, 26, [])


def test_since_limits_the_users_listed(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_old", 5)
    grant(conn, "u_new", 5)
    _backdate(conn, "u_old", "30 days")
    assert [r["user_id"] for r in _rows(conn, None)] == ["u_new", "u_old"]
    recent = json.loads(_reconcile(database_url, "--since", "7d", "--json").output)
    assert [u["user_id"] for u in recent["users"]] == ["u_new"] and recent["findings"] == 0
    everything = json.loads(_reconcile(database_url, "--since", "all", "--json").output)
    assert [u["user_id"] for u in everything["users"]] == ["u_new", "u_old"]
    assert runner.invoke(app, ["reconcile", "--since", "last tuesday"]).exit_code == 2


def test_balance_mismatch_is_named_even_outside_the_period(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_ok", 10)
    grant(conn, "u_drift", 10)
    _backdate(conn, "u_drift", "60 days")
    with wrong_balance(conn, "u_drift", -3):
        result = _reconcile(database_url)
    assert result.exit_code == 1
    assert "2 users listed, 1 with a balance finding" in result.output
    drift = next(line for line in result.output.splitlines() if line.startswith("u_drift"))
    assert drift.split() == ["u_drift", "0", "0", "0", "0", "0", "7", "10", "balance_mismatch,", "balance_after_mismatch"]
    assert result.output.splitlines()[-2] == "FINDINGS: 1 users: u_drift balance_mismatch, balance_after_mismatch"


def test_negative_balance_is_named(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_neg", 2)
    with negative_ledger(conn, "u_neg", 5):
        result = _reconcile(database_url, "--json")
        rows = _rows(conn)
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["findings"] == 1
    (neg,) = report["users"]
    assert neg["user_id"] == "u_neg" and neg["used"] == -5 and neg["ledger_balance"] == -3 and neg["balance"] == 2
    assert "negative_balance" in neg["findings"] and rows[0]["findings"] == neg["findings"]


def test_missing_balance_row_is_named(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    grant(conn, "u_lost", 4)
    with ledger_bypass(conn):
        conn.execute("DELETE FROM billingdb.credit_balances WHERE user_id = 'u_lost'")
    try:
        result = _reconcile(database_url)
        assert result.exit_code == 1
        assert "u_lost missing_balance_row, balance_mismatch, balance_after_mismatch" in result.output
    finally:
        conn.execute("INSERT INTO billingdb.credit_balances (user_id, balance) VALUES ('u_lost', 4)")


def _invoice_event(conn: psycopg.Connection[Any], event_id: str, invoice_id: str, status: str,
                   event_type: str = "invoice.paid", error: str | None = None) -> None:
    conn.execute(
        """INSERT INTO public.stripe_events (stripe_event_id, event_type, object_id, customer_id, payload, processed,
                                             status, error)
           VALUES (%s, %s, %s, 'cus_reconcile1', '{}', %s, %s, %s)""",
        (event_id, event_type, invoice_id, status in ("processed", "ignored", "stale"), status, error),
    )


def test_paid_invoice_without_allocation_is_named(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT public.link_stripe_customer('u_paid', 'cus_reconcile1')")
    _invoice_event(conn, "evt_failed", "in_unallocated", "failed", error="[BD003] unknown price")
    _invoice_event(conn, "evt_failed_2", "in_unallocated", "pending", event_type="invoice.payment_succeeded")
    _invoice_event(conn, "evt_one_off", "in_one_off", "ignored")  # no subscription: nothing to allocate
    _invoice_event(conn, "evt_paid", "in_allocated", "processed")
    conn.execute("SELECT public.add_subscription_credits('cus_reconcile1', 'in_allocated', 'sub_reconcile1', 5, 'x')")
    result = _reconcile(database_url)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "UNALLOCATED: invoice in_unallocated of u_paid paid (events failed,pending) but no credits allocated: "
        "[BD003] unknown price"
    )
    report = json.loads(_reconcile(database_url, "--json").output)
    assert [i["invoice_id"] for i in report["unallocated_invoices"]] == ["in_unallocated"]
    assert report["findings"] == 1
