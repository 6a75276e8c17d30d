"""The subscription state machine: apply_subscription_change, transitions as data, the event watermark."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from helpers import NOW, STATUSES, call, contents, count, customer, subscribe

#: Stripe's allowed status changes (from_status <> to_status), as seeded by revision 0002.
ALLOWED = {
    ("incomplete", "active"),
    ("incomplete", "incomplete_expired"),
    ("incomplete", "canceled"),
    ("trialing", "active"),
    ("trialing", "past_due"),
    ("trialing", "canceled"),
    ("trialing", "paused"),
    ("active", "past_due"),
    ("active", "unpaid"),
    ("active", "canceled"),
    ("active", "paused"),
    ("active", "trialing"),
    ("past_due", "active"),
    ("past_due", "unpaid"),
    ("past_due", "canceled"),
    ("unpaid", "active"),
    ("unpaid", "canceled"),
    ("paused", "active"),
    ("paused", "canceled"),
}

PAIRS = [(a, b) for a in STATUSES for b in STATUSES]
CHANGES = [(a, b) for a, b in PAIRS if a != b]
T0 = NOW - timedelta(hours=1)


def _row(conn: psycopg.Connection[Any], subscription_id: str = "sub_u1") -> dict[str, Any]:
    row = conn.execute("SELECT * FROM billingdb.subscriptions WHERE subscription_id = %s", (subscription_id,)).fetchone()
    assert row is not None
    return row  # type: ignore[no-any-return]


def _sqlstate(conn: psycopg.Connection[Any], *args: Any) -> str | None:
    try:
        call(conn, "apply_subscription_change", *args)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def test_transitions_table_is_the_documented_state_machine(conn) -> None:  # type: ignore[no-untyped-def]
    rows = conn.execute("SELECT from_status, to_status FROM billingdb.subscription_status_transitions").fetchall()
    assert {(r["from_status"], r["to_status"]) for r in rows} == ALLOWED
    terminal = {r["from_status"] for r in rows}
    assert "canceled" not in terminal and "incomplete_expired" not in terminal


@pytest.mark.parametrize(("from_status", "to_status"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_a_newer_event_always_applies(conn, from_status: str, to_status: str) -> None:  # type: ignore[no-untyped-def]
    """Stripe's newest snapshot wins: the transitions table does not refuse a strictly newer event."""
    customer(conn, "u1")
    created = subscribe(conn, "u1", from_status, event_created=T0, event_id="evt_1")
    assert created["result"] == "created" and created["applied"] is True
    r = subscribe(
        conn, "u1", to_status, period_end=NOW + timedelta(days=60), event_created=T0 + timedelta(seconds=5),
        event_id="evt_2",
    )
    assert r["from_status"] == from_status and r["to_status"] == to_status
    assert r["subscription_id"] == "sub_u1" and r["user_id"] == "u1"
    assert r["applied"] is True and r["result"] == "updated"
    row = _row(conn)
    assert row["status"] == to_status and row["current_period_end"] == NOW + timedelta(days=60)
    assert row["last_event_id"] == "evt_2" and row["last_event_created"] == T0 + timedelta(seconds=5)
    state = call(conn, "get_user_subscription_state", "u1")
    assert state["status"] == to_status and state["cached"] is True
    changed = count(conn, "activity_log", "activity_type = 'subscription_status_changed'")
    assert changed == (0 if from_status == to_status else 1)
    # A change the table does not list is logged as unexpected, not refused.
    expected = from_status != to_status and (from_status, to_status) not in ALLOWED
    unexpected = conn.execute(
        "SELECT details FROM billingdb.activity_log WHERE activity_type = 'subscription_unexpected_transition'"
    ).fetchall()
    assert [x["details"]["to_status"] for x in unexpected] == ([to_status] if expected else [])


