"""sync_stripe_subscription and sync_stripe_invoice: Stripe's API objects against billingdb's state.

The drift is computed field by field in both API shapes; applying writes through the one writer
with the listing's time as the watermark and logs a sync; a listing older than an applied event
changes nothing, and an event older than an applied listing is stale; bad input is 22023 and changes
nothing; a paid invoice without an allocation is allocated once.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from events.event_helpers import process, table_contents
from psycopg.types.json import Jsonb

from billingdb.testing.stripe import DAY, SHAPES, StripeWorld

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


def sync_sub(conn: psycopg.Connection[Any], subscription: Any, observed_at: datetime | None = None,
             apply: bool = False) -> dict[str, Any]:
    observed_at = observed_at or datetime.now(UTC) - timedelta(seconds=1)
    row = conn.execute("SELECT public.sync_stripe_subscription(%s, %s, %s) AS r",
                       (Jsonb(subscription), observed_at, apply)).fetchone()
    return row["r"]


def sync_invoice(conn: psycopg.Connection[Any], invoice: Any, observed_at: datetime | None = None,
                 apply: bool = False) -> dict[str, Any]:
    observed_at = observed_at or datetime.now(UTC) - timedelta(seconds=1)
    row = conn.execute("SELECT public.sync_stripe_invoice(%s, %s, %s) AS r",
                       (Jsonb(invoice), observed_at, apply)).fetchone()
    return row["r"]


def subscription_row(conn: psycopg.Connection[Any], subscription_id: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM billingdb.subscriptions WHERE subscription_id = %s",
                        (subscription_id,)).fetchone()


def activity(conn: psycopg.Connection[Any], kind: str) -> list[dict[str, Any]]:
    return [r["details"] for r in conn.execute(
        "SELECT details FROM billingdb.activity_log WHERE activity_type = %s ORDER BY id", (kind,))]


def balance(conn: psycopg.Connection[Any], user_id: str) -> int | None:
    row = conn.execute("SELECT balance FROM billingdb.credit_balances WHERE user_id = %s", (user_id,)).fetchone()
    return row["balance"] if row else None


def subscribed(db: psycopg.Connection[Any], shape: str, **world: Any) -> StripeWorld:
    """A customer whose Checkout, first invoice and subscription events all arrived: active, 30 credits."""
    world.setdefault("now", int(time.time()) - 5 * DAY)  # its later events stay in the past
    w = StripeWorld(api_version=shape, **world)
    for event in w.new_subscription():
        process(db, event)
    assert subscription_row(db, w.subscription_id)["status"] == "active"
    return w


@shapes
def test_in_sync_is_reported_and_nothing_is_written(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    before = table_contents(db)
    for apply in (False, True):
        result = sync_sub(db, w.subscription(), apply=apply)
        assert result["result"] == "in_sync" and result["fields"] == {} and not result["applied"]
        assert result["user_id"] == w.user_id and result["status"] == "active"
    assert table_contents(db) == before


@shapes
def test_drift_is_computed_field_by_field(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    # Events lost: the customer canceled at the period end, then the period rolled over.
    w.cancel_at_end()
    w.renewal()
    before = table_contents(db)
    result = sync_sub(db, w.subscription())
    assert result["result"] == "drift" and not result["applied"]
    fields = result["fields"]
    assert set(fields) == {"cancel_at_period_end", "canceled_at", "current_period_start", "current_period_end"}
    assert fields["cancel_at_period_end"] == [False, True]
    assert fields["canceled_at"][0] is None
    assert datetime.fromisoformat(fields["canceled_at"][1]) == datetime.fromtimestamp(w.canceled_at, UTC)
    assert datetime.fromisoformat(fields["current_period_end"][1]) == datetime.fromtimestamp(w.period_end, UTC)
    assert table_contents(db) == before


@shapes
def test_apply_writes_through_the_writer_logs_a_sync_and_moves_the_watermark(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    lost = w.cancel_now()[0]  # customer.subscription.deleted, never delivered
    observed = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    result = sync_sub(db, w.subscription(), observed, apply=True)
    assert result["result"] == "updated" and result["applied"]
    assert result["fields"]["status"] == ["active", "canceled"]
    row = subscription_row(db, w.subscription_id)
    assert row["status"] == "canceled" and row["canceled_at"] == datetime.fromtimestamp(w.canceled_at, UTC)
    assert row["last_event_created"] == observed and row["last_event_id"] is None
    # The writer logged the change (no event id), and the sync logged itself with the drift.
    changed = activity(db, "subscription_status_changed")[-1]
    assert (changed["from_status"], changed["to_status"], changed["event_id"]) == ("active", "canceled", None)
    synced = activity(db, "subscription_synced")
    assert len(synced) == 1 and synced[0]["fields"]["status"] == ["active", "canceled"]
    assert synced[0]["result"] == "updated" and synced[0]["subscription_id"] == w.subscription_id
    state = db.execute("SELECT public.get_user_subscription_state(%s) AS s", (w.user_id,)).fetchone()["s"]
    assert state["status"] == "canceled"

    # Run again: no drift, nothing written.
    before = table_contents(db)
    again = sync_sub(db, w.subscription(), apply=True)
    assert again["result"] == "in_sync" and again["fields"] == {}
    assert table_contents(db) == before

    # The lost event arrives late: older than the listing, it is stale.
    assert process(db, lost)["status"] == "stale"
    assert subscription_row(db, w.subscription_id)["last_event_created"] == observed


@shapes
def test_an_event_newer_than_the_sync_still_applies(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    w.cancel_at_end()
    observed = datetime.fromtimestamp(w.now + 10, UTC)
    assert sync_sub(db, w.subscription(), observed, apply=True)["result"] == "updated"
    # The customer resumes after the listing: that event is newer than the sync's watermark.
    w.now += 20
    w.cancel_at_period_end, w.canceled_at = False, None
    resumed = w.event("customer.subscription.updated", w.subscription())
    assert process(db, resumed)["status"] == "processed"
    row = subscription_row(db, w.subscription_id)
    assert row["cancel_at_period_end"] is False and row["last_event_id"] == resumed["id"]


@shapes
def test_a_listing_older_than_the_watermark_changes_nothing(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    watermark = subscription_row(db, w.subscription_id)["last_event_created"]
    stale_view = w.subscription(status="past_due")
    before = table_contents(db)
    for observed in (watermark - timedelta(seconds=30), watermark):
        result = sync_sub(db, stale_view, observed, apply=True)
        assert result["result"] == "stale" and not result["applied"]
        assert result["fields"]["status"] == ["active", "past_due"]
        assert datetime.fromisoformat(result["last_event_created"]) == watermark
    assert table_contents(db) == before
    # Newer than the watermark, it applies.
    assert sync_sub(db, stale_view, watermark + timedelta(seconds=1), apply=True)["result"] == "updated"
    assert subscription_row(db, w.subscription_id)["status"] == "past_due"


@shapes
def test_a_subscription_billingdb_never_saw_is_created_and_its_invoice_allocated_once(db, shape) -> None:  # type: ignore[no-untyped-def]
    # Only the Checkout session arrived (the link); the subscription's and invoice's events were lost.
    w = StripeWorld(api_version=shape)
    events = w.new_subscription()
    process(db, events[-1])
    invoice = events[1]["data"]["object"]
    w.tick()
    result = sync_sub(db, w.subscription())
    assert result["result"] == "drift" and result["fields"]["status"] == [None, "active"]
    assert result["fields"]["price_id"] == [None, w.price_id] and result["user_id"] == w.user_id

    found = sync_invoice(db, invoice)
    assert found["result"] == "unallocated" and not found["applied"]
    assert (found["subscription_id"], found["user_id"], found["billing_reason"]) == (
        w.subscription_id, w.user_id, "subscription_create")
    assert balance(db, w.user_id) is None

    assert sync_sub(db, w.subscription(), apply=True)["result"] == "created"
    allocated = sync_invoice(db, invoice, apply=True)
    assert allocated["result"] == "allocated" and allocated["applied"]
    assert allocated["allocation"]["credits"] == 30 and not allocated["allocation"]["duplicate"]
    assert balance(db, w.user_id) == 30
    ledger = db.execute("SELECT metadata FROM public.credit_transactions WHERE reference = %s",
                        (f"invoice:{invoice['id']}",)).fetchone()["metadata"]
    assert ledger["event_type"] == "billingdb.sync" and ledger["stripe_event_id"] is None
    assert ledger["billing_reason"] == "subscription_create" and ledger["price_id"] == w.price_id
    assert [a["invoice_id"] for a in activity(db, "invoice_synced")] == [invoice["id"]]

    # Again: allocated already, nothing written; the lost webhook arriving late is a duplicate allocation.
    before = table_contents(db)
    again = sync_invoice(db, invoice, apply=True)
    assert again["result"] == "allocated" and not again["applied"]
    assert table_contents(db) == before
    assert process(db, events[1])["detail"]["allocation"]["duplicate"] is True
    assert balance(db, w.user_id) == 30


@shapes
def test_a_renewal_whose_events_were_lost(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    renewal = w.renewal()
    invoice = renewal[-1]["data"]["object"]
    sub = sync_sub(db, w.subscription(), apply=True)
    assert sub["result"] == "updated" and set(sub["fields"]) == {"current_period_start", "current_period_end"}
    assert sync_invoice(db, invoice)["result"] == "unallocated"
    assert sync_invoice(db, invoice, apply=True)["allocation"]["credits"] == 30
    assert balance(db, w.user_id) == 60
    assert sync_invoice(db, invoice)["result"] == "allocated"


@shapes
def test_a_proration_flag_that_is_not_a_boolean_is_not_a_cast_error(db, shape) -> None:  # type: ignore[no-untyped-def]
    """A line whose proration flag is not JSON true or false (a malformed or future shape) is simply not a
    proration line: before, the invoice failed with a bare 22P02 cast error and stopped the sync's loop."""
    w = subscribed(db, shape)
    renewal = w.renewal()
    invoice = copy.deepcopy(renewal[-1]["data"]["object"])
    odd = copy.deepcopy(invoice["lines"]["data"][0])
    if shape == SHAPES[1]:
        odd["parent"]["subscription_item_details"]["proration"] = "maybe"
    else:
        odd["proration"] = "maybe"
    odd["amount"] = -100
    invoice["lines"]["data"].append(odd)
    assert sync_invoice(db, invoice, apply=True)["allocation"]["credits"] == 30
    assert balance(db, w.user_id) == 60
    # The webhook's path reads the same lines: processed (its allocation a duplicate), not failed.
    assert process(db, w.event("invoice.paid", invoice))["status"] == "processed"
    assert balance(db, w.user_id) == 60


