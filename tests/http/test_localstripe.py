"""The integrator's flow against localstripe, a stateful Stripe emulator that sends signed webhooks:
a customer and a subscription created through Stripe's API with ``metadata.user_id``, no Checkout,
then canceled. billingdb links the user from the metadata and ends with the subscription canceled and
the plan's credits, every webhook answered 200 and none left pending.

localstripe (PyPI) speaks the 2017 API shape (``plan``, not ``price``), sends
``invoice.payment_succeeded`` and has no Checkout; its state is cleared first
(``DELETE /_config/data``) and billingdb's endpoint registered with ``POST /_config/webhooks/NAME``.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import stripe
from api_support import uvicorn_server

from billingdb import service, webhooks
from billingdb.testing import localstripe

SECRET = "whsec_localstripe_test_secret"
PLAN = "team_plan_localstripe"


def _wait_for(conn: psycopg.Connection[Any], what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            events = conn.execute("SELECT event_type, status, error FROM public.stripe_events ORDER BY id").fetchall()
            raise AssertionError(f"timed out waiting for {what}; events: {events}")
        time.sleep(0.3)


def test_a_subscription_created_through_the_api_links_from_metadata_and_cancels(
    localstripe_url: str, database_url: str, conn  # type: ignore[no-untyped-def]
) -> None:
    conn.execute("SELECT public.set_plan(%s, 'Team', 200)", (PLAN,))
    app = service.create_app(service.ServiceSettings(
        database_url=database_url, webhook=webhooks.WebhookConfig(secrets=(SECRET,)), pool_max=4,
    ))
    with uvicorn_server(app) as billingdb_url:
        localstripe.register_webhook(localstripe_url, "billingdb", f"{billingdb_url}{service.WEBHOOK_PATH}", SECRET)
        client = stripe.StripeClient("sk_test_localstripe", base_addresses={"api": localstripe_url},
                                     max_network_retries=0)
        product = client.v1.products.create(params={"name": "Team"})
        client.v1.plans.create(params={"id": PLAN, "product": product.id, "amount": 2999, "currency": "usd",
                                       "interval": "month"})
        card = client.v1.payment_methods.create(params={
            "type": "card", "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        })
        customer = client.v1.customers.create(params={
            "email": "ada@example.com", "metadata": {"user_id": "user_ls_ada"}, "payment_method": card.id,
            "invoice_settings": {"default_payment_method": card.id},
        })
        subscription = client.v1.subscriptions.create(params={
            "customer": customer.id, "items": [{"plan": PLAN}], "metadata": {"user_id": "user_ls_ada"},
        })

        def state() -> dict[str, Any]:
            return conn.execute("SELECT public.get_user_subscription_state('user_ls_ada') AS s").fetchone()["s"]

        _wait_for(conn, "the credits", lambda: state()["credits_balance"] == 200)
        assert state()["status"] == "active" and state()["plan"] == "Team"
        client.v1.subscriptions.cancel(subscription.id)
        _wait_for(conn, "the cancellation", lambda: state()["status"] == "canceled")

    final = state()
    assert final["credits_balance"] == 200 and final["subscription_id"] == subscription.id
    link = conn.execute("SELECT user_id FROM billingdb.stripe_customers WHERE stripe_customer_id = %s",
                        (customer.id,)).fetchone()
    assert link == {"user_id": "user_ls_ada"}
    statuses = {r["status"] for r in conn.execute("SELECT status FROM public.stripe_events")}
    assert "pending" not in statuses and "failed" not in statuses, statuses
    types = {r["event_type"] for r in conn.execute("SELECT event_type FROM public.stripe_events")}
    assert {"customer.created", "customer.subscription.created", "invoice.payment_succeeded",
            "customer.subscription.deleted"} <= types, types
