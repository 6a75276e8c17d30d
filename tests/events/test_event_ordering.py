"""Order and concurrency: any delivery order ends in the in-order state; one event, one effect.

Each permutation plays the same events under fresh ids (the ids' common tag is
rewritten), so many permutations share one database and are compared after
the tag is put back.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from events.event_helpers import event_row, process, world_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billingdb.testing.stripe import SHAPES, StripeWorld

TAG = "TestBillingdb"
_tags = itertools.count(1)

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


def retag(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return json.loads(json.dumps(events).replace(TAG, tag))


def play(db: psycopg.Connection[Any], world: StripeWorld, events: list[dict[str, Any]],
         order: list[int], *, prefix: list[dict[str, Any]] = (), link_first: bool = False) -> dict[str, Any]:
    """Deliver prefix (in order) then events in ``order`` under a fresh tag; the normalised end state."""
    tag = f"P{next(_tags)}Billingdb"
    prefix_t, events_t = retag(list(prefix), tag), retag(events, tag)
    user, customer = world.user_id.replace(TAG, tag), world.customer_id.replace(TAG, tag)
    if link_first:
        db.execute("SELECT public.link_stripe_customer(%s, %s)", (user, customer))
    for e in prefix_t:
        process(db, e)
    for i in order:
        assert process(db, events_t[i])["status"] in {"processed", "ignored", "stale", "pending", "duplicate"}
    state = world_state(db, user, customer)
    return json.loads(json.dumps(state, default=str).replace(tag, TAG))


SCENARIOS: dict[str, Callable[[StripeWorld], tuple[list[dict[str, Any]], list[dict[str, Any]]]]] = {
    # name -> (events delivered in order first, events to permute)
    "new subscription": lambda w: ([], w.new_subscription()),
    "renewal": lambda w: (w.new_subscription(), w.renewal()),
    "failed renewal": lambda w: (w.new_subscription(), w.failed_renewal()),
    "cancellation": lambda w: (w.new_subscription(), w.cancel_at_end() + w.cancel_now()),
}


@shapes
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_permutation_ends_in_the_in_order_state(db, shape, scenario) -> None:  # type: ignore[no-untyped-def]
    world = StripeWorld(api_version=shape)
    prefix, events = SCENARIOS[scenario](world)
    expected = play(db, world, events, list(range(len(events))), prefix=prefix)
    assert expected["events_not_done"] == 0
    for order in itertools.permutations(range(len(events))):
        assert play(db, world, events, list(order), prefix=prefix) == expected, order


@shapes
def test_every_permutation_with_the_customer_linked_first(db, shape) -> None:  # type: ignore[no-untyped-def]
    world = StripeWorld(api_version=shape)
    events = world.new_subscription()
    expected = play(db, world, events, list(range(len(events))))
    for order in itertools.permutations(range(len(events))):
        assert play(db, world, events, list(order), link_first=True) == expected, order


@shapes
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_whole_life_in_any_order_with_duplicates(db, shape, data) -> None:  # type: ignore[no-untyped-def]
    world = StripeWorld(api_version=shape)
    events = world.new_subscription() + world.renewal() + world.failed_renewal() + world.cancel_now()
    expected = play(db, world, events, list(range(len(events))))
    order = data.draw(st.permutations(range(len(events))), label="order")
    extra = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=6), label="redelivered")
    mixed = list(order)
    for pos, i in enumerate(extra):
        mixed.insert((pos * 7) % (len(mixed) + 1), i)
    got = play(db, world, events, mixed)
    assert got == expected
    assert got["subscriptions"][0]["status"] == "canceled" and got["balance"] == 60


# -- same-second ties ------------------------------------------------------


def _tie(db: psycopg.Connection[Any], shape: str, first: str, second: str) -> tuple[list[str], str]:
    w = StripeWorld(api_version=shape)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    w.status = "active"
    process(db, w.event("customer.subscription.created", w.subscription(), created=w.now - 10))
    a = w.event("customer.subscription.updated", w.subscription(status=first), created=w.now)
    b = w.event("customer.subscription.updated", w.subscription(status=second), created=w.now)
    statuses = [process(db, a)["status"], process(db, b)["status"]]
    final = db.execute("SELECT status FROM billingdb.subscriptions WHERE subscription_id = %s",
                       (w.subscription_id,)).fetchone()["status"]
    return statuses, final


@shapes
@pytest.mark.parametrize(("first", "second"), [("active", "canceled"), ("canceled", "active")])
def test_tie_forward_progress_wins(db, shape, first, second) -> None:  # type: ignore[no-untyped-def]
    # canceled is terminal: canceled -> active is refused, so canceled wins in either order.
    statuses, final = _tie(db, shape, first, second)
    assert final == "canceled"
    assert statuses == (["processed", "processed"] if first == "active" else ["processed", "stale"])


@shapes
def test_tie_incomplete_and_active(db, shape) -> None:  # type: ignore[no-untyped-def]
    for order in (("incomplete", "active"), ("active", "incomplete")):
        w = StripeWorld(api_version=shape)
        db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
        evs = {s: w.event("customer.subscription.created" if s == "incomplete" else "customer.subscription.updated",
                          w.subscription(status=s)) for s in order}
        assert evs["incomplete"]["created"] == evs["active"]["created"]
        statuses = [process(db, evs[s])["status"] for s in order]
        final = db.execute("SELECT status FROM billingdb.subscriptions WHERE subscription_id = %s",
                           (w.subscription_id,)).fetchone()["status"]
        assert final == "active", order
        assert statuses == (["processed", "processed"] if order[0] == "incomplete" else ["processed", "stale"])


@shapes
def test_tie_same_status_is_stale(db, shape) -> None:  # type: ignore[no-untyped-def]
    statuses, final = _tie(db, shape, "past_due", "past_due")
    assert statuses == ["processed", "stale"] and final == "past_due"


@shapes
def test_tie_between_two_allowed_changes_applies_in_arrival_order(db, shape) -> None:  # type: ignore[no-untyped-def]
    # active <-> past_due are both allowed: a same-second tie cannot tell progress; the later delivery applies.
    statuses, final = _tie(db, shape, "past_due", "active")
    assert statuses == ["processed", "processed"] and final == "active"


@shapes
def test_pending_events_apply_in_created_then_id_order(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    t = w.now
    # Three same-second updates and an older one, delivered newest first.
    older = w.event("customer.subscription.created", w.subscription(status="incomplete"), created=t - 5,
                    event_id="evt_900")
    tied = [w.event("customer.subscription.updated", w.subscription(status=s), created=t, event_id=i)
            for s, i in (("past_due", "evt_903"), ("active", "evt_901"), ("unpaid", "evt_902"))]
    for e in [*tied, older]:
        assert process(db, e)["status"] == "pending"
    done = process(db, w.event("checkout.session.completed", w.checkout_session()))
    applied = [p["event_id"] for p in done["detail"]["applied_pending"]]
    assert applied == ["evt_900", "evt_901", "evt_902", "evt_903"]
    # incomplete, then active, unpaid, past_due? unpaid -> past_due is not allowed: it stays unpaid.
    assert [p["status"] for p in done["detail"]["applied_pending"]] == ["processed", "processed", "processed", "stale"]
    final = db.execute("SELECT status FROM billingdb.subscriptions WHERE subscription_id = %s",
                       (w.subscription_id,)).fetchone()["status"]
    assert final == "unpaid"


# -- concurrency -----------------------------------------------------------


def _concurrently(connect, n: int, work: Callable[[psycopg.Connection[Any], int], Any]) -> list[Any]:  # type: ignore[no-untyped-def]
    conns = [connect() for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(conns[i], i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


@shapes
def test_eight_concurrent_deliveries_of_one_event_apply_it_once(db, connect, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    created, paid, *_ = w.new_subscription()
    for event in (created, paid):
        results = _concurrently(connect, 8, lambda c, i, e=event: process(c, e))
        assert Counter(r["status"] for r in results) == {"processed": 1, "duplicate": 7}
        assert event_row(db, event["id"])["retry_count"] == 0
    state = world_state(db, w.user_id, w.customer_id)
    assert state["balance"] == 30 and len(state["ledger"]) == 1
    assert db.execute("SELECT count(*) AS n FROM billingdb.activity_log WHERE activity_type = 'credits_allocated'"
                      ).fetchone()["n"] == 1


@shapes
def test_concurrent_paid_and_succeeded_allocate_once(db, connect, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    _created, paid, succeeded, *_ = w.new_subscription()
    results = _concurrently(connect, 8, lambda c, i: process(c, (paid, succeeded)[i % 2]))
    assert Counter(r["status"] for r in results) == {"processed": 2, "duplicate": 6}
    assert world_state(db, w.user_id, w.customer_id)["balance"] == 30


@shapes
def test_link_racing_the_events_leaves_nothing_pending(db, connect, shape) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        w = StripeWorld(api_version=shape)
        events = w.new_subscription()  # the checkout (the link) is last
        results = _concurrently(connect, len(events), lambda c, i: process(c, events[i]))
        assert {r["status"] for r in results} <= {"processed", "pending", "stale"}
        state = world_state(db, w.user_id, w.customer_id)
        assert state["events_not_done"] == 0, results
        assert state["subscriptions"][0]["status"] == "active" and state["balance"] == 30


@shapes
def test_concurrent_deliveries_of_an_event_without_customer_record_it_once(db, connect, shape) -> None:  # type: ignore[no-untyped-def]
    # No customer, so no customer lock: the event's own lock (_lock_stripe_event) serialises them.
    w = StripeWorld(api_version=shape)
    event = w.event("plan.created", {"id": "plan_123", "object": "plan"})
    results = _concurrently(connect, 8, lambda c, i: process(c, event))
    assert Counter(r["status"] for r in results) == {"ignored": 1, "duplicate": 7}
    assert db.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 1


@shapes
def test_a_row_written_behind_the_locks_undoes_the_delivery(db, connect, shape) -> None:  # type: ignore[no-untyped-def]
    # A writer that bypasses process_stripe_event (the owner inserting the row by hand) holds an
    # uncommitted row for the event; a delivery applies the event, then finds the row at its INSERT,
    # and rolls back with 40001 so that nothing it did remains.
    w = StripeWorld(api_version=shape)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    created, paid, *_ = w.new_subscription()
    assert process(db, created)["status"] == "processed"
    before = world_state(db, w.user_id, w.customer_id)
    intruder = connect(autocommit=False)
    intruder.execute(
        "INSERT INTO public.stripe_events (stripe_event_id, event_type, payload) VALUES (%s, %s, '{}')",
        (paid["id"], paid["type"]),
    )
    delivery = connect()
    outcome: list[BaseException] = []

    def deliver() -> None:
        try:
            process(delivery, paid)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            outcome.append(exc)

    t = threading.Thread(target=deliver)
    t.start()
    # The delivery waits at its INSERT for the intruder's row, which then commits.
    for _ in range(100):
        waiting = db.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
            (delivery.info.backend_pid,),
        ).fetchone()["n"]
        if waiting:
            break
        threading.Event().wait(0.05)
    assert waiting, "the delivery never waited for the intruder's row"
    intruder.commit()
    t.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.errors.SerializationFailure), outcome
    assert "recorded concurrently" in str(outcome[0])
    assert world_state(db, w.user_id, w.customer_id) == before
    assert event_row(db, paid["id"])["payload"] == {}
