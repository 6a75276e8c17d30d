"""The credit ledger: use_credits_validated, add_subscription_credits, refund_credits, grant_credits, set_plan.

Every refusal and every invalid call leaves every billing table unchanged; the
autouse check in tests/conftest.py verifies balance = sum(amount) after each test.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from helpers import NOW, balance, call, contents, count, customer, fund, subscribe

from billingdb import errors


def _sqlstate(conn: psycopg.Connection[Any], function: str, *args: Any, **kwargs: Any) -> str | None:
    """Call and return the SQLSTATE it raised (None when it did not raise)."""
    try:
        call(conn, function, *args, **kwargs)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def _active_user(conn: psycopg.Connection[Any], user_id: str = "u1", credits: int = 0) -> str:
    customer(conn, user_id)
    subscribe(conn, user_id, "active")
    if credits:
        fund(conn, user_id, credits)
    return user_id


# --- use_credits_validated -----------------------------------------------------------------------


def test_use_credits_deducts_records_and_reports(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    r = call(conn, "use_credits_validated", "u1", 3, "story", psycopg.types.json.Jsonb({"story_id": "s1"}))
    assert r["success"] is True and r["code"] is None and r["replayed"] is False
    assert r["amount"] == 3 and r["balance"] == 7 and isinstance(r["message"], str)
    row = conn.execute(
        "SELECT * FROM public.credit_transactions WHERE id = %s", (r["transaction_id"],)
    ).fetchone()
    assert row["transaction_type"] == "usage" and row["amount"] == -3 and row["balance_after"] == 7
    assert row["description"] == "story" and row["metadata"] == {"story_id": "s1"}
    assert row["idempotency_key"] is None
    assert balance(conn, "u1") == 7


def test_use_credits_defaults(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=2)
    r = call(conn, "use_credits_validated", "u1", 2)
    assert r["success"] and r["balance"] == 0
    row = conn.execute("SELECT * FROM public.credit_transactions WHERE id = %s", (r["transaction_id"],)).fetchone()
    assert row["metadata"] == {} and row["description"]


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("no_subscription", "no_subscription"),
        ("unpaid", "subscription_inactive"),
        ("canceled_after_period", "period_ended"),
        ("insufficient", "insufficient_credits"),
    ],
)
def test_use_credits_refusals_change_nothing(conn, setup: str, code: str) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    if setup == "unpaid":
        subscribe(conn, "u1", "unpaid")
    elif setup == "canceled_after_period":
        subscribe(conn, "u1", "canceled", period_end=NOW - timedelta(days=1), canceled_at=NOW - timedelta(days=2))
    elif setup == "insufficient":
        subscribe(conn, "u1", "active")
    fund(conn, "u1", 5)
    before = contents(conn)
    r = call(conn, "use_credits_validated", "u1", 6 if setup == "insufficient" else 1, None, None, "key-1")
    assert r["success"] is False and r["code"] == code
    assert r["transaction_id"] is None and r["balance"] == 5 and r["replayed"] is False and r["message"]
    assert contents(conn) == before


def test_use_credits_without_balance_row_is_insufficient(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn)
    r = call(conn, "use_credits_validated", "u1", 1)
    assert r["success"] is False and r["code"] == "insufficient_credits" and r["balance"] == 0
    assert balance(conn, "u1") is None


# The spending rule (docs/design.md) for every status, and around the period end.
SPENDING = [
    # status, period end offset (days), cancel_at_period_end, expected refusal code
    ("incomplete", 30, False, "subscription_inactive"),
    ("incomplete_expired", 30, False, "subscription_inactive"),
    ("trialing", 30, False, None),
    ("active", 30, False, None),
    ("active", -1, False, None),  # renewal pending: still active until Stripe says otherwise
    ("past_due", 30, False, None),
    ("unpaid", 30, False, "subscription_inactive"),
    ("paused", 30, False, "subscription_inactive"),
    ("canceled", 30, False, None),  # canceled before the period end: may spend until it ends
    ("canceled", -1, False, "period_ended"),
    ("active", 30, True, None),  # cancel_at_period_end before the period end
    ("active", -1, True, "period_ended"),
    ("trialing", -1, True, "period_ended"),
    ("past_due", -1, True, "period_ended"),
    ("unpaid", 30, True, "subscription_inactive"),
]


@pytest.mark.parametrize(
    ("status", "days", "cancel", "code"),
    SPENDING,
    ids=[f"{s}-{'future' if d > 0 else 'ended'}{'-cancel_at_period_end' if c else ''}" for s, d, c, _ in SPENDING],
)
def test_spending_rule(conn, status: str, days: int, cancel: bool, code: str | None) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", status, period_end=NOW + timedelta(days=days), cancel_at_period_end=cancel)
    fund(conn, "u1", 5)
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["can_use_credits"] is (code is None) and state["reason"] == code
    r = call(conn, "use_credits_validated", "u1", 1)
    assert r["success"] is (code is None) and r["code"] == code
    assert balance(conn, "u1") == (4 if code is None else 5)


def test_canceled_without_period_end_may_not_spend(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    call(conn, "apply_subscription_change", "sub_1", "u1", None, "canceled", None, None, None, False, NOW)
    fund(conn, "u1", 5)
    assert call(conn, "use_credits_validated", "u1", 1)["code"] == "subscription_inactive"


@pytest.mark.parametrize(("grace", "code"), [("true", None), ("false", "subscription_inactive")])
def test_past_due_grace_is_a_setting(conn, grace: str, code: str | None) -> None:  # type: ignore[no-untyped-def]
    conn.execute("UPDATE billingdb.billing_settings SET value = %s WHERE name = 'past_due_can_spend'", (grace,))
    customer(conn, "u1")
    subscribe(conn, "u1", "past_due")
    fund(conn, "u1", 5)
    assert call(conn, "use_credits_validated", "u1", 1)["code"] == code


def test_spending_uses_the_best_subscription(conn) -> None:  # type: ignore[no-untyped-def]
    # An old canceled subscription and a new unpaid one do not hide an active one.
    customer(conn, "u1")
    subscribe(conn, "u1", "canceled", subscription_id="sub_old", period_end=NOW - timedelta(days=40))
    subscribe(conn, "u1", "active", subscription_id="sub_mid", period_end=NOW + timedelta(days=3))
    subscribe(conn, "u1", "unpaid", subscription_id="sub_new", period_end=NOW + timedelta(days=20))
    fund(conn, "u1", 5)
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["subscription_id"] == "sub_mid" and state["can_use_credits"] is True
    assert call(conn, "use_credits_validated", "u1", 1)["success"] is True


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((None, 1), "null user"),
        (("  ", 1), "blank user"),
        (("u1", None), "null amount"),
        (("u1", 0), "zero amount"),
        (("u1", -5), "negative amount"),
        (("u1", 1, None, psycopg.types.json.Jsonb([1, 2])), "metadata not an object"),
        (("u1", 1, None, None, " "), "blank key"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_use_credits_invalid_arguments(conn, args: tuple[Any, ...], why: str) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=5)
    before = contents(conn)
    assert _sqlstate(conn, "use_credits_validated", *args) == "22023", why
    assert contents(conn) == before


def test_use_credits_idempotency_key_replays_the_first_result(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    first = call(conn, "use_credits_validated", "u1", 4, "gen", None, "req-1")
    assert first["success"] and first["replayed"] is False and first["balance"] == 6
    before = contents(conn)
    again = call(conn, "use_credits_validated", "u1", 4, "gen", None, "req-1")
    assert again["success"] and again["replayed"] is True
    assert again["transaction_id"] == first["transaction_id"] and again["balance"] == 6
    assert contents(conn) == before
    assert count(conn, "credit_transactions", "transaction_type = 'usage'") == 1


# A key of another user is another key (keys are per user: tests/security/test_idempotency_namespaces.py).
@pytest.mark.parametrize("other", ["other amount", "other kind"])
def test_use_credits_key_reused_for_another_call_is_bd012(conn, other: str) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, "u1", credits=10)
    _active_user(conn, "u2", credits=10)
    if other == "other kind":
        call(conn, "grant_credits", "u1", 1, "bonus", "req-1")
    else:
        call(conn, "use_credits_validated", "u1", 4, None, None, "req-1")
    before = contents(conn)
    amount = 5 if other == "other amount" else 1
    state = _sqlstate(conn, "use_credits_validated", "u1", amount, None, None, "req-1")
    assert state == "BD012" and errors.SQLSTATES[state][0] is errors.IdempotencyConflict
    assert contents(conn) == before


def _threads(n: int, target: Any) -> list[Any]:
    """Run target(i) in n threads started together; return their results (exceptions as values)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_sixteen_spenders_one_balance_exactly_one_hundred_successes(conn, connect) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=100)
    conns = [connect() for _ in range(16)]

    def spend(i: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        while True:
            r = call(conns[i], "use_credits_validated", "u1", 1)
            if not r["success"]:
                seen[r["code"]] += 1
                return seen
            seen["success"] += 1

    results = _threads(16, spend)
    errors_seen = [r for r in results if not isinstance(r, Counter)]
    assert errors_seen == []
    total: Counter[str] = sum(results, Counter())
    assert total["success"] == 100
    assert total["insufficient_credits"] == 16 and set(total) == {"success", "insufficient_credits"}
    assert balance(conn, "u1") == 0
    assert count(conn, "credit_transactions", "transaction_type = 'usage'") == 100


def test_concurrent_calls_with_one_key_deduct_once(conn, connect) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    conns = [connect() for _ in range(8)]
    results = _threads(8, lambda i: call(conns[i], "use_credits_validated", "u1", 3, None, None, "same-key"))
    assert all(isinstance(r, dict) and r["success"] for r in results), results
    assert sorted(r["replayed"] for r in results) == [False] + [True] * 7
    assert len({r["transaction_id"] for r in results}) == 1
    assert balance(conn, "u1") == 7


# --- add_subscription_credits --------------------------------------------------------------------


def test_allocation_creates_balance_entry_log_and_is_found_by_invoice(conn) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    r = call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30, "Monthly credits")
    assert r["success"] is True and r["duplicate"] is False and r["user_id"] == "u1"
    assert r["credits"] == 30 and r["expired"] == 0 and r["balance"] == 30
    # The seed's runbook query, and it can use the expression index.
    rows = conn.execute("SELECT * FROM credit_transactions WHERE metadata->>'invoice_id' = 'in_1'").fetchall()
    assert [x["id"] for x in rows] == [r["transaction_id"]]
    tx = rows[0]
    assert tx["transaction_type"] == "allocation" and tx["reference"] == "invoice:in_1" and tx["idempotency_key"] is None
    assert tx["metadata"]["subscription_id"] == "sub_u1" and tx["metadata"]["customer_id"] == cus
    assert tx["description"] == "Monthly credits"
    log = conn.execute("SELECT * FROM billingdb.activity_log WHERE activity_type = 'credits_allocated'").fetchall()
    assert len(log) == 1 and log[0]["user_id"] == "u1" and log[0]["details"]["invoice_id"] == "in_1"
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT * FROM credit_transactions WHERE metadata->>'invoice_id' = 'in_1'"
        ).fetchall()
    assert "idx_credit_transactions_invoice_id" in " ".join(p["QUERY PLAN"] for p in plan)


