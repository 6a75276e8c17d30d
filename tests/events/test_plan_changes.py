"""Plan changes from customer.subscription.updated and the subscription_update invoice that pays them,
in both API shapes: the new price applies and is logged at once; the invoice grants what the new
plan's policy says (difference, full, none), once; a downgrade grants nothing until the renewal; a
reset-each-period plan expires the whole period's credits at the renewal, upgrade included."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from events.event_helpers import process

from billingdb.testing.stripe import SHAPES, StripeWorld

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])

TEAM, CUSTOM = "price_team_pc", "price_custom_pc"


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("SELECT public.set_plan(%s, 'Team', 200)", (TEAM,))
    conn.execute("SELECT public.set_plan(%s, 'Custom', 500)", (CUSTOM,))
    return conn


def _subscribed(db: psycopg.Connection[Any], shape: str, price: str = TEAM) -> StripeWorld:
    w = StripeWorld(api_version=shape, price_id=price)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    for e in w.new_subscription():
        process(db, e)
    return w


def _change_plan(db: psycopg.Connection[Any], w: StripeWorld, price: str, *, invoice: bool = True) -> dict[str, Any]:
    """The customer switches price mid-period: the subscription update, then its proration invoice."""
    w.price_id = price
    w.tick(60)
    process(db, w.event("customer.subscription.updated", w.subscription()))
    if not invoice:
        return {}
    inv = w.invoice("subscription_update")
    results = [process(db, w.event(t, inv)) for t in ("invoice.paid", "invoice.payment_succeeded")]
    assert [r["status"] for r in results] == ["processed", "processed"]
    return results[0]


def _ledger(db: psycopg.Connection[Any], user_id: str) -> list[tuple[str, int]]:
    return [(r["transaction_type"], r["amount"]) for r in db.execute(
        "SELECT transaction_type, amount FROM public.credit_transactions WHERE user_id = %s ORDER BY id", (user_id,))]


def _state(db: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    return db.execute("SELECT public.get_user_subscription_state(%s) AS s", (user_id,)).fetchone()["s"]


@shapes
@pytest.mark.parametrize(("policy", "granted"), [("difference", 300), ("full", 500), ("none", 0)])
def test_an_upgrade_grants_what_the_new_plan_says(db, shape, policy, granted) -> None:  # type: ignore[no-untyped-def]
    db.execute("SELECT public.set_plan(%s, 'Custom', 500, change_credits => %s)", (CUSTOM, policy))
    w = _subscribed(db, shape)
    assert _ledger(db, w.user_id) == [("allocation", 200)]
    result = _change_plan(db, w, CUSTOM)
    assert result["detail"]["policy"] == policy
    state = _state(db, w.user_id)
    assert state["plan"] == "Custom" and state["price_id"] == CUSTOM
    assert state["credits_balance"] == 200 + granted
    assert _ledger(db, w.user_id) == [("allocation", 200)] + ([("allocation", granted)] if granted else [])
    logged = db.execute(
        "SELECT details FROM billingdb.activity_log WHERE activity_type = 'subscription_plan_changed'"
    ).fetchall()
    assert [(x["details"]["from_price_id"], x["details"]["to_price_id"]) for x in logged] == [(TEAM, CUSTOM)]


@shapes
def test_a_downgrade_grants_nothing_until_the_renewal(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = _subscribed(db, shape, CUSTOM)
    result = _change_plan(db, w, TEAM)
    assert result["detail"]["allocation"] is None and "no credits now" in result["detail"]["reason"]
    assert _state(db, w.user_id)["plan"] == "Team" and _state(db, w.user_id)["credits_balance"] == 500
    for e in w.renewal():
        process(db, e)
    assert _ledger(db, w.user_id) == [("allocation", 500), ("allocation", 200)]


@shapes
def test_the_invoice_alone_grants_by_policy_when_no_update_arrives(db, shape) -> None:  # type: ignore[no-untyped-def]
    """localstripe sends no subscription update for a plan change: the invoice still grants the difference."""
    w = _subscribed(db, shape)
    w.price_id = CUSTOM
    w.tick(60)
    inv = w.invoice("subscription_update")
    assert process(db, w.event("invoice.paid", inv))["status"] == "processed"
    assert _ledger(db, w.user_id) == [("allocation", 200), ("allocation", 300)]
    # The invoice billed the new price: the state shows the new plan at once.
    state = _state(db, w.user_id)
    assert state["plan"] == "Custom" and state["credits_balance"] == 500


@shapes
def test_a_reset_plan_expires_the_whole_period_at_the_renewal(db, shape) -> None:  # type: ignore[no-untyped-def]
    db.execute("SELECT public.set_plan(%s, 'Team', 200, reset_each_period => true)", (TEAM,))
    db.execute("SELECT public.set_plan(%s, 'Custom', 500, reset_each_period => true)", (CUSTOM,))
    w = _subscribed(db, shape)
    db.execute("SELECT public.use_credits_validated(%s, 50)", (w.user_id,))
    _change_plan(db, w, CUSTOM)  # +300, nothing expires mid-period
    assert _ledger(db, w.user_id) == [("allocation", 200), ("usage", -50), ("allocation", 300)]
    for e in w.renewal():
        process(db, e)
    # The period granted 500 and 50 were used: 450 expire, then the new period's 500.
    assert _ledger(db, w.user_id)[3:] == [("expiration", -450), ("allocation", 500)]
    assert _state(db, w.user_id)["credits_balance"] == 500
