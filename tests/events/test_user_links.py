"""User links from where Stripe carries them, without Checkout: the customer's metadata, the
subscription's, an invoice's subscription details (both API shapes). The metadata key is a setting.
A link that contradicts an existing one fails the event (BD004) and relinks nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from events.event_helpers import event_row, process, setup_plans, table_contents

from billingdb.testing.stripe import SHAPES, StripeWorld

shapes = pytest.mark.parametrize("shape", SHAPES, ids=["pre-basil", "basil"])


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    setup_plans(conn)
    return conn


def _linked_user(db: psycopg.Connection[Any], customer_id: str) -> str | None:
    row = db.execute("SELECT user_id FROM billingdb.stripe_customers WHERE stripe_customer_id = %s",
                     (customer_id,)).fetchone()
    return None if row is None else row["user_id"]


def _customer(w: StripeWorld, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"id": w.customer_id, "object": "customer", "email": "ada@example.com", "metadata": metadata}


def _balance(db: psycopg.Connection[Any], user_id: str) -> int | None:
    row = db.execute("SELECT balance FROM billingdb.credit_balances WHERE user_id = %s", (user_id,)).fetchone()
    return None if row is None else row["balance"]


@shapes
def test_the_subscription_metadata_links_without_checkout(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape, user_in_metadata=True)
    events = [e for e in w.new_subscription() if e["type"] != "checkout.session.completed"]
    statuses = [process(db, e)["status"] for e in events]
    assert "pending" not in statuses, statuses
    assert _linked_user(db, w.customer_id) == w.user_id
    assert _balance(db, w.user_id) == 30


@shapes
def test_an_invoice_links_through_its_subscription_details(db, shape) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(api_version=shape, user_in_metadata=True)
    paid = next(e for e in w.new_subscription() if e["type"] == "invoice.paid")
    assert process(db, paid)["status"] == "processed"
    assert _linked_user(db, w.customer_id) == w.user_id and _balance(db, w.user_id) == 30


def test_a_customer_event_links_and_applies_the_pending_ones(db) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld()  # the subscription names no user: its events wait for the customer's link
    events = [e for e in w.new_subscription() if e["type"] != "checkout.session.completed"]
    assert {process(db, e)["status"] for e in events} == {"pending"}
    created = process(db, w.event("customer.created", _customer(w, {"user_id": w.user_id})))
    assert created["status"] == "processed" and created["detail"]["action"] == "link"
    assert _linked_user(db, w.customer_id) == w.user_id
    assert _balance(db, w.user_id) == 30
    assert all(event_row(db, e["id"])["status"] == "processed" for e in events if e["type"] != "invoice.created")


def test_a_customer_without_a_user_is_ignored(db) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld()
    r = process(db, w.event("customer.created", _customer(w, {})))
    assert r["status"] == "ignored" and "names no user" in r["detail"]["reason"]
    assert _linked_user(db, w.customer_id) is None


def test_a_contradicting_link_fails_the_event_and_relinks_nothing(db) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld(user_in_metadata=True)
    db.execute("SELECT public.link_stripe_customer(%s, %s)", ("someone_else", w.customer_id))
    before = table_contents(db, ["stripe_customers", "subscriptions", "credit_transactions"])
    created = next(e for e in w.new_subscription() if e["type"] == "customer.subscription.created")
    r = process(db, created)
    assert r["status"] == "failed" and "BD004" in event_row(db, created["id"])["error"]
    assert table_contents(db, ["stripe_customers", "subscriptions", "credit_transactions"]) == before
    assert _linked_user(db, w.customer_id) == "someone_else"


def test_the_metadata_key_is_a_setting(db) -> None:  # type: ignore[no-untyped-def]
    db.execute("SELECT public.set_billing_setting('user_id_metadata_key', 'clerk_user_id')")
    w = StripeWorld()
    ignored = process(db, w.event("customer.created", _customer(w, {"user_id": w.user_id})))
    assert ignored["status"] == "ignored" and _linked_user(db, w.customer_id) is None
    linked = process(db, w.event("customer.updated", _customer(w, {"clerk_user_id": w.user_id})))
    assert linked["status"] == "processed" and _linked_user(db, w.customer_id) == w.user_id


@pytest.mark.parametrize(
    ("value", "status"),
    [("", "ignored"), ("   ", "ignored"), ("u" * 256, "failed"), (12345, "failed"), ({"id": "u1"}, "failed")],
    ids=["empty", "blank", "too long", "a number", "an object"],
)
def test_a_bad_metadata_user_id(db, value, status) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld()
    before = table_contents(db, ["stripe_customers", "subscriptions", "credit_transactions", "activity_log"])
    event = w.event("customer.created", _customer(w, {"user_id": value}))
    r = process(db, event)
    assert r["status"] == status, r
    if status == "failed":
        error = event_row(db, event["id"])["error"]
        assert error.startswith("[22023]") and "customer.metadata.user_id is not a usable user id" in error
    # Nothing but the event's own row changed.
    assert table_contents(db, ["stripe_customers", "subscriptions", "credit_transactions", "activity_log"]) == before
