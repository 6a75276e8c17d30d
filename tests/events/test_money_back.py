"""Money going back takes back the credits it paid for, idempotently, in both API shapes: a refund (in
proportion to the cumulative refunded amount), a partial refund then another, a dispute lost, a dispute
won (exactly what was taken comes back). Never below zero: what was already spent is a shortfall that
reconcile and health name. The ledger invariant holds throughout (checked after every test)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from events.event_helpers import event_row, process, setup_plans

from billingdb.testing.stripe import SHAPES, StripeWorld

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    setup_plans(conn)  # Individual: 30 credits
    return conn


def _paid(db: psycopg.Connection[Any], shape: str) -> tuple[StripeWorld, dict[str, Any]]:
    """A linked user whose first invoice (999 cents, 30 credits) is paid."""
    w = StripeWorld(api_version=shape)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    events = w.new_subscription()
    for e in events:
        process(db, e)
    invoice = next(e for e in events if e["type"] == "invoice.paid")["data"]["object"]
    return w, invoice


def _balance(db: psycopg.Connection[Any], user_id: str) -> int:
    return db.execute("SELECT balance FROM billingdb.credit_balances WHERE user_id = %s", (user_id,)).fetchone()["balance"]


def _entries(db: psycopg.Connection[Any], user_id: str, kind: str) -> list[int]:
    return [r["amount"] for r in db.execute(
        "SELECT amount FROM public.credit_transactions WHERE user_id = %s AND transaction_type = %s ORDER BY id",
        (user_id, kind))]


def _shortfalls(db: psycopg.Connection[Any], user_id: str) -> list[tuple[str, int, bool]]:
    return [(r["cause"], r["credits"], r["resolved_at"] is not None) for r in db.execute(
        "SELECT cause, credits, resolved_at FROM billingdb.credit_shortfalls WHERE user_id = %s ORDER BY id",
        (user_id,))]


@shapes
def test_a_full_refund_takes_the_credits_back_once(db, shape) -> None:  # type: ignore[no-untyped-def]
    w, invoice = _paid(db, shape)
    event = w.event("charge.refunded", w.charge(invoice, amount_refunded=999))
    first = process(db, event)
    assert first["status"] == "processed" and first["detail"]["result"]["clawed"] == 30, first
    assert process(db, event)["status"] == "duplicate"
    # The same cumulative refund in another event (Stripe sends charge.refund.updated too): nothing again.
    again = process(db, w.event("charge.refunded", w.charge(invoice, amount_refunded=999)))
    assert again["detail"]["result"]["clawed"] == 0
    assert _entries(db, w.user_id, "clawback") == [-30] and _balance(db, w.user_id) == 0


@shapes
def test_partial_refunds_take_back_in_proportion_never_twice(db, shape) -> None:  # type: ignore[no-untyped-def]
    w, invoice = _paid(db, shape)
    # A third, then two thirds in total (cumulative amount_refunded), then the rest.
    for refunded, expected in ((333, [-10]), (666, [-10, -10]), (999, [-10, -10, -10])):
        assert process(db, w.event("charge.refunded", w.charge(invoice, amount_refunded=refunded)))["status"] == "processed"
        assert _entries(db, w.user_id, "clawback") == expected
    assert _balance(db, w.user_id) == 0 and _shortfalls(db, w.user_id) == []


@shapes
def test_spent_credits_are_a_shortfall_that_reconcile_and_health_name(db, shape) -> None:  # type: ignore[no-untyped-def]
    w, invoice = _paid(db, shape)
    db.execute("SELECT public.use_credits_validated(%s, 25)", (w.user_id,))
    r = process(db, w.event("charge.refunded", w.charge(invoice, amount_refunded=999)))
    assert r["detail"]["result"]["clawed"] == 5
    assert r["detail"]["result"]["shortfall"] == 25
    assert _balance(db, w.user_id) == 0 and _shortfalls(db, w.user_id) == [("refund", 25, False)]
    findings = {row["user_id"]: row["findings"] for row in db.execute("SELECT * FROM public.reconcile_credits()")}
    assert findings[w.user_id] == ["clawback_shortfall"]
    health = db.execute("SELECT public.billing_health() AS h").fetchone()["h"]
    check = next(c for c in health["checks"] if c["name"] == "clawback_shortfalls")
    assert check["status"] == "breach" and w.user_id in check["detail"] and invoice["id"] in check["detail"]
    # Redelivered, the refund records no second shortfall.
    process(db, w.event("charge.refunded", w.charge(invoice, amount_refunded=999)))
    assert _shortfalls(db, w.user_id) == [("refund", 25, False)]


@shapes
def test_a_dispute_lost_holds_the_credits_back(db, shape) -> None:  # type: ignore[no-untyped-def]
    w, invoice = _paid(db, shape)
    dispute = w.dispute(invoice)
    for kind in ("charge.dispute.created", "charge.dispute.funds_withdrawn"):
        assert process(db, w.event(kind, dispute))["status"] == "processed"
    assert _entries(db, w.user_id, "clawback") == [-30] and _balance(db, w.user_id) == 0
    lost = process(db, w.event("charge.dispute.closed", {**dispute, "status": "lost"}))
    assert lost["status"] == "processed" and "stay taken back" in lost["detail"]["result"]["reason"]
    assert _entries(db, w.user_id, "reinstatement") == [] and _balance(db, w.user_id) == 0


@shapes
def test_a_dispute_won_gives_back_exactly_what_it_took(db, shape) -> None:  # type: ignore[no-untyped-def]
    w, invoice = _paid(db, shape)
    db.execute("SELECT public.use_credits_validated(%s, 10)", (w.user_id,))
    dispute = w.dispute(invoice)
    process(db, w.event("charge.dispute.funds_withdrawn", dispute))
    assert _entries(db, w.user_id, "clawback") == [-20] and _shortfalls(db, w.user_id) == [("dispute", 10, False)]
    for kind, obj in (("charge.dispute.funds_reinstated", dispute),
                      ("charge.dispute.closed", {**dispute, "status": "won"})):
        assert process(db, w.event(kind, obj))["status"] == "processed"
    assert _entries(db, w.user_id, "reinstatement") == [20]
    assert _balance(db, w.user_id) == 20 and _shortfalls(db, w.user_id) == [("dispute", 10, True)]


@shapes
def test_a_dispute_for_an_invoice_billingdb_never_saw_is_ignored(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    stranger = w.invoice("manual", invoice_id="in_neverseen")
    event = w.event("charge.dispute.created", w.dispute(stranger))
    r = process(db, event)
    assert r["status"] == "ignored" and "no allocation" in r["detail"]["reason"]
    assert event_row(db, event["id"])["status"] == "ignored"


@shapes
def test_a_refund_larger_than_the_charge_fails_and_changes_nothing(db, shape) -> None:  # type: ignore[no-untyped-def]
    w, invoice = _paid(db, shape)
    event = w.event("charge.refunded", w.charge(invoice, amount_refunded=5000))
    r = process(db, event)
    assert r["status"] == "failed" and r["detail"]["sqlstate"] == "22023"
    assert "amount_refunded must be between 0 and the charge's amount" in event_row(db, event["id"])["error"]
    assert _entries(db, w.user_id, "clawback") == [] and _balance(db, w.user_id) == 30
