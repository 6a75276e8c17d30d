"""Credit holds in SQL: reserve_credits, commit_credit_hold, release_credit_hold, release_expired_credit_holds.

Held credits leave the spendable balance (a 'hold' ledger entry); a commit spends
them (a 'release' and a 'usage' entry), a release or the expiry sweep gives them
back (a 'release' entry). Every refusal and invalid call leaves every billing
table and credit_holds unchanged; the autouse checks in tests/conftest.py verify
balance = sum(amount) and the holds' own invariant after each test.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from helpers import NOW, balance, call, contents, count, customer, fund, subscribe
from psycopg.types.json import Jsonb

TTL = timedelta(minutes=5)


def _sqlstate(conn: psycopg.Connection[Any], function: str, *args: Any, **kwargs: Any) -> str | None:
    try:
        call(conn, function, *args, **kwargs)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def _everything(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every billing table and credit_holds, as sorted text."""
    out = contents(conn)
    out["credit_holds"] = [r["row"] for r in conn.execute(
        "SELECT h::text AS row FROM billingdb.credit_holds AS h ORDER BY 1"
    )]
    return out


def _active_user(conn: psycopg.Connection[Any], user_id: str = "u1", credits: int = 0) -> str:
    customer(conn, user_id)
    subscribe(conn, user_id, "active")
    if credits:
        fund(conn, user_id, credits)
    return user_id


def _reserve(conn: psycopg.Connection[Any], user_id: str = "u1", amount: int = 3, ttl: timedelta = TTL,
             key: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return call(conn, "reserve_credits", user_id, amount, ttl, key, **kwargs)


def _hold(conn: psycopg.Connection[Any], hold_id: int) -> dict[str, Any]:
    return conn.execute("SELECT * FROM billingdb.credit_holds WHERE hold_id = %s", (hold_id,)).fetchone()


def _entries(conn: psycopg.Connection[Any], user_id: str = "u1") -> list[tuple[str, int, int]]:
    return [(r["transaction_type"], r["amount"], r["balance_after"]) for r in conn.execute(
        "SELECT * FROM public.credit_transactions WHERE user_id = %s ORDER BY id", (user_id,)
    )]


def _threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # collected, asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# --- reserve ---------------------------------------------------------------------------------------


def test_reserve_takes_credits_out_of_the_balance(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    r = _reserve(conn, amount=3, description="story", metadata=Jsonb({"story_id": "s1"}))
    assert r["success"] is True and r["code"] is None and r["replayed"] is False
    assert r["status"] == "held" and r["amount"] == 3 and r["balance"] == 7 and r["user_id"] == "u1"
    assert r["result"] is None and r["settled_at"] is None and r["release_transaction_id"] is None
    hold = _hold(conn, r["hold_id"])
    assert hold["status"] == "held" and hold["description"] == "story"
    assert hold["metadata"] == {"story_id": "s1"}
    assert timedelta(minutes=4) < hold["expires_at"] - hold["created_at"] <= TTL
    entry = conn.execute(
        "SELECT * FROM public.credit_transactions WHERE id = %s", (hold["hold_transaction_id"],)
    ).fetchone()
    assert entry["transaction_type"] == "hold" and entry["amount"] == -3 and entry["balance_after"] == 7
    assert entry["reference"] == f"hold:{r['hold_id']}"
    assert entry["metadata"] == {"story_id": "s1", "hold_id": r["hold_id"]}
    assert balance(conn, "u1") == 7


def test_held_credits_are_not_spendable(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=5)
    held = _reserve(conn, amount=4)
    assert held["success"]
    used = call(conn, "use_credits_validated", "u1", 2)
    assert used["success"] is False and used["code"] == "insufficient_credits" and used["balance"] == 1
    again = _reserve(conn, amount=2)
    assert again["success"] is False and again["code"] == "insufficient_credits" and again["balance"] == 1
    assert call(conn, "grant_credits", "u1", -2, "too much")["code"] == "insufficient_credits"
    # The state shows the spendable balance (the cache was refreshed by the hold).
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["credits_balance"] == 1 and state["cached"] is True


def test_reserve_defaults(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=2)
    r = call(conn, "reserve_credits", "u1", 2)
    assert r["success"] and r["idempotency_key"] is None and r["description"] == "Credit hold"
    hold = _hold(conn, r["hold_id"])
    assert timedelta(minutes=4) < hold["expires_at"] - hold["created_at"] <= timedelta(minutes=5)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (None, "no_subscription"),
        ("unpaid", "subscription_inactive"),
        ("incomplete", "subscription_inactive"),
        ("paused", "subscription_inactive"),
    ],
)

