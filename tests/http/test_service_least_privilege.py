"""billingdb serve needs no more than service_role: connected as a LOGIN member of it (what a
deployment on Supabase's service key does), every route works through the entry points alone."""

from __future__ import annotations

import psycopg
from api_support import (
    PRICE,
    USER,
    WEBHOOK_SECRET,
    StripeStandIn,
    api_settings,
    auth_config,
    make_app,
    make_subscriber,
)
from events.event_helpers import setup_plans
from helpers import balance
from starlette.testclient import TestClient

from billingdb.testing.stripe import StripeWorld, encode, sign


def test_every_route_works_as_a_service_role_login(service_login_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    setup_plans(api_db)
    make_subscriber(api_db, credits=10)
    # The connection is really not the owner: it may not read a private table.
    with psycopg.connect(service_login_url) as c:
        try:
            c.execute("SELECT * FROM billingdb.plans")
            raise AssertionError("a service_role login read billingdb.plans")
        except psycopg.errors.InsufficientPrivilege:
            pass
    with StripeStandIn() as stripe_api:
        app = make_app(service_login_url, api_settings(auth_config(signing_key), stripe_api.url))
        with TestClient(app) as client:
            state = client.get("/stripe/subscription/state", headers=signing_key.bearer(USER))
            assert state.status_code == 200 and state.json()["credits_balance"] == 10, state.text
            story = client.post("/stories/generate-with-credits", headers=signing_key.bearer(USER),
                                json={"title": "T", "prompt": "p", "includeImage": False})
            assert story.status_code == 200, story.text
            checkout = client.post("/stripe/checkout/session", headers=signing_key.bearer("user_new"), json={
                "price_id": PRICE, "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no"})
            assert checkout.status_code == 200, checkout.text
            w = StripeWorld()
            for event in w.new_subscription():
                body = encode(event)
                r = client.post("/stripe/webhook", content=body,
                                headers={"content-type": "application/json", "stripe-signature": sign(body, WEBHOOK_SECRET)})
                assert r.status_code == 200, r.text
    assert balance(api_db, USER) == 9
    assert balance(api_db, w.user_id) == 30