@pytest.mark.parametrize(("from_status", "to_status"), CHANGES, ids=[f"{a}->{b}" for a, b in CHANGES])
def test_a_same_second_tie_follows_the_table(conn, from_status: str, to_status: str) -> None:  # type: ignore[no-untyped-def]
    """In a same-second tie the table breaks the tie: an allowed change applies, any other is refused.
    (A same-status event in the same second is stale: test_same_second_ties.)"""
    customer(conn, "u1")
    subscribe(conn, "u1", from_status, event_created=T0, event_id="evt_1")
    before = contents(conn)
    r = subscribe(conn, "u1", to_status, event_created=T0, event_id="evt_2")
    if (from_status, to_status) in ALLOWED:
        assert r["applied"] is True and r["result"] == "updated" and _row(conn)["status"] == to_status
    else:
        assert r["applied"] is False and r["result"] == "refused_transition"
        after = contents(conn)
        refused = conn.execute(
            "SELECT details FROM billingdb.activity_log WHERE activity_type = 'subscription_transition_refused'"
        ).fetchall()
        assert [x["details"]["to_status"] for x in refused] == [to_status]
        # Nothing but the log entry changed.
        assert {k: v for k, v in after.items() if k != "activity_log"} == {
            k: v for k, v in before.items() if k != "activity_log"
        }
        assert len(after["activity_log"]) == len(before["activity_log"]) + 1


@pytest.mark.parametrize(("from_status", "to_status"), sorted(ALLOWED))
def test_manual_call_applies_allowed_transitions_and_keeps_the_watermark(conn, from_status: str, to_status: str) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", from_status, event_created=T0, event_id="evt_1")
    r = subscribe(conn, "u1", to_status)
    assert r["result"] == "updated"
    row = _row(conn)
    assert row["status"] == to_status and row["last_event_id"] == "evt_1" and row["last_event_created"] == T0


def test_manual_call_is_refused_by_the_state_machine_too(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "canceled")
    assert subscribe(conn, "u1", "active")["result"] == "refused_transition"
    assert _row(conn)["status"] == "canceled"