def test_reserve_refused_by_state_changes_nothing(conn, status, code) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    if status:
        subscribe(conn, "u1", status)
    fund(conn, "u1", 10)
    before = _everything(conn)
    r = _reserve(conn, key="k1")
    assert r["success"] is False and r["code"] == code and r["hold_id"] is None and r["balance"] == 10
    assert _everything(conn) == before
    # A refused key leaves no trace: the retry is evaluated anew.
    subscribe(conn, "u1", "active", subscription_id="sub_u1_new")
    assert _reserve(conn, key="k1")["success"] is True


def test_reserve_refused_after_period_end(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "canceled", period_end=NOW - timedelta(days=1), canceled_at=NOW - timedelta(days=2))
    fund(conn, "u1", 10)
    before = _everything(conn)
    r = _reserve(conn)
    assert r["success"] is False and r["code"] == "period_ended"
    assert _everything(conn) == before


def test_reserve_insufficient_changes_nothing(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=2)
    before = _everything(conn)
    r = _reserve(conn, amount=3, key="k")
    assert r["success"] is False and r["code"] == "insufficient_credits" and r["balance"] == 2
    assert "balance 2" in r["message"] and r["hold_id"] is None
    assert _everything(conn) == before
    # A user without any balance row.
    _active_user(conn, "u2")
    before = _everything(conn)
    assert _reserve(conn, "u2", 1)["code"] == "insufficient_credits"
    assert _everything(conn) == before


BAD_RESERVE = [
    pytest.param((None, 1, TTL, None), id="user null"),
    pytest.param(("  ", 1, TTL, None), id="user blank"),
    pytest.param(("u1", 0, TTL, None), id="amount 0"),
    pytest.param(("u1", -2, TTL, None), id="amount negative"),
    pytest.param(("u1", None, TTL, None), id="amount null"),
    pytest.param(("u1", 1, None, None), id="ttl null"),
    pytest.param(("u1", 1, timedelta(0), None), id="ttl 0"),
    pytest.param(("u1", 1, timedelta(seconds=-5), None), id="ttl negative"),
    pytest.param(("u1", 1, timedelta(days=1, seconds=1), None), id="ttl over a day"),
    pytest.param(("u1", 1, TTL, " "), id="key blank"),
]


@pytest.mark.parametrize("args", BAD_RESERVE)
def test_reserve_bad_input_is_22023_and_changes_nothing(conn, args) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    before = _everything(conn)
    assert _sqlstate(conn, "reserve_credits", *args) == "22023"
    assert _everything(conn) == before