def test_allocation_sets_the_new_balance_in_a_cached_row(conn) -> None:  # type: ignore[no-untyped-def]
    # v3 (revision 0006): the cached row takes the new balance in place; the subscription part,
    # cached_at and expires_at stay (an allocation changes no subscription).
    cus = customer(conn, "u1")
    subscribe(conn, "u1", "active")
    cached = call(conn, "get_user_subscription_state", "u1")
    row_before = conn.execute("SELECT * FROM public.subscription_cache WHERE user_id = 'u1'").fetchone()
    r = call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30)
    row = conn.execute("SELECT * FROM public.subscription_cache WHERE user_id = 'u1'").fetchone()
    assert row["credits_balance"] == r["balance"] == row["state"]["credits_balance"] == cached["credits_balance"] + 30
    assert (row["cached_at"], row["expires_at"]) == (row_before["cached_at"], row_before["expires_at"])
    assert {k: v for k, v in row["state"].items() if k != "credits_balance"} == {
        k: v for k, v in row_before["state"].items() if k != "credits_balance"
    }
    again = call(conn, "get_user_subscription_state", "u1")
    assert again["cached"] is True and again["credits_balance"] == r["balance"]


def test_allocation_without_a_cached_row_creates_none(conn) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    subscribe(conn, "u1", "active")
    call(conn, "clear_all_subscription_cache")
    r = call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30)
    assert count(conn, "subscription_cache") == 0
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["cached"] is False and state["credits_balance"] == r["balance"] == 30