def test_unchanged_event_moves_only_the_watermark(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active", event_created=T0, event_id="evt_1")
    updated_at = _row(conn)["updated_at"]
    r = subscribe(conn, "u1", "active", event_created=T0 + timedelta(seconds=1), event_id="evt_2")
    assert r["result"] == "unchanged" and r["applied"] is False
    row = _row(conn)
    assert row["last_event_id"] == "evt_2" and row["updated_at"] == updated_at


# --- ordering: the watermark --------------------------------------------------------------------


def test_older_event_is_stale_and_changes_nothing(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active", event_created=T0, event_id="evt_2")
    before = contents(conn)
    r = subscribe(conn, "u1", "past_due", event_created=T0 - timedelta(seconds=1), event_id="evt_1")
    assert r["result"] == "stale" and r["applied"] is False
    assert r["from_status"] == "active" and r["to_status"] == "past_due"
    assert contents(conn) == before


def test_out_of_order_delivery_ends_in_the_newest_state(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    # Stripe sent active (t), past_due (t+10), active (t+20); we receive them backwards.
    assert subscribe(conn, "u1", "active", event_created=T0 + timedelta(seconds=20), event_id="evt_3")["result"] == "created"
    assert subscribe(conn, "u1", "past_due", event_created=T0 + timedelta(seconds=10), event_id="evt_2")["result"] == "stale"
    assert subscribe(conn, "u1", "incomplete", event_created=T0, event_id="evt_1")["result"] == "stale"
    assert _row(conn)["status"] == "active"


@pytest.mark.parametrize(
    ("stored", "incoming", "same_id", "result"),
    [
        ("incomplete", "active", False, "updated"),  # forward progress within the same second
        ("active", "incomplete", False, "refused_transition"),  # the reverse order: refused
        ("active", "active", False, "stale"),  # same status: no progress
        ("active", "past_due", True, "stale"),  # the same event again
    ],
)
def test_same_second_ties(conn, stored: str, incoming: str, same_id: bool, result: str) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", stored, event_created=T0, event_id="evt_1")
    before = contents(conn)
    r = subscribe(
        conn, "u1", incoming, period_end=NOW + timedelta(days=9), event_created=T0,
        event_id="evt_1" if same_id else "evt_2",
    )
    assert r["result"] == result
    row = _row(conn)
    if result == "updated":
        assert row["status"] == incoming and row["last_event_id"] == "evt_2" and row["last_event_created"] == T0
    elif result == "stale":
        assert contents(conn) == before
    else:
        assert row["status"] == stored and row["last_event_id"] == "evt_1"


def test_checkout_burst_in_one_second_in_either_order(conn) -> None:  # type: ignore[no-untyped-def]
    # customer.subscription.created (incomplete) and .updated (active) share a second.
    customer(conn, "u1")
    customer(conn, "u2")
    subscribe(conn, "u1", "incomplete", event_created=T0, event_id="evt_a")
    subscribe(conn, "u1", "active", event_created=T0, event_id="evt_b")
    subscribe(conn, "u2", "active", event_created=T0, event_id="evt_b")
    subscribe(conn, "u2", "incomplete", event_created=T0, event_id="evt_a")
    assert _row(conn, "sub_u1")["status"] == _row(conn, "sub_u2")["status"] == "active"


def test_event_after_manual_creation_applies(conn) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "trialing")
    assert subscribe(conn, "u1", "active", event_created=T0, event_id="evt_1")["result"] == "updated"
    assert _row(conn)["last_event_id"] == "evt_1"


# --- who owns the subscription -------------------------------------------------------------------


def test_user_resolved_from_the_customer(conn) -> None:  # type: ignore[no-untyped-def]
    cus = customer(conn, "u1")
    r = call(conn, "apply_subscription_change", "sub_1", None, cus, "active", "price_x", NOW, NOW + timedelta(days=30),
             False, None, T0, "evt_1")
    assert r["result"] == "created" and r["user_id"] == "u1"
    row = _row(conn, "sub_1")
    assert row["user_id"] == "u1" and row["stripe_customer_id"] == cus and row["price_id"] == "price_x"
    log = conn.execute("SELECT * FROM billingdb.activity_log WHERE activity_type = 'subscription_created'").fetchall()
    assert len(log) == 1 and log[0]["details"]["subscription_id"] == "sub_1"


@pytest.mark.parametrize(
    ("case", "state"),
    [("unknown customer", "BD001"), ("customer of another user", "BD004"), ("subscription of another user", "BD013"),
     ("subscription of another customer", "BD013")],
)
def test_ownership_errors_change_nothing(conn, case: str, state: str) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    customer(conn, "u2")
    subscribe(conn, "u2", "active", subscription_id="sub_2")
    call(conn, "apply_subscription_change", "sub_3", "u3", "cus_x3", "active", None, None, None, False, None)
    args = {
        "unknown customer": ("sub_1", None, "cus_nobody"),
        "customer of another user": ("sub_1", "u1", "cus_u2"),
        "subscription of another user": ("sub_2", "u1", None),
        "subscription of another customer": ("sub_3", "u3", "cus_other"),
    }[case]
    before = contents(conn)
    assert _sqlstate(conn, *args, "active", None, None, None, False, None) == state
    assert contents(conn) == before


@pytest.mark.parametrize(
    "args",
    [
        (None, "u1", None, "active"),
        ("bad_1", "u1", None, "active"),
        ("sub_1", "u1", None, None),
        ("sub_1", "u1", None, "expired"),
        ("sub_1", "u1", None, "ACTIVE"),
        ("sub_1", None, None, "active"),
        ("sub_1", "u1", "bad_customer", "active"),
        ("sub_1", "u1", None, "active", None, NOW, NOW - timedelta(days=1)),
        ("sub_1", "u1", None, "active", None, None, None, False, None, None, "evt_without_time"),
    ],
)
def test_invalid_arguments_change_nothing(conn, args: tuple[Any, ...]) -> None:  # type: ignore[no-untyped-def]
    customer(conn, "u1")
    subscribe(conn, "u1", "active", subscription_id="sub_1", event_created=T0, event_id="evt_0")
    full = list(args) + [None] * (11 - len(args))
    if len(args) <= 7:
        full[7] = False
    before = contents(conn)
    assert _sqlstate(conn, *full) == "22023"
    assert contents(conn) == before


def test_only_apply_subscription_change_writes_subscriptions(conn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        conn.execute("INSERT INTO billingdb.subscriptions (subscription_id, user_id, status) VALUES ('sub_x', 'u', 'active')")
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        r = conn.execute(
            "SELECT public.apply_subscription_change('sub_x', 'u', null, 'active', null, null, null, false, null) AS r"
        ).fetchone()
    assert r["r"]["result"] == "created"
