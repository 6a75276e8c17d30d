"""process_stripe_event / retry_stripe_event in SQL: each event type, both API shapes, statuses and their rows.

HTTP is tested in tests/http; order and concurrency in test_event_ordering.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import psycopg
import pytest
from events.event_helpers import event_row, process, retry, table_contents, world_state
from psycopg.types.json import Jsonb

from billingdb.testing.stripe import BASIL, DAY, MONTH, PRE_BASIL, SHAPES, StripeWorld

pytestmark = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


def deliver(db: psycopg.Connection[Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [process(db, e) for e in events]


def linked_world(db: psycopg.Connection[Any], shape: str, **kw: Any) -> StripeWorld:
    """A world whose user and customer are linked before any event (the checkout route links first)."""
    w = StripeWorld(api_version=shape, **kw)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    return w


def test_new_subscription_in_order(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    events = w.new_subscription()
    results = deliver(db, events)
    assert [r["status"] for r in results] == ["processed"] * 5
    assert [r["event_id"] for r in results] == [e["id"] for e in events]
    assert results[1]["detail"]["allocation"]["duplicate"] is False
    assert results[2]["detail"]["allocation"]["duplicate"] is True  # payment_succeeded after paid: same invoice
    state = world_state(db, w.user_id, w.customer_id)
    assert state["balance"] == 30
    assert [(t["transaction_type"], t["amount"], t["billing_reason"]) for t in state["ledger"]] == [
        ("allocation", 30, "subscription_create")
    ]
    sub = state["subscriptions"][0]
    assert (sub["status"], sub["price_id"]) == ("active", "price_individual_test")
    assert int(sub["current_period_start"].timestamp()) == w.period_start
    assert int(sub["current_period_end"].timestamp()) == w.period_end
    assert state["state"]["can_use_credits"] is True and state["state"]["plan"] == "Individual"
    for e in events:
        row = event_row(db, e["id"])
        assert row is not None
        assert (row["status"], row["processed"], row["error"], row["retry_count"]) == ("processed", True, None, 0)
        assert row["processed_at"] is not None and row["api_version"] == shape
        assert row["customer_id"] == w.customer_id and row["subscription_id"] == w.subscription_id
        assert row["event_type"] == e["type"] and row["payload"] == e


def test_every_event_twice_is_a_duplicate_and_changes_nothing(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    life = w.new_subscription() + w.renewal() + w.failed_renewal() + w.cancel_now()
    for e in life:
        first = process(db, e)
        assert first["status"] in {"processed", "ignored", "stale"}
        before = table_contents(db)
        again = process(db, copy.deepcopy(e))
        assert again["status"] == "duplicate"
        assert again["event_id"] == e["id"]
        assert again["detail"]["first_status"] == first["status"]
        assert table_contents(db) == before


def test_renewal_allocates_once_per_invoice_and_records_billing_reason(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    deliver(db, w.new_subscription())
    results = deliver(db, w.renewal())
    assert [r["status"] for r in results] == ["processed", "ignored", "processed", "processed"]
    assert results[1]["detail"] == {"reason": "event type not handled", "type": "invoice.created"}
    state = world_state(db, w.user_id, w.customer_id)
    assert state["balance"] == 60
    assert [t["billing_reason"] for t in state["ledger"]] == ["subscription_create", "subscription_cycle"]
    assert int(state["subscriptions"][0]["current_period_end"].timestamp()) == w.period_end
    meta = db.execute(
        "SELECT metadata FROM public.credit_transactions WHERE metadata->>'billing_reason' = 'subscription_cycle'"
    ).fetchone()["metadata"]
    assert meta["price_id"] == "price_individual_test" and meta["credits_source"] == "plan"
    assert meta["invoice_id"].startswith("in_") and meta["subscription_id"] == w.subscription_id


def test_payment_failed_moves_to_past_due_and_logs(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    deliver(db, w.new_subscription())
    results = deliver(db, w.failed_renewal())
    assert [r["status"] for r in results] == ["processed", "processed", "processed"]
    assert results[1]["detail"]["subscription"]["to_status"] == "past_due"
    state = world_state(db, w.user_id, w.customer_id)
    assert state["subscriptions"][0]["status"] == "past_due"
    assert state["balance"] == 30  # a failed payment allocates nothing
    log = db.execute(
        "SELECT details FROM billingdb.activity_log WHERE user_id = %s AND activity_type = 'payment_failed'",
        (w.user_id,),
    ).fetchall()
    assert len(log) == 1 and log[0]["details"]["subscription_id"] == w.subscription_id


def test_period_is_the_subscriptions_or_the_items_span(db, shape) -> None:  # type: ignore[no-untyped-def]
    # Two items with different periods: basil+ stores the items' span; before basil the
    # subscription's own period wins over whatever the items carry.
    w = linked_world(db, shape)
    sub = w.subscription()
    second = copy.deepcopy(sub["items"]["data"][0])
    second.update(id="si_second", current_period_start=w.period_start - DAY, current_period_end=w.period_end + DAY)
    sub["items"]["data"].append(second)
    assert process(db, w.event("customer.subscription.created", sub))["status"] == "processed"
    stored = world_state(db, w.user_id, w.customer_id)["subscriptions"][0]
    period = (int(stored["current_period_start"].timestamp()), int(stored["current_period_end"].timestamp()))
    if shape == BASIL:
        assert period == (w.period_start - DAY, w.period_end + DAY)
    else:
        assert period == (w.period_start, w.period_end)


def test_plan_change_invoice_grants_the_priced_non_proration_line(db, shape) -> None:  # type: ignore[no-untyped-def]
    # Lines: the old price's unused time (proration, negative), a line without a price, the new
    # price. The credits are the new price's plan (Team, 200), whatever the order of the lines.
    # (The policy "full" grants them whole at each plan change: tests/events/test_plan_changes.py
    # tests the policies.)
    db.execute("SELECT public.set_plan('price_team_test', 'Team', 200, change_credits => 'full')")
    w = linked_world(db, shape)
    inv = w.invoice("subscription_update", price_id="price_team_test")
    new_line = inv["lines"]["data"][0]
    old_line = copy.deepcopy(new_line)
    old_line.update(id="il_unused_time", amount=-999)
    no_price = copy.deepcopy(new_line)
    no_price.update(id="il_no_price")
    if shape == BASIL:
        old_line["parent"]["subscription_item_details"]["proration"] = True
        old_line["pricing"]["price_details"]["price"] = "price_individual_test"
        no_price["pricing"] = None
    else:
        old_line["proration"] = True
        old_line["price"]["id"] = "price_individual_test"
        no_price["price"] = None
        no_price["plan"] = None
    for n, lines in enumerate(([old_line, no_price, new_line], [new_line, old_line, no_price])):
        inv = copy.deepcopy(inv)
        inv["id"] = f"in_plan_change_{n}"
        inv["lines"]["data"] = lines
        detail = process(db, w.event("invoice.paid", inv))["detail"]
        assert (detail["price_id"], detail["allocation"]["credits"]) == ("price_team_test", 200), detail
    # One line without a price: nothing to grant, the event fails (BD003) and changes no balance.
    inv = copy.deepcopy(inv)
    inv["id"] = "in_no_price"
    inv["lines"]["data"] = [no_price]
    result = process(db, w.event("invoice.paid", inv))
    assert (result["status"], result["detail"]["sqlstate"]) == ("failed", "BD003")
    assert world_state(db, w.user_id, w.customer_id)["balance"] == 400


def test_cancellation_keeps_credits_until_period_end(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    deliver(db, w.new_subscription())
    assert [r["status"] for r in deliver(db, w.cancel_at_end())] == ["processed"]
    state = world_state(db, w.user_id, w.customer_id)
    assert state["state"]["cancel_at_period_end"] is True and state["state"]["can_use_credits"] is True
    assert [r["status"] for r in deliver(db, w.cancel_now())] == ["processed"]
    state = world_state(db, w.user_id, w.customer_id)
    assert state["subscriptions"][0]["status"] == "canceled"
    assert state["state"]["status"] == "canceled"
    assert state["state"]["can_use_credits"] is True  # until current_period_end
    use = db.execute("SELECT public.use_credits_validated(%s, 5, 'story') AS r", (w.user_id,)).fetchone()["r"]
    assert use["success"] is True and use["balance"] == 25


def test_canceled_after_period_end_cannot_spend(db, shape) -> None:  # type: ignore[no-untyped-def]
    import time

    w = linked_world(db, shape, now=int(time.time()) - 2 * MONTH)
    deliver(db, w.new_subscription())
    deliver(db, w.cancel_now())
    state = world_state(db, w.user_id, w.customer_id)
    assert state["state"]["status"] == "canceled"
    assert state["state"]["can_use_credits"] is False


def test_older_subscription_event_is_stale(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    created, paid, succeeded, updated, checkout = w.new_subscription()
    assert process(db, updated)["status"] == "processed"  # active, newer
    before = table_contents(db, ["subscriptions", "credit_transactions", "credit_balances"])
    stale = process(db, created)  # incomplete, one second older
    assert stale["status"] == "stale"
    assert stale["detail"]["subscription"]["result"] == "stale"
    assert table_contents(db, ["subscriptions", "credit_transactions", "credit_balances"]) == before
    row = event_row(db, created["id"])
    assert (row["status"], row["processed"]) == ("stale", True)


def test_unknown_price_fails_then_retry_after_plan_is_added(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape, price_id="price_unknown_test")
    created, paid, succeeded, updated, checkout = w.new_subscription()
    assert process(db, created)["status"] == "processed"  # a subscription does not need the plan
    before = table_contents(db, ["credit_transactions", "credit_balances", "activity_log", "subscription_cache"])
    failed = process(db, paid)
    assert failed["status"] == "failed"
    assert failed["detail"]["sqlstate"] == "BD003" and failed["detail"]["retry_count"] == 1
    row = event_row(db, paid["id"])
    assert (row["status"], row["processed"], row["retry_count"]) == ("failed", False, 1)
    assert row["error"].startswith("[BD003]")
    assert table_contents(db, ["credit_transactions", "credit_balances", "activity_log", "subscription_cache"]) \
        == before
    # Stripe redelivers the same event: still failing, counted.
    assert process(db, paid)["status"] == "failed"
    assert event_row(db, paid["id"])["retry_count"] == 2
    # The plan is added; retry_stripe_event applies the stored payload, then the event is done.
    db.execute("SELECT public.set_plan('price_unknown_test', 'Late plan', 42)")
    done = retry(db, paid["id"])
    assert done["status"] == "processed" and done["detail"]["allocation"]["credits"] == 42
    row = event_row(db, paid["id"])
    assert (row["status"], row["processed"], row["error"], row["retry_count"]) == ("processed", True, None, 2)
    assert retry(db, paid["id"])["status"] == "duplicate"
    assert process(db, succeeded)["detail"]["allocation"]["duplicate"] is True
    assert world_state(db, w.user_id, w.customer_id)["balance"] == 42


def test_metadata_credits_fallback_when_price_is_not_a_plan(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape, price_id="price_from_metadata", price_credits_metadata=77)
    results = deliver(db, w.new_subscription())
    assert results[1]["detail"]["credits_source"] == "metadata"
    assert world_state(db, w.user_id, w.customer_id)["balance"] == 77


def test_both_shapes_are_read_from_their_own_fields(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    sub = w.subscription(status="active")
    inv = w.invoice("subscription_create")
    if shape == BASIL:
        assert "current_period_end" not in sub and sub["items"]["data"][0]["current_period_end"] == w.period_end
        assert "subscription" not in inv and inv["parent"]["subscription_details"]["subscription"]
        assert "price" not in inv["lines"]["data"][0]
    else:
        assert sub["current_period_end"] == w.period_end and "current_period_end" not in sub["items"]["data"][0]
        assert inv["subscription"] == w.subscription_id and "parent" not in inv
        assert "pricing" not in inv["lines"]["data"][0]
    assert process(db, w.event("customer.subscription.created", sub))["status"] == "processed"
    assert process(db, w.event("invoice.paid", inv))["status"] == "processed"
    state = world_state(db, w.user_id, w.customer_id)
    assert int(state["subscriptions"][0]["current_period_end"].timestamp()) == w.period_end
    assert state["ledger"][0]["invoice_id"] == inv["id"] and state["balance"] == 30


def test_pending_until_checkout_links_the_customer(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    *before_link, checkout = w.new_subscription()
    for e in before_link:
        r = process(db, e)
        assert r["status"] == "pending"
        assert r["detail"] == {"reason": "customer not linked to a user", "customer_id": w.customer_id}
        row = event_row(db, e["id"])
        assert (row["status"], row["processed"], row["retry_count"]) == ("pending", False, 0)
    assert db.execute("SELECT count(*) AS n FROM billingdb.subscriptions").fetchone()["n"] == 0
    assert db.execute("SELECT count(*) AS n FROM public.credit_transactions").fetchone()["n"] == 0
    # A redelivery of a pending event stays pending.
    assert process(db, before_link[0])["status"] == "pending"
    done = process(db, checkout)
    assert done["status"] == "processed"
    order = sorted(before_link, key=lambda e: (e["created"], e["id"]))
    assert [p["event_id"] for p in done["detail"]["applied_pending"]] == [e["id"] for e in order]
    assert {p["status"] for p in done["detail"]["applied_pending"]} == {"processed"}
    state = world_state(db, w.user_id, w.customer_id)
    assert state["link"] == [{"user_id": w.user_id, "stripe_customer_id": w.customer_id}]
    assert state["subscriptions"][0]["status"] == "active" and state["balance"] == 30
    assert state["events_not_done"] == 0


def test_pending_resolved_by_a_link_made_elsewhere(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    *before_link, _checkout = w.new_subscription()
    assert {process(db, e)["status"] for e in before_link} == {"pending"}
    # The application links the customer itself (e.g. the checkout route): the trigger applies the events.
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    state = world_state(db, w.user_id, w.customer_id)
    assert state["subscriptions"][0]["status"] == "active" and state["balance"] == 30
    assert state["events_not_done"] == 0


def test_pending_event_retry_stays_pending_until_linked(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    created = w.new_subscription()[0]
    assert process(db, created)["status"] == "pending"
    assert retry(db, created["id"])["status"] == "pending"
    assert event_row(db, created["id"])["retry_count"] == 0


def test_a_failing_pending_event_does_not_block_the_link(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape, price_id="price_unknown_test")
    created, paid, succeeded, updated, checkout = w.new_subscription()
    for e in (created, paid, updated):
        assert process(db, e)["status"] == "pending"
    done = process(db, checkout)
    assert done["status"] == "processed"
    statuses = {p["event_id"]: p["status"] for p in done["detail"]["applied_pending"]}
    assert statuses == {created["id"]: "processed", paid["id"]: "failed", updated["id"]: "processed"}
    assert event_row(db, paid["id"])["error"].startswith("[BD003]")
    assert world_state(db, w.user_id, w.customer_id)["subscriptions"][0]["status"] == "active"


def test_checkout_without_reference_waits_for_a_link(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    session = w.event("checkout.session.completed", w.checkout_session(client_reference_id=None, metadata={}))
    r = process(db, session)
    assert r["status"] == "pending" and r["detail"]["customer_id"] == w.customer_id
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    assert event_row(db, session["id"])["status"] == "processed"


def test_checkout_for_a_customer_of_another_user_fails(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    other = w.event("checkout.session.completed", w.checkout_session(client_reference_id="user_someone_else"))
    r = process(db, other)
    assert r["status"] == "failed" and r["detail"]["sqlstate"] == "BD004"
    assert db.execute("SELECT count(*) AS n FROM billingdb.stripe_customers").fetchone()["n"] == 1


def test_unhandled_types_are_ignored(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    before = table_contents(db, ["subscriptions", "credit_transactions", "activity_log", "stripe_customers"])
    for event_type in ("customer.discount.created", "invoice.finalized", "plan.created", "charge.succeeded"):
        r = process(db, w.event(event_type, {"id": "obj_123", "object": "thing"}))
        assert r["status"] == "ignored" and r["detail"]["type"] == event_type
    # A one-off invoice (no subscription) allocates nothing.
    inv = w.invoice("manual")
    inv.pop("subscription", None)
    inv["parent"] = None
    for line in inv["lines"]["data"]:
        line["parent"] = None
        line["subscription"] = None
    r = process(db, w.event("invoice.paid", inv))
    assert r["status"] == "ignored" and r["detail"]["reason"] == "not a subscription invoice"
    assert table_contents(db, ["subscriptions", "credit_transactions", "activity_log", "stripe_customers"]) == before


def _mangle(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    e = copy.deepcopy(event)
    target = e
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return e


_DELETE = object()

BAD_ENVELOPES = {
    "missing id": (("id",), _DELETE),
    "empty id": (("id",), " "),
    "numeric id": (("id",), 42),
    "missing type": (("type",), _DELETE),
    "type not a string": (("type",), ["invoice.paid"]),
    "missing created": (("created",), _DELETE),
    "created as a string": (("created",), "1700000000"),
    "negative created": (("created",), -1),
    "fractional created": (("created",), 1.5),
    "missing data": (("data",), _DELETE),
    "missing data.object": (("data", "object"), _DELETE),
    "data.object a list": (("data", "object"), [1, 2]),
    "api_version a number": (("api_version",), 20250331),
}


@pytest.mark.parametrize("case", list(BAD_ENVELOPES), ids=list(BAD_ENVELOPES))
def test_bad_envelope_raises_22023_and_writes_nothing(db, shape, case) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    path, value = BAD_ENVELOPES[case]
    event = _mangle(w.new_subscription()[1], path, value)
    before = table_contents(db)
    with pytest.raises(psycopg.Error) as info:
        process(db, event)
    assert info.value.sqlstate == "22023"
    assert table_contents(db) == before


@pytest.mark.parametrize("value", ["[]", '"evt_1"', "null", "42"])
def test_non_object_event_raises_22023(db, shape, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.Error) as info:
        db.execute("SELECT public.process_stripe_event(%s::jsonb)", (value,))
    assert info.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as info:
        db.execute("SELECT public.process_stripe_event(NULL)")
    assert info.value.sqlstate == "22023"


def test_retry_errors(db, shape) -> None:  # type: ignore[no-untyped-def]
    for bad in (None, "", "  "):
        with pytest.raises(psycopg.Error) as info:
            db.execute("SELECT public.retry_stripe_event(%s)", (bad,))
        assert info.value.sqlstate == "22023"
    with pytest.raises(psycopg.Error) as info:
        retry(db, "evt_never_received")
    assert info.value.sqlstate == "BD030"


def test_runbook_mark_unprocessed_then_retry_is_idempotent(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    events = w.new_subscription()
    deliver(db, events)
    before = table_contents(db, ["subscriptions", "credit_transactions", "credit_balances"])
    # The seed's runbook: UPDATE stripe_events SET processed = false, retry_count = 0 WHERE ...
    db.execute("UPDATE public.stripe_events SET processed = false, retry_count = 0 WHERE stripe_event_id = %s",
               (events[1]["id"],))
    again = retry(db, events[1]["id"])
    assert again["status"] == "processed" and again["detail"]["allocation"]["duplicate"] is True
    assert table_contents(db, ["subscriptions", "credit_transactions", "credit_balances"]) == before


def test_expanded_fields_are_read_too(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    sub = w.subscription(status="active")
    sub["customer"] = {"id": w.customer_id, "object": "customer"}
    r = process(db, w.event("customer.subscription.created", sub))
    assert r["status"] == "processed"
    assert world_state(db, w.user_id, w.customer_id)["subscriptions"][0]["stripe_customer_id"] == w.customer_id


def test_paused_and_resumed(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    deliver(db, w.new_subscription())
    w.tick(DAY)
    w.status = "paused"
    assert process(db, w.event("customer.subscription.paused", w.subscription()))["status"] == "processed"
    assert world_state(db, w.user_id, w.customer_id)["state"]["can_use_credits"] is False
    w.tick(DAY)
    w.status = "active"
    assert process(db, w.event("customer.subscription.resumed", w.subscription()))["status"] == "processed"
    assert world_state(db, w.user_id, w.customer_id)["state"]["status"] == "active"


def test_livemode_and_api_version_are_recorded(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = linked_world(db, shape)
    e = w.event("plan.created", {"id": "price_x", "object": "plan"})
    e["livemode"] = True
    process(db, e)
    row = event_row(db, e["id"])
    assert (row["livemode"], row["api_version"], row["object_id"]) == (True, shape, "price_x")
    assert int(row["event_created"].timestamp()) == e["created"]
    assert PRE_BASIL < BASIL  # the shapes differ by version


def test_jsonb_parameter_binding(db, shape) -> None:  # type: ignore[no-untyped-def]
    """The named query passes the body as text; Jsonb binding gives the same result."""
    from billingdb import db as billing_db

    w = linked_world(db, shape)
    e = w.event("plan.created", {"id": "price_y", "object": "plan"})
    import json

    r = billing_db.query(db, "process_stripe_event", {"event": json.dumps(e)})
    assert r["status"] == "ignored"
    assert db.execute("SELECT public.process_stripe_event(%s) AS r", (Jsonb(e),)).fetchone()["r"]["status"] \
        == "duplicate"


def test_payload_is_stored_uncompressed(db, shape) -> None:  # type: ignore[no-untyped-def]
    # Revision 0006: compressing a 3-10 kB event cost more than the rest of its INSERT.
    w = linked_world(db, shape)
    created, *_ = w.new_subscription()
    assert process(db, created)["status"] == "processed"
    row = db.execute(
        "SELECT pg_column_compression(e.payload) AS method, e.payload = %s::jsonb AS same, a.attstorage "
        "FROM public.stripe_events AS e, pg_attribute AS a "
        "WHERE e.stripe_event_id = %s AND a.attrelid = 'public.stripe_events'::regclass AND a.attname = 'payload'",
        (json.dumps(created), created["id"]),
    ).fetchone()
    assert row == {"method": None, "same": True, "attstorage": "e"}


def _toast_chunks(db: psycopg.Connection[Any]) -> int:
    """Rows of stripe_events' TOAST table (this transaction's included)."""
    toast = db.execute(
        "SELECT reltoastrelid::regclass::text AS toast FROM pg_class WHERE oid = 'public.stripe_events'::regclass"
    ).fetchone()["toast"]
    return int(db.execute(f"SELECT count(*) AS n FROM {toast}").fetchone()["n"])


def test_payload_up_to_a_page_is_stored_in_the_row(db, shape) -> None:  # type: ignore[no-untyped-def]
    # Revision 0007: toast_tuple_target = 8160 keeps a 2-8 kB event in its heap row
    # (the default target sent every event to the TOAST table in 2 kB chunks).
    w = linked_world(db, shape)
    created, *_ = w.new_subscription()
    assert len(json.dumps(created)) > 2500  # above the default target: would go out of line
    before = _toast_chunks(db)
    assert process(db, created)["status"] == "processed"
    assert _toast_chunks(db) == before
    reloptions = db.execute(
        "SELECT c.reloptions FROM pg_class AS c WHERE c.oid = 'public.stripe_events'::regclass"
    ).fetchone()["reloptions"]
    assert reloptions == ["toast_tuple_target=8160"]

    # Larger than a page: stored out of line, read back whole.
    big = w.event("plan.created", {"id": "price_big", "object": "plan", "metadata": {"notes": "x" * 20_000}})
    assert process(db, big)["status"] == "ignored"
    assert _toast_chunks(db) > before
    assert db.execute(
        "SELECT e.payload = %s::jsonb AS same FROM public.stripe_events AS e WHERE e.stripe_event_id = %s",
        (json.dumps(big), big["id"]),
    ).fetchone()["same"]
