"""The subscription state cache: get_user_subscription_state hits and misses, TTL, refresh on every write,
the cleanup functions and get_subscription_cache_status."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import NOW, call, contents, count, customer, fund, subscribe

STATE_KEYS = {
    "user_id", "subscription_id", "stripe_customer_id", "status", "plan", "price_id", "credits_balance",
    "current_period_end", "cancel_at_period_end", "can_use_credits", "reason", "cached", "cached_at", "expires_at",
}
STATUS_KEYS = {
    "total", "valid", "expired", "hits", "misses", "hit_rate", "stats_since", "average_age_seconds", "ttl_seconds",
    # v2 (revision 0004): staleness, the last cleanup run, the pg_cron job.
    "max_valid_age_seconds", "last_cleanup", "cleanup_job",
}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _set(conn: psycopg.Connection[Any], name: str, value: str) -> None:
    conn.execute("UPDATE billingdb.billing_settings SET value = %s WHERE name = %s", (value, name))


def _expire(conn: psycopg.Connection[Any], user_id: str) -> None:
    conn.execute(
        "UPDATE public.subscription_cache SET cached_at = now() - interval '10 minutes',"
        " expires_at = now() - interval '5 minutes' WHERE user_id = %s",
        (user_id,),
    )


def _status(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return call(conn, "get_subscription_cache_status")  # type: ignore[no-any-return]


def test_unknown_user_gets_a_well_formed_no_subscription_state(conn) -> None:  # type: ignore[no-untyped-def]
    s = call(conn, "get_user_subscription_state", "nobody")
    assert set(s) == STATE_KEYS
    assert s["user_id"] == "nobody" and s["status"] is None and s["plan"] is None and s["price_id"] is None
    assert s["credits_balance"] == 0 and s["can_use_credits"] is False and s["reason"] == "no_subscription"
    assert s["cancel_at_period_end"] is False and s["current_period_end"] is None and s["cached"] is False


@pytest.mark.parametrize("user_id", [None, "", "   "])
def test_missing_user_id_is_22023(conn, user_id: str | None) -> None:  # type: ignore[no-untyped-def]
    before = contents(conn)
    for function in ("get_user_subscription_state", "update_subscription_cache"):
        with pytest.raises(psycopg.Error) as info:
            call(conn, function, user_id)
        assert info.value.sqlstate == "22023"
    assert contents(conn) == before
    assert _status(conn)["hits"] == 0 and _status(conn)["misses"] == 0


def test_miss_then_hit_with_ttl_and_counters(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "set_plan", "price_individual", "Individual", 30)
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 7)
    conn.execute("DELETE FROM public.subscription_cache")
    miss = call(conn, "get_user_subscription_state", "u1")
    assert set(miss) == STATE_KEYS and miss["cached"] is False
    assert miss["status"] == "active" and miss["plan"] == "Individual" and miss["price_id"] == "price_individual"
    assert miss["credits_balance"] == 7 and miss["can_use_credits"] is True and miss["reason"] is None
    assert miss["subscription_id"] == "sub_u1" and miss["stripe_customer_id"] == "cus_u1"
    assert _ts(miss["expires_at"]) - _ts(miss["cached_at"]) == timedelta(seconds=300)
    hit = call(conn, "get_user_subscription_state", "u1")
    assert hit["cached"] is True and hit["cached_at"] == miss["cached_at"] and hit["expires_at"] == miss["expires_at"]
    assert {k: v for k, v in hit.items() if k != "cached"} == {k: v for k, v in miss.items() if k != "cached"}
    call(conn, "get_user_subscription_state", "u1")
    status = _status(conn)
    assert status["hits"] == 2 and status["misses"] == 1 and status["hit_rate"] == pytest.approx(2 / 3, abs=1e-4)
    # The runbook's columns are filled in.
    row = conn.execute("SELECT * FROM public.subscription_cache WHERE user_id = 'u1'").fetchone()
    assert row["status"] == "active" and row["plan_name"] == "Individual" and row["credits_balance"] == 7
    assert row["can_use_credits"] is True and row["subscription_id"] == "sub_u1"


def test_miss_after_expiry_recomputes(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is True
    _expire(conn, "u1")
    # A change behind the cache's back (only possible as the owner) shows up once the row expired.
    conn.execute("UPDATE billingdb.credit_balances SET balance = balance WHERE false")
    again = call(conn, "get_user_subscription_state", "u1")
    assert again["cached"] is False and _ts(again["expires_at"]) > datetime.now(_ts(again["expires_at"]).tzinfo)
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is True


def test_ttl_is_a_setting(conn) -> None:  # type: ignore[no-untyped-def]
    _set(conn, "cache_ttl_seconds", "0")
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is False
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is False
    assert _status(conn)["ttl_seconds"] == 0
    _set(conn, "cache_ttl_seconds", "60")
    s = call(conn, "get_user_subscription_state", "u1")
    assert _ts(s["expires_at"]) - _ts(s["cached_at"]) == timedelta(seconds=60)
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is True


def test_ttl_0_a_read_begun_before_a_concurrent_miss_hits_that_miss_row(conn, connect) -> None:  # type: ignore[no-untyped-def]
    # A hit is a row with expires_at > now(), and now() is the reader's transaction start. With a TTL
    # of 0 the row a later transaction stored expires at that transaction's now(), after the reader's:
    # the reader gets it as a hit (fresh: committed after the reader began). make bench's cache-miss
    # run counts hits plus misses for this reason (bench/sql/checks.sql, cache_reads).
    _set(conn, "cache_ttl_seconds", "0")
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    conn.execute("DELETE FROM public.subscription_cache")
    reader = connect(autocommit=False)
    reader.execute("SELECT now()")  # the reader's transaction begins
    before = _status(conn)
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is False  # a miss, stored
    raced = call(reader, "get_user_subscription_state", "u1")
    assert raced["cached"] is True and raced["status"] == "active"
    reader.rollback()
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is False  # a later read: a miss again
    after = _status(conn)
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 2)


def test_bad_setting_values_are_rejected(conn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.errors.CheckViolation):
        _set(conn, "cache_ttl_seconds", "five minutes")
    with pytest.raises(psycopg.errors.CheckViolation):
        _set(conn, "past_due_can_spend", "yes")


def test_a_state_that_spends_until_the_period_end_expires_with_it(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    end = NOW + timedelta(seconds=90)
    subscribe(conn, "u1", "canceled", period_end=end)
    s = call(conn, "get_user_subscription_state", "u1")
    assert s["can_use_credits"] is True and _ts(s["expires_at"]) == end


# Every write refreshes the user's row in its own transaction: the next read is a hit with the new data.
WRITES = ["use", "refund", "grant", "allocate", "subscription", "update_cache"]


@pytest.mark.parametrize("write", WRITES)
def test_every_write_refreshes_the_cache(conn, write: str) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 10)
    used = call(conn, "use_credits_validated", "u1", 2)
    assert call(conn, "get_user_subscription_state", "u1")["credits_balance"] == 8
    expected: dict[str, Any]
    if write == "use":
        call(conn, "use_credits_validated", "u1", 3)
        expected = {"credits_balance": 5}
    elif write == "refund":
        call(conn, "refund_credits", used["transaction_id"], "failed")
        expected = {"credits_balance": 10}
    elif write == "grant":
        call(conn, "grant_credits", "u1", -8, "correction")
        expected = {"credits_balance": 0}
    elif write == "allocate":
        call(conn, "add_subscription_credits", cus, "in_1", "sub_u1", 30)
        expected = {"credits_balance": 38}
    elif write == "subscription":
        subscribe(conn, "u1", "past_due", cancel_at_period_end=True)
        expected = {"status": "past_due", "cancel_at_period_end": True}
    else:
        conn.execute("DELETE FROM public.subscription_cache")
        fresh = call(conn, "update_subscription_cache", "u1")
        assert fresh["cached"] is False and fresh["credits_balance"] == 8
        expected = {"credits_balance": 8}
    s = call(conn, "get_user_subscription_state", "u1")
    assert s["cached"] is True
    assert {k: s[k] for k in expected} == expected
    live = call(conn, "update_subscription_cache", "u1")
    assert {k: v for k, v in s.items() if k not in ("cached", "cached_at", "expires_at")} == {
        k: v for k, v in live.items() if k not in ("cached", "cached_at", "expires_at")
    }


def test_update_subscription_cache_does_not_count(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "update_subscription_cache", "u1")
    assert count(conn, "subscription_cache", "user_id = 'u1'") == 1
    s = _status(conn)
    assert s["hits"] == 0 and s["misses"] == 0 and s["hit_rate"] is None


def test_plan_rename_drops_the_cached_states_of_that_price(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "set_plan", "price_individual", "Individual", 30)
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    assert call(conn, "get_user_subscription_state", "u1")["plan"] == "Individual"
    call(conn, "set_plan", "price_individual", "Individual", 40)  # same name: rows stay
    assert call(conn, "get_user_subscription_state", "u1")["cached"] is True
    call(conn, "set_plan", "price_individual", "Solo", 30)
    s = call(conn, "get_user_subscription_state", "u1")
    assert s["cached"] is False and s["plan"] == "Solo"


def test_a_miss_during_a_write_does_not_store_a_state_older_than_that_write(conn, connect) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 10)
    conn.execute("DELETE FROM public.subscription_cache")
    writer = connect(autocommit=False)
    call(writer, "use_credits_validated", "u1", 4)  # holds the user's lock, not committed
    during = call(conn, "get_user_subscription_state", "u1")
    assert during["cached"] is False and during["cached_at"] is None and during["credits_balance"] == 10
    writer.commit()
    after = call(conn, "get_user_subscription_state", "u1")
    assert after["cached"] is True and after["credits_balance"] == 6


def test_a_write_waits_for_a_reader_that_stores(conn, connect) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active")
    fund(conn, "u1", 10)
    conn.execute("DELETE FROM public.subscription_cache")
    reader = connect(autocommit=False)
    assert call(reader, "get_user_subscription_state", "u1")["credits_balance"] == 10  # stores, lock held
    done = threading.Event()

    def write() -> None:
        c = connect()
        call(c, "use_credits_validated", "u1", 4)
        done.set()

    t = threading.Thread(target=write)
    t.start()
    assert not done.wait(0.5)
    reader.commit()
    t.join(10)
    assert done.is_set()
    s = call(conn, "get_user_subscription_state", "u1")
    assert s["cached"] is True and s["credits_balance"] == 6


# --- cleanup and status --------------------------------------------------------------------------


def test_clear_expired_deletes_only_expired_rows(conn) -> None:  # type: ignore[no-untyped-def]
    for user in ("u1", "u2", "u3"):
        call(conn, "get_user_subscription_state", user)
    _expire(conn, "u1")
    _expire(conn, "u2")
    before = _status(conn)
    assert before["total"] == 3 and before["valid"] == 1 and before["expired"] == 2
    assert call(conn, "clear_expired_subscription_cache") == 2
    assert call(conn, "clear_expired_subscription_cache") == 0
    after = _status(conn)
    assert after["total"] == 1 and after["expired"] == 0
    assert after["misses"] == before["misses"] == 3  # counters kept


def test_clear_all_deletes_everything_and_resets_the_counters(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "get_user_subscription_state", "u1")
    call(conn, "get_user_subscription_state", "u1")
    call(conn, "get_user_subscription_state", "u2")
    since = _status(conn)["stats_since"]
    assert call(conn, "clear_all_subscription_cache") == 2
    s = _status(conn)
    assert s["total"] == 0 and s["hits"] == 0 and s["misses"] == 0 and s["hit_rate"] is None
    assert s["average_age_seconds"] is None and _ts(s["stats_since"]) > _ts(since)
    assert call(conn, "clear_all_subscription_cache") == 0
    call(conn, "get_user_subscription_state", "u1")
    call(conn, "get_user_subscription_state", "u1")
    s = _status(conn)
    assert (s["hits"], s["misses"], s["hit_rate"]) == (1, 1, 0.5)


def test_status_keys_and_values(conn) -> None:  # type: ignore[no-untyped-def]
    s = _status(conn)
    assert set(s) == STATUS_KEYS
    assert s["total"] == 0 and s["valid"] == 0 and s["expired"] == 0
    assert s["hits"] == 0 and s["misses"] == 0 and s["hit_rate"] is None and s["average_age_seconds"] is None
    assert s["ttl_seconds"] == 300 and _ts(s["stats_since"]) <= datetime.now(_ts(s["stats_since"]).tzinfo)
    call(conn, "get_user_subscription_state", "u1")
    for _ in range(3):
        call(conn, "get_user_subscription_state", "u1")
    conn.execute("UPDATE public.subscription_cache SET cached_at = cached_at - interval '10 seconds'")
    s = _status(conn)
    assert s["hits"] == 3 and s["misses"] == 1 and s["hit_rate"] == 0.75
    assert s["total"] == 1 and s["valid"] == 1 and 9 < s["average_age_seconds"] < 60


def test_counters_are_cheap_sequences_not_rows(conn) -> None:  # type: ignore[no-untyped-def]
    call(conn, "get_user_subscription_state", "u1")
    with conn.transaction(force_rollback=True):
        call(conn, "get_user_subscription_state", "u1")
    # The hit inside the rolled-back transaction still counts (nextval is not transactional).
    assert _status(conn)["hits"] == 1
