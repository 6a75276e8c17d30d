"""Stripe Checkout for the application API: ``POST /stripe/checkout/session``.

The database decides, Stripe is called through the official ``stripe`` library:

1. the price must be an active plan (``billingdb.plans``), else :class:`CheckoutRefused` (400);
2. ``get_or_create_stripe_customer`` gives the user's Stripe customer; when none
   is linked yet, the customer is created in Stripe with the parameters the
   function returns (email, ``metadata.user_id`` and its ``idempotency_key``, so
   that concurrent or retried requests create one customer) and linked with
   ``link_stripe_customer``;
3. a Checkout Session in ``subscription`` mode for that customer and price, with
   ``client_reference_id`` and ``metadata.user_id`` (also on the subscription,
   so that its webhooks name the user).

A Stripe failure (network, 4xx, 5xx) is :class:`StripeFailure` (502) with
Stripe's own message; when it happens while creating the customer, nothing is
linked. No database connection is held while Stripe is called.

``StripeConfig.api_base`` points the library elsewhere (a stand-in server in
the tests, or stripe-mock): ``StripeClient(base_addresses={"api": ...})``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import stripe

from billingdb import db
from billingdb.client import BillingClient

__all__ = [
    "CheckoutRefused",
    "CheckoutRequest",
    "StripeFailure",
    "create_checkout_session",
    "parse_checkout_request",
]

ConnFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]

# The email rule of get_or_create_stripe_customer (a claim that breaks it is not passed).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_URL = 2048


class CheckoutRefused(Exception):
    """The request cannot become a Checkout Session (400): bad input, unknown or inactive price."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StripeFailure(Exception):
    """Stripe failed or refused (502); ``stage`` says which call."""

    def __init__(self, stage: str, exc: stripe.StripeError) -> None:
        detail = exc.user_message or str(exc) or type(exc).__name__
        super().__init__(f"Stripe failed while creating the {stage}: {detail}")
        self.stage = stage
        self.stripe_code = exc.code
        self.http_status = exc.http_status
        self.request_id = getattr(exc, "request_id", None)


@dataclass(frozen=True)
class CheckoutRequest:
    price_id: str
    success_url: str
    cancel_url: str


def _url(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CheckoutRefused("invalid_request", f"{name} must be a non-empty string")
    if len(value) > MAX_URL:
        raise CheckoutRefused("invalid_request", f"{name} is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise CheckoutRefused("invalid_request", f"{name} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise CheckoutRefused("invalid_request", f"{name} must be an absolute http(s) URL")
    return value


def parse_checkout_request(body: Any) -> CheckoutRequest:
    """Validate ``{price_id, success_url, cancel_url}``; :class:`CheckoutRefused` when it is not that."""
    if not isinstance(body, dict):
        raise CheckoutRefused("invalid_request", "the body must be a JSON object")
    price_id = body.get("price_id")
    if not isinstance(price_id, str) or not price_id.strip() or len(price_id) > 255:
        raise CheckoutRefused("invalid_request", "price_id must be a non-empty string (a Stripe price id)")
    return CheckoutRequest(price_id.strip(), _url(body, "success_url"), _url(body, "cancel_url"))


def _stripe_id(obj: Any) -> str:
    value = obj["id"] if isinstance(obj, Mapping) else getattr(obj, "id", None)
    if not isinstance(value, str):
        raise StripeFailure("response", stripe.APIError(f"the response has no id: {obj!r}"[:200]))
    return value


def create_checkout_session(
    connection: ConnFactory,
    stripe_client: stripe.StripeClient,
    user_id: str,
    request: CheckoutRequest,
    *,
    email: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Create the user's Checkout Session; returns ``{session_id, url, stripe_customer_id, price_id, plan}``."""
    if email is not None and not _EMAIL.match(email):
        email = None

    # 1-2. The plan and the customer mapping (one short use of a connection).
    with connection() as conn:
        plan = db.query(conn, "get_plan", {"price_id": request.price_id})
        if plan is None:
            raise CheckoutRefused("unknown_price", f"price {request.price_id} is not a plan")
        if not plan["active"]:
            raise CheckoutRefused("inactive_plan", f"the plan of price {request.price_id} is not active")
        link = BillingClient(conn).get_or_create_stripe_customer(user_id, email)

    customer_id = link.stripe_customer_id
    if customer_id is None:
        params = dict(link.customer_params or {})
        key = params.pop("idempotency_key", None) or f"billingdb-customer-{user_id}"
        create: dict[str, Any] = {"metadata": params.get("metadata") or {"user_id": user_id}}
        if params.get("email"):
            create["email"] = params["email"]
        try:
            customer = stripe_client.v1.customers.create(params=create, options={"idempotency_key": key})
        except stripe.StripeError as exc:
            raise StripeFailure("customer", exc) from exc
        customer_id = _stripe_id(customer)
        with connection() as conn:
            BillingClient(conn).link_stripe_customer(user_id, customer_id)

    # 3. The Checkout Session.
    session_params: dict[str, Any] = {
        "mode": "subscription",
        "customer": customer_id,
        "line_items": [{"price": request.price_id, "quantity": 1}],
        "success_url": request.success_url,
        "cancel_url": request.cancel_url,
        "client_reference_id": user_id,
        "metadata": {"user_id": user_id},
        "subscription_data": {"metadata": {"user_id": user_id}},
    }
    options: dict[str, Any] = {}
    if idempotency_key:
        options["idempotency_key"] = f"billingdb-checkout-{user_id}-{idempotency_key}"
    try:
        session = stripe_client.v1.checkout.sessions.create(params=session_params, options=options)  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        raise StripeFailure("checkout session", exc) from exc
    url = session["url"] if isinstance(session, Mapping) else getattr(session, "url", None)
    return {
        "session_id": _stripe_id(session),
        "url": url,
        "stripe_customer_id": customer_id,
        "price_id": request.price_id,
        "plan": plan["name"],
    }