@shapes
def test_invoices_that_need_nothing(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    first = sync_invoice(db, w.invoice("subscription_create", invoice_id=None))
    assert first["result"] == "unallocated"  # a paid invoice no event told billingdb about
    before = table_contents(db)
    assert sync_invoice(db, w.invoice("subscription_cycle", paid=False), apply=True)["result"] == "not_paid"
    no_sub = w.invoice("manual")
    no_sub.pop("subscription", None)
    no_sub.pop("parent", None)
    for line in no_sub["lines"]["data"]:
        line.pop("subscription", None)
        line.pop("parent", None)
    assert sync_invoice(db, no_sub, apply=True)["result"] == "not_subscription"
    assert table_contents(db) == before


@shapes
def test_a_customer_nobody_is_linked_to(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape, status="active")
    before = table_contents(db)
    for apply in (False, True):
        result = sync_sub(db, w.subscription(), apply=apply)
        assert result["result"] == "not_linked" and result["user_id"] is None and not result["applied"]
        assert sync_invoice(db, w.invoice("subscription_create"), apply=apply)["result"] == "not_linked"
    assert table_contents(db) == before

    # The subscription's metadata names the user: applying links the customer, as a webhook would.
    w.user_in_metadata = True
    assert sync_sub(db, w.subscription())["result"] == "drift"
    assert table_contents(db) == before
    assert sync_sub(db, w.subscription(), apply=True)["result"] == "created"
    link = db.execute("SELECT user_id FROM billingdb.stripe_customers WHERE stripe_customer_id = %s",
                      (w.customer_id,)).fetchone()
    assert link == {"user_id": w.user_id}


@shapes
def test_a_contradicting_user_fails_and_writes_nothing(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    other = w.subscription(status="past_due", metadata={"user_id": "user_someone_else"})
    result = sync_sub(db, other)
    assert result["result"] == "drift" and result["fields"]["user_id"] == [w.user_id, "user_someone_else"]
    before = table_contents(db)
    failed = sync_sub(db, other, apply=True)
    assert failed["result"] == "failed" and not failed["applied"] and "[BD004]" in failed["reason"]
    assert table_contents(db) == before


@shapes
def test_an_ended_subscription_never_seen_is_ignored(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    old = StripeWorld(api_version=shape, customer_id=w.customer_id, user_id=w.user_id, status="canceled",
                      now=w.now - 90 * DAY)
    old.canceled_at = old.now + DAY
    before = table_contents(db)
    result = sync_sub(db, old.subscription(), apply=True)
    assert result["result"] == "ignored" and not result["applied"]
    assert sync_sub(db, old.subscription(status="incomplete_expired"), apply=True)["result"] == "ignored"
    assert table_contents(db) == before


def _bad_subscriptions(w: StripeWorld) -> list[Any]:
    sub = w.subscription()
    return [
        None,
        [sub],
        "sub_x",
        {k: v for k, v in sub.items() if k != "id"},
        {**sub, "id": "cus_not_a_subscription"},
        {**sub, "customer": None},
        {**sub, "customer": "acct_123"},
        {**sub, "status": "bogus"},
        {**sub, "status": 3},
        {**sub, "current_period_start": "soon"},
        {**sub, "current_period_end": 1.5},
        {**sub, "canceled_at": -1},
        {**sub, "cancel_at": "tomorrow"},
        {**sub, "cancel_at_period_end": "yes"},
        {**sub, "items": {"data": [{**sub["items"]["data"][0], "current_period_end": "later"}]},
         "current_period_end": None},
        {**sub, "metadata": {"user_id": 42}},
    ]


@shapes
def test_bad_input_is_22023_and_changes_nothing(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = subscribed(db, shape)
    w.cancel_at_end()
    before = table_contents(db)
    for bad in _bad_subscriptions(w):
        for apply in (False, True):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                sync_sub(db, bad, apply=apply)
    good = w.subscription()
    for observed, apply in ((None, True), (datetime.now(UTC) + timedelta(hours=1), True),
                            (datetime.now(UTC), None), ("-infinity", True), ("infinity", False)):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            db.execute("SELECT public.sync_stripe_subscription(%s, %s, %s)", (Jsonb(good), observed, apply))
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            db.execute("SELECT public.sync_stripe_invoice(%s, %s, %s)",
                       (Jsonb(w.invoice("subscription_cycle")), observed, apply))
    invoice = w.invoice("subscription_cycle")
    for bad in (None, [invoice], {k: v for k, v in invoice.items() if k != "id"}, {**invoice, "id": "sub_x"},
                {**invoice, "status": None}, {**invoice, "customer": "acct_x"}, {**invoice, "customer": None},
                {**invoice, "created": "yesterday", "status_transitions": {"paid_at": None}},
                {**invoice, "status_transitions": {"paid_at": "now"}}):
        for apply in (False, True):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                sync_invoice(db, bad, apply=apply)
    assert table_contents(db) == before
