"""Stripe's newest snapshot always wins: a strictly newer subscription event applies whatever the
transitions table says; the table only breaks same-second ties.

The sequence a fault-injection run found (without faults too): while a subscription is still
`incomplete`, a newer `unpaid` snapshot was refused by the table and recorded `stale`, its
redeliveries were `duplicate`, and the user ended `past_due` (able to spend) where Stripe said
`unpaid`.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from events.event_helpers import process, setup_plans
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billingdb.testing.stripe import SHAPES, StripeWorld

STATUSES = ["incomplete", "trialing", "active", "past_due", "unpaid", "canceled", "paused", "incomplete_expired"]

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    setup_plans(conn)
    return conn


def _status(db: psycopg.Connection[Any], subscription_id: str) -> str:
    row = db.execute("SELECT status FROM billingdb.subscriptions WHERE subscription_id = %s",
                     (subscription_id,)).fetchone()
    return row["status"]


@shapes
def test_the_fault_injection_sequence_ends_in_stripes_newest_state(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape)
    checkout = w.new_subscription()[-1]  # checkout.session.completed: the link
    t = w.now
    created = w.event("customer.subscription.created", w.subscription(status="incomplete"), created=t)
    unpaid = w.event("customer.subscription.updated", w.subscription(status="unpaid"), created=t + 2)
    active = w.event("customer.subscription.updated", w.subscription(status="active"), created=t + 1)
    renewal = [e for e in w.renewal() if e["type"].startswith("invoice.")]
    past_due = w.event("customer.subscription.updated", w.subscription(status="past_due"), created=t + 3)
    for e in [checkout, created, unpaid, active, *renewal, past_due]:
        process(db, e)
    assert _status(db, w.subscription_id) == "past_due"
    # The newer unpaid snapshot applied, though the table has no incomplete -> unpaid: logged, not refused.
    unexpected = db.execute(
        "SELECT details FROM billingdb.activity_log WHERE activity_type = 'subscription_unexpected_transition'"
    ).fetchall()
    assert ("incomplete", "unpaid") in {(u["details"]["from_status"], u["details"]["to_status"]) for u in unexpected}
    # Redelivering the unpaid event is a duplicate, and it had been applied.
    assert process(db, unpaid)["status"] == "duplicate"

    # Stripe's last word is unpaid: the user may not spend.
    last = w.event("customer.subscription.updated", w.subscription(status="unpaid"), created=t + 4)
    assert process(db, last)["status"] == "processed"
    state = db.execute("SELECT public.get_user_subscription_state(%s) AS s", (w.user_id,)).fetchone()["s"]
    assert state["status"] == "unpaid" and state["can_use_credits"] is False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_life_cycle_in_any_order_ends_in_the_newest_snapshot(db, data) -> None:  # type: ignore[no-untyped-def]
    """Generated life cycles (statuses at strictly increasing times), shuffled, with duplicates."""
    w = StripeWorld(api_version=data.draw(st.sampled_from(SHAPES), label="shape"))
    db.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    statuses = data.draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=7), label="statuses")
    events = [
        w.event("customer.subscription.created" if i == 0 else "customer.subscription.updated",
                w.subscription(status=status), created=w.now + 10 * i)
        for i, status in enumerate(statuses)
    ]
    order = data.draw(st.permutations(range(len(events))), label="order")
    extra = data.draw(st.lists(st.integers(0, len(events) - 1), max_size=4), label="redelivered")
    for i in [*order, *extra]:
        assert process(db, events[i])["status"] in {"processed", "stale", "duplicate"}
    assert _status(db, w.subscription_id) == statuses[-1]
