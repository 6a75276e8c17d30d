"""process_stripe_events (many events, one transaction) and the Events API sync's lock and record
(begin_stripe_event_sync, finish_stripe_event_sync), called as SQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from events.event_helpers import process, table_contents, world_state
from psycopg.types.json import Jsonb

from billingdb.testing.stripe import StripeWorld


def batch(db: psycopg.Connection[Any], events: Any, advance_cursor: bool = False) -> list[dict[str, Any]]:
    return db.execute("SELECT public.process_stripe_events(%s, %s) AS r", (Jsonb(events), advance_cursor)
                      ).fetchone()["r"]


def cursor(db: psycopg.Connection[Any]) -> tuple[Any, Any] | None:
    row = db.execute("SELECT cursor_created, cursor_event_id FROM billingdb.stripe_event_sync").fetchone()
    return (row["cursor_created"], row["cursor_event_id"]) if row else None


def test_a_batch_ends_as_the_same_events_one_by_one(db: psycopg.Connection[Any], connect: Any) -> None:
    world = StripeWorld()
    events = world.new_subscription() + world.renewal()
    tx = connect(autocommit=False)
    for event in events:
        process(tx, event)
    one_by_one = world_state(tx, world.user_id, world.customer_id)
    tx.rollback()

    results = batch(db, events)
    assert [r["event_id"] for r in results] == [e["id"] for e in events]
    assert world_state(db, world.user_id, world.customer_id) == one_by_one
    assert one_by_one["balance"] == 60
    # Again: every one a duplicate, nothing changes.
    before = table_contents(db)
    assert {r["status"] for r in batch(db, events)} == {"duplicate"}
    assert table_contents(db) == before


def test_a_malformed_element_is_invalid_and_the_rest_apply(db: psycopg.Connection[Any]) -> None:
    world = StripeWorld()
    events = world.new_subscription()
    no_id = {k: v for k, v in events[1].items() if k != "id"}
    results = batch(db, [events[0], "not an event", no_id, *events[1:]])
    assert [r["status"] for r in results[1:3]] == ["invalid", "invalid"]
    assert all(r["detail"]["sqlstate"] == "22023" and r["detail"]["error"] for r in results[1:3])
    assert results[1]["event_id"] is None
    assert world_state(db, world.user_id, world.customer_id)["balance"] == 30
    assert db.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == len(events)


def test_a_failed_event_rolls_back_only_its_own_effects(db: psycopg.Connection[Any]) -> None:
    other = StripeWorld(user_in_metadata=True)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", ("someone_else", other.customer_id))
    conflicting = next(e for e in other.new_subscription() if e["type"] == "customer.subscription.created")
    world = StripeWorld()
    results = batch(db, [*world.new_subscription(), conflicting])
    assert results[-1]["status"] == "failed"
    row = db.execute("SELECT status, error FROM public.stripe_events WHERE stripe_event_id = %s",
                     (conflicting["id"],)).fetchone()
    assert row["status"] == "failed" and "BD004" in row["error"]
    assert db.execute("SELECT count(*) AS n FROM billingdb.subscriptions WHERE subscription_id = %s",
                      (other.subscription_id,)).fetchone()["n"] == 0
    assert world_state(db, world.user_id, world.customer_id)["balance"] == 30


@pytest.mark.parametrize(("events", "message"), [
    ({"id": "evt_1"}, "events must be a JSON array"),
    ("[]", "events must be a JSON array"),
    ([{"id": f"evt_{n}"} for n in range(1001)], "at most 1000 events per batch (got 1001)"),
])
def test_not_an_array_or_over_1000_is_22023_and_changes_nothing(
    db: psycopg.Connection[Any], events: Any, message: str
) -> None:
    before = table_contents(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message.replace("(", r"\(").replace(")", r"\)")):
        batch(db, events, advance_cursor=True)
    assert table_contents(db) == before and cursor(db) is None


def test_null_is_22023(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="events must be a JSON array"):
        db.execute("SELECT public.process_stripe_events(null)")


def test_the_cursor_moves_forward_only_and_only_when_asked(db: psycopg.Connection[Any]) -> None:
    world = StripeWorld(now=int(time.time()) - 40 * 86400)  # the renewal, a month on, is still in the past
    first = world.new_subscription()
    world.tick(60)
    later = world.renewal()
    batch(db, first)
    assert cursor(db) is None
    batch(db, later, advance_cursor=True)
    newest = max(later, key=lambda e: (e["created"], e["id"]))
    assert cursor(db) == (datetime.fromtimestamp(newest["created"], UTC), newest["id"])
    batch(db, first, advance_cursor=True)  # older events, fed again: the cursor stays
    assert cursor(db) == (datetime.fromtimestamp(newest["created"], UTC), newest["id"])
    batch(db, ["not an event"], advance_cursor=True)
    assert cursor(db) == (datetime.fromtimestamp(newest["created"], UTC), newest["id"])


def test_one_sync_at_a_time_and_a_session_that_ends_releases_it(connect: Any) -> None:
    first, second = connect(), connect()
    begin = "SELECT public.begin_stripe_event_sync() AS r"
    assert first.execute(begin).fetchone()["r"] == {
        "started": True, "cursor_created": None, "cursor_event_id": None, "last_started_at": None,
        "last_succeeded_at": None}
    assert second.execute(begin).fetchone()["r"] == {"started": False, "reason": "another sync is running"}
    started = datetime.now(UTC) - timedelta(seconds=5)
    done = first.execute("SELECT public.finish_stripe_event_sync(%s, %s, null) AS r",
                         (started, Jsonb({"processed": 3}))).fetchone()["r"]
    assert done["last_counts"] == {"processed": 3} and done["last_error"] is None
    assert done["last_succeeded_at"] is not None
    assert second.execute(begin).fetchone()["r"]["started"] is True
    second.close()  # a crash: the lock goes with the session, once its server process has ended
    deadline = time.monotonic() + 10
    while not first.execute(begin).fetchone()["r"]["started"]:
        assert time.monotonic() < deadline, "the lock outlived its session"
        time.sleep(0.05)
    failed = first.execute("SELECT public.finish_stripe_event_sync(%s, '{}', 'Stripe refused the API key') AS r",
                           (started,)).fetchone()
    assert failed["r"]["last_error"] == "Stripe refused the API key"
    assert failed["r"]["last_succeeded_at"] == done["last_succeeded_at"]  # the last success is kept
    # A dry run (counts null) records nothing.
    assert first.execute(begin).fetchone()["r"]["started"] is True
    assert first.execute("SELECT public.finish_stripe_event_sync(%s, null) AS r", (started,)
                         ).fetchone()["r"] == failed["r"]


def test_only_the_session_that_began_a_sync_finishes_it_and_it_begins_once(connect: Any) -> None:
    """Session advisory locks nest and are per session: a second begin in one session, or a finish from a
    session that began nothing, would leave the lock held or record another session's run."""
    syncing, other = connect(), connect()
    begin = "SELECT public.begin_stripe_event_sync() AS r"
    finish = "SELECT public.finish_stripe_event_sync(%s, %s) AS r"
    started = datetime.now(UTC) - timedelta(seconds=5)
    assert syncing.execute(begin).fetchone()["r"]["started"] is True
    assert syncing.execute(begin).fetchone()["r"] == {
        "started": False, "reason": "a sync is already running in this session"}
    for counts in (Jsonb({"processed": 1}), None):
        with pytest.raises(psycopg.Error, match="no sync is running in this session") as refused:
            other.execute(finish, (started, counts))
        assert refused.value.sqlstate == "BD031"
    assert other.execute("SELECT count(*) AS n FROM billingdb.stripe_event_sync").fetchone()["n"] == 0
    assert other.execute(begin).fetchone()["r"] == {"started": False, "reason": "another sync is running"}
    # One finish ends the one begin: the lock is free for another session at once.
    syncing.execute(finish, (started, Jsonb({"processed": 1})))
    assert other.execute(begin).fetchone()["r"]["started"] is True


