"""POST /stripe/checkout/session: the request the stripe library sends, as a local stand-in records it.

The stand-in (tests/http/api_support.py) answers POST /v1/customers and POST
/v1/checkout/sessions like Stripe; the library is pointed at it with
StripeClient(base_addresses={"api": ...}).
"""

from __future__ import annotations

from typing import Any

import pytest
from api_support import (
    PRICE,
    RETIRED_PRICE,
    USER,
    StripeStandIn,
    api_settings,
    auth_config,
    make_app,
    make_subscriber,
    stripe_error,
)
from helpers import contents
from starlette.testclient import TestClient

from billingdb import stripe_api

BODY = {"price_id": PRICE, "success_url": "https://app.test/success?s={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://app.test/cancel"}
PATH = "/stripe/checkout/session"


def _linked(conn: Any, user_id: str = USER) -> str | None:
    row = conn.execute("SELECT stripe_customer_id FROM billingdb.stripe_customers WHERE user_id = %s",
                       (user_id,)).fetchone()
    return None if row is None else row["stripe_customer_id"]


def test_new_customer_then_subscription_checkout(api_client, api_db, stripe_api, signing_key) -> None:  # type: ignore[no-untyped-def]
    r = api_client.post(PATH, json=BODY, headers=signing_key.bearer(USER, email="ada@example.com"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["session_id"].startswith("cs_test_") and body["url"].startswith("https://checkout.stripe.com/")
    assert body["price_id"] == PRICE and body["plan"] == "Individual"
    assert stripe_api.paths() == ["POST /v1/customers", "POST /v1/checkout/sessions"]

    # The customer: email and metadata.user_id, with get_or_create_stripe_customer's idempotency key.
    cust = stripe_api.requests[0]
    assert cust.form == {"email": "ada@example.com", "metadata[user_id]": USER}
    assert cust.headers["idempotency-key"] == f"billingdb-customer-{USER}"
    assert cust.headers["authorization"] == "Bearer sk_test_standin"
    assert body["stripe_customer_id"] == "cus_standin1" == _linked(api_db)

    # The session: subscription mode, the customer, the price, who it is for.
    session = stripe_api.requests[1].form
    assert session["mode"] == "subscription"
    assert session["customer"] == "cus_standin1"
    assert session["client_reference_id"] == USER
    assert session["metadata[user_id]"] == USER
    assert session["subscription_data[metadata][user_id]"] == USER
    assert session["line_items[0][price]"] == PRICE and session["line_items[0][quantity]"] == "1"
    assert session["success_url"] == BODY["success_url"] and session["cancel_url"] == BODY["cancel_url"]
    assert "idempotency-key" not in stripe_api.requests[1].headers or \
        not stripe_api.requests[1].headers["idempotency-key"].startswith("billingdb-checkout-")


def test_a_linked_customer_is_reused(api_client, api_db, stripe_api, signing_key) -> None:  # type: ignore[no-untyped-def]
    make_subscriber(api_db, credits=0)  # linked to cus_user_test
    r = api_client.post(PATH, json=BODY, headers=signing_key.bearer(USER))
    assert r.status_code == 200, r.text
    assert stripe_api.paths() == ["POST /v1/checkout/sessions"]
    assert stripe_api.requests[0].form["customer"] == f"cus_{USER}" == r.json()["stripe_customer_id"]
    # A second checkout creates no customer either.
    assert api_client.post(PATH, json=BODY, headers=signing_key.bearer(USER)).status_code == 200
    assert stripe_api.paths().count("POST /v1/customers") == 0


def test_without_email_claim_no_email_is_sent(api_client, api_db, stripe_api, signing_key) -> None:  # type: ignore[no-untyped-def]
    for email in (None, "not-an-email"):
        stripe_api.requests.clear()
        user = f"user_noemail_{email is None}"
        r = api_client.post(PATH, json=BODY, headers=signing_key.bearer(user, email=email))
        assert r.status_code == 200, r.text
        assert stripe_api.requests[0].form == {"metadata[user_id]": user}


def test_idempotency_key_reaches_stripe(api_client, api_db, stripe_api, signing_key) -> None:  # type: ignore[no-untyped-def]
    headers = {**signing_key.bearer(USER), "Idempotency-Key": "checkout-7"}
    assert api_client.post(PATH, json=BODY, headers=headers).status_code == 200
    assert stripe_api.requests[-1].headers["idempotency-key"] == f"billingdb-checkout-{USER}-checkout-7"


@pytest.mark.parametrize(
    ("price", "code"),
    [("price_not_a_plan", "unknown_price"), (RETIRED_PRICE, "inactive_plan")],
)
def test_price_must_be_an_active_plan(api_client, api_db, stripe_api, signing_key, price, code) -> None:  # type: ignore[no-untyped-def]
    before = contents(api_db)
    r = api_client.post(PATH, json={**BODY, "price_id": price}, headers=signing_key.bearer(USER))
    assert r.status_code == 400 and r.json()["error"] == code and price in r.json()["message"]
    assert stripe_api.requests == [] and contents(api_db) == before


BAD_BODIES = [
    pytest.param(None, id="no body"),
    pytest.param([BODY], id="array"),
    pytest.param({k: v for k, v in BODY.items() if k != "price_id"}, id="no price"),
    pytest.param({**BODY, "price_id": "  "}, id="blank price"),
    pytest.param({**BODY, "price_id": 42}, id="price not a string"),
    pytest.param({k: v for k, v in BODY.items() if k != "success_url"}, id="no success_url"),
    pytest.param({**BODY, "success_url": "/relative"}, id="relative url"),
    pytest.param({**BODY, "cancel_url": "ftp://app.test/x"}, id="ftp url"),
    pytest.param({**BODY, "cancel_url": "https://app.test/a b"}, id="space in url"),
    pytest.param({**BODY, "cancel_url": "https://" + "a" * 3000}, id="url too long"),
    pytest.param({**BODY, "cancel_url": "http://[::1"}, id="broken url"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_bodies_are_400(api_client, api_db, stripe_api, signing_key, body) -> None:  # type: ignore[no-untyped-def]
    before = contents(api_db)
    r = api_client.post(PATH, json=body, headers=signing_key.bearer(USER))
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    assert stripe_api.requests == [] and contents(api_db) == before


def test_body_not_json_and_too_large(api_client, api_db, stripe_api, signing_key) -> None:  # type: ignore[no-untyped-def]
    headers = {**signing_key.bearer(USER), "content-type": "application/json"}
    r = api_client.post(PATH, content=b"{not json", headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = api_client.post(PATH, content=b" " * (65 * 1024), headers=headers)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert stripe_api.requests == []


# -- Stripe fails ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        stripe_error(500, "Something went wrong on Stripe's end."),
        stripe_error(400, "Invalid email address: x", "invalid_request_error", "email_invalid"),
        stripe_error(401, "Invalid API Key provided: sk_test_****", "invalid_request_error"),
        stripe_error(429, "Too many requests", "invalid_request_error", "rate_limit"),
    ],
    ids=["500", "400", "401", "429"],
)

def test_customer_creation_fails_502_and_nothing_linked(api_client, api_db, stripe_api, signing_key, failure) -> None:  # type: ignore[no-untyped-def]
    stripe_api.fail["/v1/customers"] = failure
    r = api_client.post(PATH, json=BODY, headers=signing_key.bearer(USER))
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["error"] == "stripe_error" and body["stage"] == "customer"
    assert body["message"].startswith("Stripe failed while creating the customer: ")
    assert failure[1]["error"]["message"] in body["message"]
    assert body["stripe_status"] == failure[0]
    assert stripe_api.paths() == ["POST /v1/customers"]  # no session without a customer
    assert _linked(api_db) is None  # the mapping row exists (get_or_create), no customer linked


def test_session_creation_fails_502(api_client, api_db, stripe_api, signing_key) -> None:  # type: ignore[no-untyped-def]
    stripe_api.fail["/v1/checkout/sessions"] = stripe_error(
        400, "No such price: 'price_api_individual'", "invalid_request_error", "resource_missing"
    )
    r = api_client.post(PATH, json=BODY, headers=signing_key.bearer(USER))
    assert r.status_code == 502 and r.json()["stage"] == "checkout session"
    assert "No such price" in r.json()["message"] and r.json()["stripe_code"] == "resource_missing"
    # The customer was created and linked: the retry reuses it.
    assert _linked(api_db) == "cus_standin1"
    del stripe_api.fail["/v1/checkout/sessions"]
    r = api_client.post(PATH, json=BODY, headers=signing_key.bearer(USER))
    assert r.status_code == 200 and stripe_api.paths().count("POST /v1/customers") == 1


def test_stripe_unreachable_is_502(database_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    with StripeStandIn() as gone:
        url = gone.url  # closed again: connections are refused
    with TestClient(make_app(database_url, api_settings(auth_config(signing_key), url))) as client:
        r = client.post(PATH, json=BODY, headers=signing_key.bearer(USER))
    assert r.status_code == 502 and r.json()["stage"] == "customer", r.text
    assert _linked(api_db) is None


def test_stripe_not_configured_is_503(database_url, api_db, signing_key) -> None:  # type: ignore[no-untyped-def]
    with TestClient(make_app(database_url, api_settings(auth_config(signing_key), None))) as client:
        r = client.post(PATH, json=BODY, headers=signing_key.bearer(USER))
        assert r.status_code == 503 and r.json()["error"] == "stripe_not_configured"
        # Bad input is still refused first.
        assert client.post(PATH, json={}, headers=signing_key.bearer(USER)).status_code == 400


def test_stripe_config_from_env() -> None:
    assert stripe_api.StripeConfig.from_env({}) is None
    cfg = stripe_api.StripeConfig.from_env({"STRIPE_SECRET_KEY": "sk_test_1",
                                          "BILLINGDB_STRIPE_API_BASE": "http://127.0.0.1:12111"})
    assert cfg is not None and cfg.api_key == "sk_test_1" and cfg.api_base == "http://127.0.0.1:12111"
    assert stripe_api.StripeConfig.from_env({"STRIPE_SECRET_KEY": "sk_live_2"}).api_base is None  # type: ignore[union-attr]
