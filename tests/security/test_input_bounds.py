"""Bounded, clear input over SQL: every over-long id, key or text, every oversized or over-deep
metadata object, every amount a balance cannot hold is a 22023 naming the argument, and no row
changes. (Limits: sql/baseline/05_input.sql.)"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from helpers import NOW, balance, call, contents, customer, fund, subscribe
from psycopg.types.json import Jsonb

LONG = "u" * 256


def _nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        doc = {"a": doc}
    return doc


CASES: dict[str, tuple[str, list[Any], str]] = {
    # name: (function, arguments, what the message names)
    "state user_id": ("get_user_subscription_state", [LONG], "user_id is too long"),
    "usage user_id": ("use_credits_validated", [LONG, 1], "user_id is too long"),
    "usage key": ("use_credits_validated", ["u1", 1, None, None, "k" * 256], "idempotency_key is too long"),
    "usage description": ("use_credits_validated", ["u1", 1, "d" * 1001], "description is too long"),
    "usage metadata size": ("use_credits_validated", ["u1", 1, None, Jsonb({"x": "y" * 17000})], "too large"),
    "usage metadata depth": ("use_credits_validated", ["u1", 1, None, Jsonb(_nested(11))], "nested too deeply"),
    "grant reason": ("grant_credits", ["u1", 1, "r" * 1001], "reason is too long"),
    "grant key": ("grant_credits", ["u1", 1, "r", "k" * 256], "idempotency_key is too long"),
    "hold metadata depth": ("reserve_credits", ["u1", 1, None, None, None, Jsonb(_nested(12))], "nested too deeply"),
    "hold description": ("reserve_credits", ["u1", 1, None, None, "d" * 1001], "description is too long"),
    "customer user_id": ("get_or_create_stripe_customer", [LONG, None], "user_id is too long"),
    "customer email": ("get_or_create_stripe_customer", ["u9", "a" * 320 + "@example.com"], "email is too long"),
    "link bare prefix": ("link_stripe_customer", ["u9", "cus_"], "must be a Stripe id cus_<id>"),
    "link long id": ("link_stripe_customer", ["u9", "cus_" + "x" * 260], "must be a Stripe id cus_<id>"),
    "allocation invoice": ("add_subscription_credits", ["cus_u1", "in_", "sub_u1", 5], "invoice_id must be"),
    "allocation metadata": ("add_subscription_credits", ["cus_u1", "in_1", "sub_u1", 5, None, Jsonb(_nested(11))],
                            "nested too deeply"),
    "plan name": ("set_plan", ["price_long", "n" * 201, 5], "name is too long"),
    "subscription id": ("apply_subscription_change", ["sub_", "u1", None, "active", None, None, None, False, None, None,
                                                     None], "subscription_id must be"),
    "retry event id": ("retry_stripe_event", ["evt_" + "x" * 300], "event_id is too long"),
    "synced invoice id": ("sync_stripe_invoice", [Jsonb({"id": "in_" + "x" * 300, "object": "invoice",
                                                         "status": "paid"}), NOW, True], "invoice.id must be"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_over_the_limit_is_22023_and_changes_nothing(conn, case: str) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 10)
    function, args, named = CASES[case]
    before = contents(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        call(conn, function, *args)
    assert info.value.sqlstate == "22023"
    assert function in str(info.value) and named in str(info.value), str(info.value)
    assert contents(conn) == before


def test_nesting_and_size_at_the_limit_pass(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 10)
    used = call(conn, "use_credits_validated", "u1", 1, "d" * 1000, Jsonb(_nested(10)), "k" * 255)
    assert used["success"], used
    assert call(conn, "get_user_subscription_state", "u" * 255)["can_use_credits"] is False


def test_a_balance_beyond_an_integer_is_22023_not_22003(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    fund(conn, "u1", 2_000_000_000)
    before = contents(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        call(conn, "grant_credits", "u1", 2_000_000_000, "again")
    assert "would exceed 2147483647" in str(info.value) and "balance=2000000000" in str(info.value)
    assert contents(conn) == before and balance(conn, "u1") == 2_000_000_000


def _event(event_id: str, obj: dict[str, Any], event_type: str = "invoice.paid") -> Jsonb:
    return Jsonb({"id": event_id, "object": "event", "type": event_type, "created": 1_800_000_000,
                  "api_version": "2024-06-20", "data": {"object": obj}})


@pytest.mark.parametrize(
    ("event_id", "obj"),
    [
        ("evt_" + "x" * 300, {"id": "in_1", "customer": "cus_u1"}),
        ("evt_" + "x" * 3000, {"id": "in_1", "customer": "cus_u1"}),
        ("evt_long_customer", {"id": "in_1", "customer": "cus_" + "x" * 3000}),
        ("evt_long_object", {"id": "in_" + "x" * 300, "customer": "cus_u1"}),
    ],
    ids=["event id 300", "event id 3000 (beyond the index)", "customer id", "object id"],
)
def test_an_event_with_an_id_too_long_is_22023_and_writes_nothing(conn, event_id, obj) -> None:  # type: ignore[no-untyped-def]
    before = conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        call(conn, "process_stripe_event", _event(event_id, obj))
    assert "at most 255" in str(info.value) or "longer than 255" in str(info.value)
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone() == before


def test_metadata_credits_above_the_cap_fail_the_event_with_a_reason(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active", price_id="price_unknown")
    invoice = {"id": "in_big", "object": "invoice", "customer": "cus_u1", "subscription": "sub_u1",
               "billing_reason": "subscription_cycle",
               "lines": {"data": [{"price": {"id": "price_unknown", "metadata": {"credits": "5000000"}}}]}}
    result = call(conn, "process_stripe_event", _event("evt_big_credits", invoice))
    assert result["status"] == "failed", result
    row = conn.execute("SELECT status, error FROM public.stripe_events WHERE stripe_event_id = 'evt_big_credits'").fetchone()
    assert row["status"] == "failed" and "above 1000000" in row["error"], row
    assert balance(conn, "u1") is None


def test_reconcile_names_an_allocation_above_its_plan(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "set_plan", "price_small", "Small", 30)
    customer(conn, "u1")
    subscribe(conn, "u1", "active", price_id="price_small")
    call(conn, "add_subscription_credits", "cus_u1", "in_1", "sub_u1", 30, None, Jsonb({"price_id": "price_small"}))
    clean = {r["user_id"]: r["findings"] for r in conn.execute("SELECT * FROM public.reconcile_credits()")}
    assert clean == {"u1": []}
    call(conn, "add_subscription_credits", "cus_u1", "in_2", "sub_u1", 500, None, Jsonb({"price_id": "price_small"}))
    found = {r["user_id"]: r["findings"] for r in conn.execute("SELECT * FROM public.reconcile_credits()")}
    assert found == {"u1": ["allocation_above_plan"]}


def test_an_empty_item_list_keeps_the_stored_period_and_price(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    call(conn, "set_plan", "price_small", "Small", 30)
    start, end = 1_800_000_000, 1_802_592_000
    created = {"id": "sub_u1", "object": "subscription", "customer": "cus_u1", "status": "active",
               "items": {"data": [{"price": {"id": "price_small"}, "current_period_start": start,
                                   "current_period_end": end}]}}
    assert call(conn, "process_stripe_event", _event("evt_e1", created, "customer.subscription.created"))["status"] == "processed"
    before = conn.execute(
        "SELECT price_id, current_period_start, current_period_end FROM billingdb.subscriptions"
    ).fetchone()
    emptied = {**created, "cancel_at_period_end": True, "items": {"object": "list", "data": []}}
    result = call(conn, "process_stripe_event",
                  Jsonb({**_event("evt_e2", emptied, "customer.subscription.updated").obj, "created": 1_800_000_100}))
    assert result["status"] == "processed", result
    after = conn.execute(
        "SELECT price_id, current_period_start, current_period_end, cancel_at_period_end FROM billingdb.subscriptions"
    ).fetchone()
    assert after["cancel_at_period_end"] is True
    assert (after["price_id"], after["current_period_start"], after["current_period_end"]) == (
        before["price_id"], before["current_period_start"], before["current_period_end"]
    )
    assert before["current_period_end"] is not None and before["price_id"] == "price_small"
