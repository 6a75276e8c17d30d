"""A caller's idempotency key can never take a reference billingdb makes for itself.

Caller keys (use_credits_validated, grant_credits) are unique per user, in idempotency_key;
billingdb's own references (invoice:<id>, expiration:<id>, refund:<id>, hold:<id>, ...) are unique
in a column of their own, reference. Before, both shared one unique column and ids are sequential:
a caller granting with key refund:8 made the real refund of transaction 8 (another user's) fail
with BD012, and key hold:7 blocked another user's next reservation.
"""

from __future__ import annotations

from helpers import balance, call, customer, fund, subscribe


def _active(conn, user_id: str, credits: int) -> None:  # type: ignore[no-untyped-def]
    customer(conn, user_id)
    subscribe(conn, user_id, "active")
    fund(conn, user_id, credits)


def test_a_caller_key_named_like_a_refund_does_not_block_that_refund(conn) -> None:  # type: ignore[no-untyped-def]
    _active(conn, "alice", 10)
    _active(conn, "mallory", 10)
    usage = call(conn, "use_credits_validated", "alice", 3)
    squat = call(conn, "grant_credits", "mallory", 1, "squat", f"refund:{usage['transaction_id']}")
    assert squat["success"]
    refund = call(conn, "refund_credits", usage["transaction_id"], "generation failed")
    assert refund["success"] and not refund["duplicate"], refund
    assert balance(conn, "alice") == 10 and balance(conn, "mallory") == 11
    row = conn.execute(
        "SELECT reference, idempotency_key FROM public.credit_transactions WHERE id = %s",
        (refund["refund_transaction_id"],),
    ).fetchone()
    assert row == {"reference": f"refund:{usage['transaction_id']}", "idempotency_key": None}


def test_a_caller_key_named_like_a_hold_does_not_block_the_next_reservation(conn) -> None:  # type: ignore[no-untyped-def]
    _active(conn, "alice", 10)
    _active(conn, "mallory", 10)
    first = call(conn, "reserve_credits", "alice", 1)
    following = first["hold_id"] + 1
    for suffix in ("", ":release", ":usage"):
        used = call(conn, "use_credits_validated", "mallory", 1, "squat", None, f"hold:{following}{suffix}")
        assert used["success"], used
    hold = call(conn, "reserve_credits", "alice", 2)
    assert hold["hold_id"] == following and hold["status"] == "held", hold
    committed = call(conn, "commit_credit_hold", hold["hold_id"])
    assert committed["status"] == "committed", committed
    assert balance(conn, "alice") == 7 and balance(conn, "mallory") == 7


def test_a_caller_key_named_like_an_invoice_does_not_block_its_allocation(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "alice")
    subscribe(conn, "alice", "active")
    _active(conn, "mallory", 1)
    assert call(conn, "grant_credits", "mallory", 1, "squat", "invoice:in_1")["success"]
    allocated = call(conn, "add_subscription_credits", "cus_alice", "in_1", "sub_alice", 30, "renewal")
    assert allocated["success"] and not allocated["duplicate"], allocated
    assert balance(conn, "alice") == 30


def test_caller_keys_are_per_user(conn) -> None:  # type: ignore[no-untyped-def]
    _active(conn, "alice", 10)
    _active(conn, "bob", 10)
    a = call(conn, "use_credits_validated", "alice", 2, "story", None, "req-1")
    b = call(conn, "use_credits_validated", "bob", 2, "story", None, "req-1")
    assert a["success"] and b["success"] and not a["replayed"] and not b["replayed"]
    again = call(conn, "use_credits_validated", "alice", 2, "story", None, "req-1")
    assert again["replayed"] and again["transaction_id"] == a["transaction_id"]
    assert balance(conn, "alice") == 8 and balance(conn, "bob") == 8