def test_reserve_metadata_must_be_an_object(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    before = _everything(conn)
    assert _sqlstate(conn, "reserve_credits", "u1", 1, TTL, None, metadata=Jsonb([1, 2])) == "22023"
    assert _everything(conn) == before


# --- idempotency -----------------------------------------------------------------------------------


def test_reserve_with_a_key_holds_once(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    first = _reserve(conn, amount=3, key="req-1")
    again = _reserve(conn, amount=3, key="req-1")
    assert again["replayed"] is True and again["success"] is True
    assert again["hold_id"] == first["hold_id"] and again["status"] == "held" and again["balance"] == 7
    assert balance(conn, "u1") == 7 and count(conn, "credit_holds") == 1
    # Once committed, the replay shows the commit and its result; still nothing held again.
    call(conn, "commit_credit_hold", first["hold_id"], Jsonb({"story": "once"}))
    third = _reserve(conn, amount=3, key="req-1")
    assert third["replayed"] and third["status"] == "committed" and third["result"] == {"story": "once"}
    assert third["usage_transaction_id"] is not None and third["balance"] == 7


def test_reserve_key_reused_for_another_amount_is_BD012(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    _reserve(conn, amount=3, key="req-1")
    before = _everything(conn)
    assert _sqlstate(conn, "reserve_credits", "u1", 4, TTL, "req-1") == "BD012"
    assert _everything(conn) == before


def test_keys_are_per_user(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, "u1", credits=10)
    _active_user(conn, "u2", credits=10)
    a = _reserve(conn, "u1", 3, key="same")
    b = _reserve(conn, "u2", 3, key="same")
    assert a["hold_id"] != b["hold_id"] and not b["replayed"]
    assert balance(conn, "u1") == 7 and balance(conn, "u2") == 7


def test_concurrent_reservations_with_one_key_hold_once(conn, connect) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    conns = [connect() for _ in range(8)]
    results = _threads(8, lambda i: _reserve(conns[i], amount=3, key="same-key"))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({r["hold_id"] for r in results}) == 1
    assert Counter(r["replayed"] for r in results) == {True: 7, False: 1}
    assert balance(conn, "u1") == 7


# --- commit ----------------------------------------------------------------------------------------


def test_commit_spends_the_held_credits(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3, description="story", metadata=Jsonb({"story_id": "s1"}))
    r = call(conn, "commit_credit_hold", held["hold_id"], Jsonb({"story": "Once upon a time"}))
    assert r["success"] is True and r["duplicate"] is False and r["status"] == "committed"
    assert r["balance"] == 7 and r["result"] == {"story": "Once upon a time"}
    assert r["transaction_id"] == r["usage_transaction_id"] and r["settled_at"] is not None
    usage = conn.execute("SELECT * FROM public.credit_transactions WHERE id = %s", (r["transaction_id"],)).fetchone()
    assert usage["transaction_type"] == "usage" and usage["amount"] == -3 and usage["description"] == "story"
    assert usage["metadata"] == {"story_id": "s1", "hold_id": held["hold_id"]}
    assert usage["reference"] == f"hold:{held['hold_id']}:usage"
    assert _entries(conn)[-3:] == [("hold", -3, 7), ("release", 3, 10), ("usage", -3, 7)]
    assert balance(conn, "u1") == 7
    # The usage is an ordinary usage: refundable once.
    refund = call(conn, "refund_credits", r["transaction_id"], "story deleted")
    assert refund["success"] and refund["balance"] == 10


def test_commit_twice_returns_the_first(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3)
    first = call(conn, "commit_credit_hold", held["hold_id"], Jsonb({"n": 1}))
    before = _everything(conn)
    again = call(conn, "commit_credit_hold", held["hold_id"], Jsonb({"n": 2}))
    assert again["duplicate"] is True and again["transaction_id"] == first["transaction_id"]
    assert again["result"] == {"n": 1} and again["balance"] == 7
    assert _everything(conn) == before


def test_commit_without_result(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=1)
    r = call(conn, "commit_credit_hold", held["hold_id"])
    assert r["success"] and r["result"] is None


def test_commit_after_expiry_until_the_sweep(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3, ttl=timedelta(milliseconds=100))
    time.sleep(0.2)
    r = call(conn, "commit_credit_hold", held["hold_id"])
    assert r["success"] and r["status"] == "committed"
    assert call(conn, "release_expired_credit_holds") == 0
    assert balance(conn, "u1") == 7


@pytest.mark.parametrize("settle", ["release", "expire"])
def test_commit_of_a_settled_hold_is_BD071(conn, settle) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3, ttl=timedelta(milliseconds=100))
    if settle == "release":
        call(conn, "release_credit_hold", held["hold_id"], "failed")
    else:
        time.sleep(0.2)
        assert call(conn, "release_expired_credit_holds") == 1
    before = _everything(conn)
    assert _sqlstate(conn, "commit_credit_hold", held["hold_id"]) == "BD071"
    assert _everything(conn) == before and balance(conn, "u1") == 10


@pytest.mark.parametrize("function", ["commit_credit_hold", "release_credit_hold"])
def test_settling_bad_ids(conn, function) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    _reserve(conn)
    before = _everything(conn)
    assert _sqlstate(conn, function, None) == "22023"
    assert _sqlstate(conn, function, 999_999) == "BD070"
    assert _everything(conn) == before


# --- release ---------------------------------------------------------------------------------------


def test_release_gives_the_credits_back(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3)
    r = call(conn, "release_credit_hold", held["hold_id"], "  generator timed out ")
    assert r["success"] is True and r["duplicate"] is False and r["status"] == "released"
    assert r["reason"] == "generator timed out" and r["balance"] == 10
    assert r["transaction_id"] == r["release_transaction_id"] and r["usage_transaction_id"] is None
    assert _entries(conn)[-2:] == [("hold", -3, 7), ("release", 3, 10)]
    log = conn.execute(
        "SELECT details FROM billingdb.activity_log WHERE user_id = 'u1' AND activity_type = 'credit_hold_released'"
    ).fetchone()
    assert log["details"]["hold_id"] == held["hold_id"] and log["details"]["amount"] == 3
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["credits_balance"] == 10 and state["cached"] is True


def test_release_twice_returns_the_first(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3)
    first = call(conn, "release_credit_hold", held["hold_id"])
    before = _everything(conn)
    again = call(conn, "release_credit_hold", held["hold_id"], "again")
    assert again["duplicate"] is True and again["transaction_id"] == first["transaction_id"]
    assert again["reason"] is None and again["balance"] == 10
    assert _everything(conn) == before


def test_release_of_a_committed_hold_is_BD071(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3)
    call(conn, "commit_credit_hold", held["hold_id"])
    before = _everything(conn)
    assert _sqlstate(conn, "release_credit_hold", held["hold_id"], "too late") == "BD071"
    assert _everything(conn) == before


def test_release_works_whatever_the_subscription_state(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    held = _reserve(conn, amount=3)
    subscribe(conn, "u1", "unpaid")
    assert call(conn, "release_credit_hold", held["hold_id"])["balance"] == 10


# --- expiry ----------------------------------------------------------------------------------------


def test_a_hold_nobody_settles_expires_and_the_sweep_returns_its_credits(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, "u1", credits=10)
    _active_user(conn, "u2", credits=10)
    abandoned = _reserve(conn, "u1", 4, ttl=timedelta(milliseconds=100))
    other = _reserve(conn, "u2", 2, ttl=timedelta(milliseconds=100))
    alive = _reserve(conn, "u1", 1)  # 5 minutes: not swept
    assert balance(conn, "u1") == 5
    time.sleep(0.2)
    assert call(conn, "release_expired_credit_holds") == 2
    assert balance(conn, "u1") == 9 and balance(conn, "u2") == 10
    hold = _hold(conn, abandoned["hold_id"])
    assert hold["status"] == "expired" and hold["reason"] == "expired" and hold["settled_at"] is not None
    assert _hold(conn, other["hold_id"])["status"] == "expired"
    assert _hold(conn, alive["hold_id"])["status"] == "held"
    assert count(conn, "activity_log", "activity_type = 'credit_hold_expired'") == 2
    assert call(conn, "get_user_subscription_state", "u1")["credits_balance"] == 9
    # Nothing left to sweep; releasing the expired hold again changes nothing.
    assert call(conn, "release_expired_credit_holds") == 0
    assert call(conn, "release_credit_hold", abandoned["hold_id"])["duplicate"] is True
    assert balance(conn, "u1") == 9


def test_sweep_batch_size(conn) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    for _ in range(5):
        _reserve(conn, amount=1, ttl=timedelta(milliseconds=50))
    time.sleep(0.15)
    assert call(conn, "release_expired_credit_holds", 2) == 2
    assert call(conn, "release_expired_credit_holds", 2) == 2
    assert call(conn, "release_expired_credit_holds", 2) == 1
    assert balance(conn, "u1") == 10


@pytest.mark.parametrize("max_holds", [0, -1, None])
def test_sweep_bad_batch_size_is_22023(conn, max_holds) -> None:  # type: ignore[no-untyped-def]
    _active_user(conn, credits=10)
    _reserve(conn, ttl=timedelta(milliseconds=10))
    time.sleep(0.05)
    before = _everything(conn)
    assert _sqlstate(conn, "release_expired_credit_holds", max_holds) == "22023"
    assert _everything(conn) == before


# --- concurrency -----------------------------------------------------------------------------------


def test_concurrent_reservations_never_overcommit(conn, connect) -> None:  # type: ignore[no-untyped-def]
    """16 threads on their own connections, each holding 3 of 20 credits: exactly 6 succeed."""
    _active_user(conn, credits=20)
    conns = [connect() for _ in range(16)]
    results = _threads(16, lambda i: _reserve(conns[i], amount=3))
    assert not [r for r in results if isinstance(r, Exception)], results
    codes = Counter(r["code"] for r in results)
    assert codes == {None: 6, "insufficient_credits": 10}
    assert balance(conn, "u1") == 2
    held = conn.execute(
        "SELECT coalesce(sum(amount), 0) AS n FROM billingdb.credit_holds WHERE status = 'held'"
    ).fetchone()["n"]
    assert held == 18


def test_concurrent_reserve_commit_release_and_spend(conn, connect) -> None:  # type: ignore[no-untyped-def]
    """Holds, commits, releases and direct spends of one balance in parallel: never below 0, sums exact."""
    _active_user(conn, credits=50)
    conns = [connect() for _ in range(12)]

    def work(i: int) -> int:
        c = conns[i]
        spent = 0
        for j in range(10):
            r = _reserve(c, amount=1 + (i + j) % 3)
            if not r["success"]:
                continue
            if (i + j) % 2:
                spent += call(c, "commit_credit_hold", r["hold_id"])["amount"]
            else:
                call(c, "release_credit_hold", r["hold_id"])
        u = call(c, "use_credits_validated", "u1", 1)
        return spent + (1 if u["success"] else 0)

    results = _threads(12, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert balance(conn, "u1") == 50 - sum(results)
    assert count(conn, "credit_holds", "status = 'held'") == 0


def test_commit_release_and_sweep_race_on_one_hold(conn, connect) -> None:  # type: ignore[no-untyped-def]
    """Whoever locks first settles the hold; the others see it settled (duplicate or BD071)."""
    _active_user(conn, credits=10)
    for round_ in range(5):
        held = _reserve(conn, amount=2, ttl=timedelta(milliseconds=50))
        time.sleep(0.1)
        conns = [connect() for _ in range(3)]
        actions = [
            lambda c: call(c, "commit_credit_hold", held["hold_id"]),
            lambda c: call(c, "release_credit_hold", held["hold_id"]),
            lambda c: call(c, "release_expired_credit_holds"),
        ]
        results = _threads(3, lambda i: actions[i](conns[i]))
        errors = [r for r in results if isinstance(r, Exception)]
        assert all(getattr(e, "sqlstate", None) == "BD071" for e in errors), errors
        status = _hold(conn, held["hold_id"])["status"]
        assert status in ("committed", "released", "expired"), round_
        for c in conns:
            c.close()
    spent = conn.execute(
        "SELECT coalesce(sum(amount), 0) AS n FROM billingdb.credit_holds WHERE status = 'committed'"
    ).fetchone()["n"]
    assert balance(conn, "u1") == 10 - spent


def test_maintenance_run_releases_expired_holds(conn, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from billingdb.cli import app

    _active_user(conn, "u1", credits=10)
    _reserve(conn, "u1", 4, ttl=timedelta(milliseconds=100))
    assert balance(conn, "u1") == 6
    time.sleep(0.2)
    result = CliRunner().invoke(app, ["maintenance", "run", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "credit holds: released 1 expired holds" in result.output
    assert balance(conn, "u1") == 10