def test_allocation_is_at_most_once_per_invoice(conn) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    first = call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30)
    before = contents(conn)
    again = call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30)
    assert again["duplicate"] is True and again["success"] is True
    assert again["transaction_id"] == first["transaction_id"] and again["credits"] == 30 and again["balance"] == 30
    assert contents(conn) == before


def test_concurrent_duplicate_invoices_allocate_once(conn, connect) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    conns = [connect() for _ in range(8)]
    results = _threads(8, lambda i: call(conns[i], "add_subscription_credits", cus, "in_1", "sub_u1", 30))
    assert all(isinstance(r, dict) for r in results), results
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 7
    assert balance(conn, "u1") == 30


def test_allocation_unknown_customer_is_bd001(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    before = contents(conn)
    state = _sqlstate(conn, "add_subscription_credits", "cus_nobody", "in_1", "sub_1", 30)
    assert state == "BD001" and errors.SQLSTATES[state][0] is errors.UnknownCustomer
    assert contents(conn) == before


@pytest.mark.parametrize(
    "args",
    [
        (None, "in_1", "sub_1", 30),
        ("cus_u1", None, "sub_1", 30),
        ("cus_u1", "in_1", None, 30),
        ("cus_u1", "bad", "sub_1", 30),
        ("cus_u1", "in_1", "bad", 30),
        ("cus_u1", "in_1", "sub_1", None),
        ("cus_u1", "in_1", "sub_1", 0),
        ("cus_u1", "in_1", "sub_1", -30),
    ],
)
def test_allocation_invalid_arguments(conn, args: tuple[Any, ...]) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    before = contents(conn)
    assert _sqlstate(conn, "add_subscription_credits", *args) == "22023"
    assert contents(conn) == before


def test_allocation_for_another_users_subscription_is_bd013(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    cus2 = customer(conn, "u2")
    subscribe(conn, "u1", "active", subscription_id="sub_a")
    before = contents(conn)
    assert _sqlstate(conn, "add_subscription_credits", cus2, "in_1", "sub_a", 30) == "BD013"
    assert contents(conn) == before


def _reset_plan_user(conn: psycopg.Connection[Any], reset: bool = True) -> str:
    call(conn, "set_plan", "price_individual", "Individual", 30, reset)
    cus = customer(conn, "u1")
    subscribe(conn, "u1", "active", subscription_id="sub_1", price_id="price_individual")
    return cus


def test_reset_plan_expires_the_unused_credits_of_the_ended_period(conn) -> None:  # type: ignore[no-untyped-def]
    cus = _reset_plan_user(conn)
    first = call(conn, "add_subscription_credits", cus, "in_1", "sub_1", 30)
    assert first["expired"] == 0 and first["expiration_transaction_id"] is None
    assert call(conn, "use_credits_validated", "u1", 10)["success"]
    fund(conn, "u1", 50)  # granted credits do not expire
    # balance 70: 20 unused of the period's 30, and the 50 granted.
    second = call(conn, "add_subscription_credits", cus, "in_2", "sub_1", 30)
    assert second["expired"] == 20 and second["balance"] == 80
    exp = conn.execute(
        "SELECT * FROM credit_transactions WHERE id = %s", (second["expiration_transaction_id"],)
    ).fetchone()
    assert exp["transaction_type"] == "expiration" and exp["amount"] == -20 and exp["balance_after"] == 50
    assert exp["metadata"]["expired_allocation_id"] == first["transaction_id"]
    assert exp["metadata"]["invoice_id"] == "in_2"
    # A duplicate of the second invoice reports the same expiry and changes nothing.
    before = contents(conn)
    dup = call(conn, "add_subscription_credits", cus, "in_2", "sub_1", 30)
    assert dup["duplicate"] is True and dup["expired"] == 20 and contents(conn) == before


def test_reset_counts_refunded_usage_as_unused(conn) -> None:  # type: ignore[no-untyped-def]
    cus = _reset_plan_user(conn)
    call(conn, "add_subscription_credits", cus, "in_1", "sub_1", 30)
    used = call(conn, "use_credits_validated", "u1", 10)
    call(conn, "use_credits_validated", "u1", 5)
    call(conn, "refund_credits", used["transaction_id"], "generation failed")
    second = call(conn, "add_subscription_credits", cus, "in_2", "sub_1", 30)
    assert second["expired"] == 25 and second["balance"] == 30


def test_reset_never_expires_more_than_the_balance(conn) -> None:  # type: ignore[no-untyped-def]
    cus = _reset_plan_user(conn)
    call(conn, "add_subscription_credits", cus, "in_1", "sub_1", 30)
    call(conn, "grant_credits", "u1", -25, "correction")
    second = call(conn, "add_subscription_credits", cus, "in_2", "sub_1", 30)
    assert second["expired"] == 5 and second["balance"] == 30


def test_everything_used_expires_nothing(conn) -> None:  # type: ignore[no-untyped-def]
    cus = _reset_plan_user(conn)
    call(conn, "add_subscription_credits", cus, "in_1", "sub_1", 30)
    call(conn, "use_credits_validated", "u1", 30)
    second = call(conn, "add_subscription_credits", cus, "in_2", "sub_1", 30)
    assert second["expired"] == 0 and second["expiration_transaction_id"] is None
    assert count(conn, "credit_transactions", "transaction_type = 'expiration'") == 0


def test_rollover_plan_keeps_unused_credits(conn) -> None:  # type: ignore[no-untyped-def]
    cus = _reset_plan_user(conn, reset=False)
    call(conn, "add_subscription_credits", cus, "in_1", "sub_1", 30)
    second = call(conn, "add_subscription_credits", cus, "in_2", "sub_1", 30)
    assert second["expired"] == 0 and second["balance"] == 60


def test_unknown_subscription_allocates_without_reset(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "set_plan", "price_individual", "Individual", 30, True)
    cus = customer(conn, "u1")
    call(conn, "add_subscription_credits", cus, "in_1", "sub_later", 30)
    second = call(conn, "add_subscription_credits", cus, "in_2", "sub_later", 30)
    assert second["expired"] == 0 and second["balance"] == 60


# --- refund_credits ------------------------------------------------------------------------------


def test_refund_gives_back_a_usage_once(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    used = call(conn, "use_credits_validated", "u1", 4)
    r = call(conn, "refund_credits", used["transaction_id"], "generation failed")
    assert r["success"] is True and r["duplicate"] is False and r["amount"] == 4 and r["balance"] == 10
    row = conn.execute("SELECT * FROM credit_transactions WHERE id = %s", (r["refund_transaction_id"],)).fetchone()
    assert row["transaction_type"] == "refund" and row["refund_of"] == used["transaction_id"]
    assert row["description"] == "generation failed"
    before = contents(conn)
    again = call(conn, "refund_credits", used["transaction_id"], "again")
    assert again["duplicate"] is True and again["refund_transaction_id"] == r["refund_transaction_id"]
    assert again["amount"] == 4 and again["balance"] == 10
    assert contents(conn) == before


def test_refund_works_after_the_subscription_ended(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    used = call(conn, "use_credits_validated", "u1", 4)
    subscribe(conn, "u1", "canceled", period_end=NOW - timedelta(days=1))
    assert call(conn, "refund_credits", used["transaction_id"], None)["balance"] == 10


def test_concurrent_refunds_refund_once(conn, connect) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    used = call(conn, "use_credits_validated", "u1", 4)
    conns = [connect() for _ in range(8)]
    results = _threads(8, lambda i: call(conns[i], "refund_credits", used["transaction_id"], "x"))
    assert all(isinstance(r, dict) for r in results), results
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * 7
    assert balance(conn, "u1") == 10


@pytest.mark.parametrize(
    ("kind", "state"), [("unknown", "BD010"), ("allocation", "BD011"), ("adjustment", "BD011"), ("null", "22023")]
)
def test_refund_refusals(conn, kind: str, state: str) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    alloc = call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30)
    grant = fund(conn, "u1", 5)
    target = {"unknown": 999_999, "allocation": alloc["transaction_id"], "adjustment": grant["transaction_id"],
              "null": None}[kind]
    before = contents(conn)
    got = _sqlstate(conn, "refund_credits", target, "x")
    assert got == state and errors.SQLSTATES[got][0].sqlstate == state
    assert contents(conn) == before


def test_a_refund_cannot_be_refunded(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    used = call(conn, "use_credits_validated", "u1", 4)
    refund = call(conn, "refund_credits", used["transaction_id"], "x")
    assert _sqlstate(conn, "refund_credits", refund["refund_transaction_id"], "x") == "BD011"


# --- grant_credits -------------------------------------------------------------------------------


def test_grant_positive_and_negative(conn) -> None:  # type: ignore[no-untyped-def]
    r = call(conn, "grant_credits", "u9", 10, "welcome bonus")
    assert r["success"] and r["code"] is None and r["balance"] == 10 and r["replayed"] is False
    row = conn.execute("SELECT * FROM credit_transactions WHERE id = %s", (r["transaction_id"],)).fetchone()
    assert row["transaction_type"] == "adjustment" and row["description"] == "welcome bonus"
    r = call(conn, "grant_credits", "u9", -4, "correction")
    assert r["success"] and r["balance"] == 6 and r["amount"] == -4
    assert count(conn, "activity_log", "activity_type = 'credits_granted'") == 2


def test_grant_negative_beyond_balance_is_refused(conn) -> None:  # type: ignore[no-untyped-def]
    fund(conn, "u1", 3)
    before = contents(conn)
    r = call(conn, "grant_credits", "u1", -4, "too much")
    assert r["success"] is False and r["code"] == "insufficient_credits" and r["balance"] == 3
    assert r["transaction_id"] is None
    assert contents(conn) == before
    r = call(conn, "grant_credits", "nobody", -1, "no balance row")
    assert r["success"] is False and r["code"] == "insufficient_credits" and r["balance"] == 0
    assert contents(conn) == before


def test_grant_idempotency(conn) -> None:  # type: ignore[no-untyped-def]
    first = call(conn, "grant_credits", "u1", 10, "bonus", "grant-1")
    before = contents(conn)
    again = call(conn, "grant_credits", "u1", 10, "bonus", "grant-1")
    assert again["replayed"] is True and again["transaction_id"] == first["transaction_id"]
    assert again["balance"] == 10
    assert contents(conn) == before
    assert _sqlstate(conn, "grant_credits", "u1", 11, "bonus", "grant-1") == "BD012"
    assert contents(conn) == before


@pytest.mark.parametrize(
    "args", [(None, 5, "r"), ("", 5, "r"), ("u1", None, "r"), ("u1", 0, "r"), ("u1", 5, "r", "  ")]
)
def test_grant_invalid_arguments(conn, args: tuple[Any, ...]) -> None:  # type: ignore[no-untyped-def]
    fund(conn, "u1", 3)
    before = contents(conn)
    assert _sqlstate(conn, "grant_credits", *args) == "22023"
    assert contents(conn) == before


# --- the ledger is append-only -------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.credit_transactions SET amount = 100",
        "DELETE FROM public.credit_transactions",
        "TRUNCATE public.credit_transactions",
    ],
)
def test_ledger_is_append_only(conn, statement: str) -> None:  # type: ignore[no-untyped-def]
    fund(conn, "u1", 3)
    before = contents(conn)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    assert info.value.sqlstate == "BD014"
    assert contents(conn) == before


def test_balance_cannot_go_negative_even_directly(conn) -> None:  # type: ignore[no-untyped-def]
    fund(conn, "u1", 3)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE billingdb.credit_balances SET balance = -1 WHERE user_id = 'u1'")


# --- set_plan ------------------------------------------------------------------------------------


def test_set_plan_creates_then_updates(conn) -> None:  # type: ignore[no-untyped-def]
    r = call(conn, "set_plan", "price_team", "Team", 200, False, 2999, "USD", "Month")
    assert r["created"] is True and r["price_id"] == "price_team" and r["name"] == "Team"
    assert r["credits_per_period"] == 200 and r["amount_cents"] == 2999
    assert r["currency"] == "usd" and r["billing_interval"] == "month" and r["active"] is True
    assert r["reset_each_period"] is False and r["metadata"] == {}
    r = call(conn, "set_plan", "price_team", "Team Plan", 250, reset_each_period=True, active=False)
    assert r["created"] is False and r["name"] == "Team Plan" and r["credits_per_period"] == 250
    assert r["reset_each_period"] is True and r["active"] is False and r["amount_cents"] is None
    assert count(conn, "plans") == 1


def test_the_seeds_three_plans(conn) -> None:  # type: ignore[no-untyped-def]
    for price, name, credits in [("price_ind", "Individual", 30), ("price_team", "Team", 200),
                                 ("price_custom", "Custom", 500)]:
        assert call(conn, "set_plan", price, name, credits)["created"] is True
    assert count(conn, "plans", "active") == 3


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((None, "X", 1), {}),
        ((" ", "X", 1), {}),
        (("price_x", None, 1), {}),
        (("price_x", "", 1), {}),
        (("price_x", "X", None), {}),
        (("price_x", "X", 0), {}),
        (("price_x", "X", 1), {"amount_cents": -1}),
        (("price_x", "X", 1), {"currency": "dollars"}),
        (("price_x", "X", 1), {"billing_interval": "fortnight"}),
    ],
)
def test_set_plan_invalid_arguments(conn, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    call(conn, "set_plan", "price_x", "Existing", 5)
    before = contents(conn)
    assert _sqlstate(conn, "set_plan", *args, **kwargs) == "22023"
    assert contents(conn) == before


# --- privileges ----------------------------------------------------------------------------------


PUBLIC_FUNCTIONS = [
    ("get_user_subscription_state", "('u1')"),
    ("use_credits_validated", "('u1', 1)"),
    ("grant_credits", "('u1', 1, 'r')"),
    ("get_subscription_cache_status", "()"),
]


@pytest.mark.parametrize(("function", "args"), PUBLIC_FUNCTIONS, ids=[f for f, _ in PUBLIC_FUNCTIONS])
def test_only_service_role_may_call(conn, function: str, args: str) -> None:  # type: ignore[no-untyped-def]
    for role in ("anon", "authenticated"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(f"SET LOCAL ROLE {role}")
            conn.execute(f"SELECT public.{function}{args}")
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        conn.execute(f"SELECT public.{function}{args}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        conn.execute("UPDATE billingdb.credit_balances SET balance = 1")


#: Helpers that touch no table: one SQL expression, SECURITY INVOKER, no SET clause, so that the
#: planner inlines them into their callers; definer rights would give them nothing and would stop
#: the inlining. Each with what its inlined body shows in a plan.
INLINED_HELPERS = {
    "_stripe_id(jsonb)": "jsonb_typeof(",
    "_stripe_event_refs(jsonb)": "jsonb_build_object(",
    "_lock_user(text)": "pg_advisory_xact_lock(1111769685",
    "_lock_stripe_customer(text)": "pg_advisory_xact_lock(1111774019",
    "_lock_stripe_event(text)": "pg_advisory_xact_lock(1111774021",
}

#: A hot table's row rules, the one CHECK of that table: IMMUTABLE PL/pgSQL that reads only its
#: arguments, so neither SECURITY DEFINER nor SET search_path.
ROW_RULES = {
    "_valid_credit_transaction(text,integer,integer,bigint,jsonb,text)",
    "_valid_credit_hold(text,integer,text,text,jsonb,jsonb,timestamp with time zone,timestamp with time zone,"
    "timestamp with time zone,bigint,bigint)",
    "_valid_stripe_event(text,text,integer)",
    "_valid_subscription(text,text,text,text,timestamp with time zone,timestamp with time zone)",
}


#: The input limits (05_input.sql): IMMUTABLE PL/pgSQL that reads only its arguments and raises 22023.
INPUT_CHECKS = {
    "_check_text(text,text,text,integer)",
    "_check_stripe_id(text,text,text,text)",
    "_check_metadata(text,text,jsonb)",
    "_refusal_message(jsonb)",  # the message of a refused spend, from the state (pure like the checks)
    "_stripe_time(jsonb,text)",  # a Stripe time from a payload, or 22023 naming the field
}


#: Internal helpers: called only by SECURITY DEFINER entry points and triggers, which already run as
#: the owner with search_path pg_catalog, pg_temp, so SECURITY INVOKER without SET (a definer call
#: switches user and search path out and back).
INTERNAL_INVOKERS = {
    "_append_credit_transaction(text,integer,text,text,jsonb,text,text,bigint)",
    "_apply_pending_stripe_events(text)",
    "_apply_stripe_checkout_completed(jsonb)",
    "_apply_stripe_invoice_failed(jsonb,jsonb)",
    "_apply_stripe_invoice_paid(jsonb,jsonb)",
    "_apply_stripe_subscription_event(jsonb)",
    "_attempt_stripe_event(bigint)",
    "_billing_setting(text)",
    "_compute_subscription_state(text)",
    "_credit_hold_json(billingdb.credit_holds)",
    "_dispatch_stripe_event(jsonb,jsonb)",
    "_release_credit_hold(bigint,text,text)",
    "_spending_refusal(text,boolean,timestamp with time zone)",
    "_store_cached_balance(text,integer)",
    "_store_subscription_cache(text,jsonb)",
    "_stripe_invoice_credits(jsonb)",
    "_stripe_subscription_state(jsonb)",
    "_check_sync_arguments(text,timestamp with time zone,boolean)",  # the sync_stripe_* arguments (now())
    "_stripe_event_sync_running_here()",  # whether this session holds the Events API sync's lock (pg_locks)
    "_try_lock_user(text)",
    "_stripe_user_id(jsonb,text)",
    "_apply_stripe_charge_event(jsonb)",
    "_claw_back_credits(bigint,text,text,integer)",
    "_reinstate_credits(bigint,text)",
    # Called by `billingdb db downgrade` as the owner (the plan's row counts), not by an entry point.
    "_row_counts(text[])",
}

SAFE_PATH = ["search_path=pg_catalog, pg_temp"]


def test_every_function_is_locked_down(conn) -> None:  # type: ignore[no-untyped-def]
    rows = conn.execute(
        """
        SELECT n.nspname AS schema, p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS f,
               p.prosecdef, p.proconfig, p.provolatile, p.prorettype = 'trigger'::regtype AS is_trigger,
               has_function_privilege('anon', p.oid, 'EXECUTE') AS anon,
               has_function_privilege('authenticated', p.oid, 'EXECUTE') AS authenticated,
               has_function_privilege('service_role', p.oid, 'EXECUTE') AS service_role,
               obj_description(p.oid, 'pg_proc') AS comment
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('public', 'billingdb')
        """
    ).fetchall()
    assert len(rows) >= 50
    helpers = {r["f"].replace(", ", ",") for r in rows if r["schema"] == "billingdb"}
    assert INTERNAL_INVOKERS | ROW_RULES | INPUT_CHECKS | set(INLINED_HELPERS) <= helpers
    for r in rows:
        f = r["f"].replace(", ", ",")
        if r["schema"] == "public":
            # Entry points: definer rights, a pinned search path, callable by service_role only.
            assert not f.startswith("_"), f
            assert r["prosecdef"] and r["proconfig"] == SAFE_PATH, f
            assert r["service_role"], f
        elif f in INLINED_HELPERS:
            assert not r["prosecdef"] and r["proconfig"] is None, f
        elif f in ROW_RULES or f in INPUT_CHECKS:
            assert not r["prosecdef"] and r["proconfig"] is None and r["provolatile"] == "i", f
        elif f in INTERNAL_INVOKERS:
            assert not r["prosecdef"] and r["proconfig"] is None, f
        else:
            # Trigger functions run for whoever writes the table: definer rights, a pinned path.
            assert r["is_trigger"], f"{f}: a new helper must be classified here"
            assert r["prosecdef"] and r["proconfig"] == SAFE_PATH, f
        if r["schema"] == "billingdb":
            assert not r["service_role"], f
        assert not r["anon"] and not r["authenticated"], f
        assert r["comment"], f


def test_internal_helpers_lend_no_privilege(conn) -> None:  # type: ignore[no-untyped-def]
    # Through an entry point the helpers write the ledger as its owner; service_role cannot reach
    # them at all (no USAGE on the private schema, no EXECUTE).
    _active_user(conn, "u1", credits=5)
    before = contents(conn)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema billingdb"), conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        conn.execute("SELECT billingdb._append_credit_transaction('u1', 1000, 'adjustment', 'free', '{}', 'k-free', null, null)")
    assert contents(conn) == before
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        conn.execute("SELECT public.grant_credits('u1', 7, 'goodwill')")
    assert balance(conn, "u1") == 12


@pytest.mark.parametrize("helper", sorted(INLINED_HELPERS))
def test_inlined_helpers_are_inlined(conn, helper: str) -> None:  # type: ignore[no-untyped-def]
    name, arg_type = helper.removesuffix(")").split("(")
    arg = "e.payload" if arg_type == "jsonb" else "e.stripe_event_id"
    lines = conn.execute(f"EXPLAIN (VERBOSE) SELECT billingdb.{name}({arg}) FROM public.stripe_events AS e").fetchall()
    plan = "\n".join(next(iter(r.values())) for r in lines)
    assert INLINED_HELPERS[helper] in plan and name not in plan, plan