def test_an_event_from_the_future_does_not_move_the_cursor(db: psycopg.Connection[Any]) -> None:
    """The Events API lists no event from the future: one dated a day ahead (a forged or mistaken batch)
    is processed, but moving the cursor there would skip every real event of that day."""
    world = StripeWorld()
    events = world.new_subscription()
    customer = {"id": world.customer_id, "object": "customer", "metadata": {}}
    ahead = world.event("customer.updated", customer, created=int(time.time()) + 86400)
    results = batch(db, [*events, ahead], advance_cursor=True)
    assert results[-1]["status"] in ("processed", "ignored")
    newest = max(events, key=lambda e: (e["created"], e["id"]))
    assert cursor(db) == (datetime.fromtimestamp(newest["created"], UTC), newest["id"])


def test_a_created_past_the_year_9999_is_22023_and_changes_nothing(db: psycopg.Connection[Any]) -> None:
    """Such a time cannot be read back by Python (datetime stops at 9999): the cursor or a subscription's
    watermark would break every later sync."""
    world = StripeWorld()
    customer = {"id": world.customer_id, "object": "customer", "metadata": {}}
    event = world.event("customer.updated", customer, created=999_999_999_999)
    before = table_contents(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="before the year 10000"):
        db.execute("SELECT public.process_stripe_event(%s)", (Jsonb(event),))
    result = batch(db, [event], advance_cursor=True)[0]
    assert result["status"] == "invalid" and "before the year 10000" in result["detail"]["error"]
    assert table_contents(db) == before and cursor(db) is None


def test_a_null_advance_cursor_is_22023(db: psycopg.Connection[Any]) -> None:
    before = table_contents(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="advance_cursor must be true or false"):
        db.execute("SELECT public.process_stripe_events(%s, null)", (Jsonb(StripeWorld().new_subscription()),))
    assert table_contents(db) == before


@pytest.mark.parametrize(("started_at", "counts", "error", "message"), [
    (datetime.now(UTC) - timedelta(seconds=5), Jsonb([1]), None, "counts"),
    (datetime.now(UTC) + timedelta(days=1), Jsonb({}), None, "started_at must be a finite time in the past"),
    (None, Jsonb({}), None, "started_at must be a finite time in the past"),
    ("-infinity", Jsonb({}), None, "started_at must be a finite time in the past"),
    (datetime.now(UTC) - timedelta(seconds=5), Jsonb({}), "x" * 1001, "error"),
])
def test_finish_with_bad_input_is_22023_and_changes_nothing(
    conn: psycopg.Connection[Any], started_at: Any, counts: Any, error: Any, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        conn.execute("SELECT public.finish_stripe_event_sync(%s, %s, %s)", (started_at, counts, error))
    assert conn.execute("SELECT count(*) AS n FROM billingdb.stripe_event_sync").fetchone()["n"] == 0
