"""Sample Stripe webhook events, built from Stripe's own fixture objects, in both API shapes.

Used by the tests (``tests/events/stripe_payloads.py``), ``make demo`` and the
benchmarks: they need the same realistic, signed events.

``samples/stripe_objects.json`` is a copy of billing objects from Stripe's
OpenAPI ``fixtures3.json`` (github.com/stripe/openapi, MIT licence). Every object here starts as a deep copy of
one of them and only the fields a scenario needs are changed, so the events
carry the real shape with all its noise.

Two API shapes:

- ``PRE_BASIL`` (``2024-06-20``): ``subscription.current_period_start/end``,
  ``invoice.subscription``, ``line.price`` (an expanded price object);
- ``BASIL`` (``2025-03-31.basil`` and later): ``subscription.items.data[]
  .current_period_start/end``, ``invoice.parent.subscription_details
  .subscription``, ``line.pricing.price_details.price`` (a price id).

:class:`StripeWorld` plays one customer's life (checkout, renewals, failed
payments, cancellation) and returns the events Stripe would send;
:func:`sign` makes the ``Stripe-Signature`` header with the ``stripe``
library's own helper.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import stripe

__all__ = [
    "BASIL",
    "PRE_BASIL",
    "SHAPES",
    "SECRET",
    "StripeWorld",
    "DAY",
    "MONTH",
    "encode",
    "fixture",
    "is_basil",
    "price_object",
    "sign",
    "stripe_id",
]

PRE_BASIL = "2024-06-20"
BASIL = "2025-03-31.basil"
SHAPES = (PRE_BASIL, BASIL)
#: The endpoint secret the samples are signed with by default (tests and the demo only).
SECRET = "whsec_test_billingdb_0123456789abcdef"

DAY = 86_400
MONTH = 30 * DAY

_FIXTURES = Path(__file__).with_name("samples") / "stripe_objects.json"
_serial = itertools.count(1)
#: Differs per process, so that samples made by two runs (two demos) never share an id.
_RUN = secrets.token_hex(3)


@cache
def _resources() -> dict[str, Any]:
    return json.loads(_FIXTURES.read_text())["resources"]


def fixture(name: str) -> dict[str, Any]:
    """A deep copy of one of Stripe's fixture objects (``subscription``, ``invoice``, ...)."""
    return copy.deepcopy(_resources()[name])


def is_basil(api_version: str) -> bool:
    return api_version >= "2025-03-31"


def stripe_id(prefix: str, tag: str = "") -> str:
    """A Stripe-looking id, unique across runs and ordered by creation within one (``evt_3fa2c1000012T...``)."""
    return f"{prefix}_{_RUN}{next(_serial):06d}{tag}TestBillingdb"


def encode(event: dict[str, Any]) -> bytes:
    """The body Stripe would POST (compact JSON, UTF-8)."""
    return json.dumps(event, separators=(",", ":")).encode()


def sign(body: bytes | str, secret: str = SECRET, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` for this body, made by the stripe library (HMAC fallback for old versions)."""
    text = body.decode() if isinstance(body, bytes) else body
    ts = int(time.time()) if timestamp is None else timestamp
    helper = getattr(stripe.WebhookSignature, "generate_signature_header", None)
    if helper is not None:
        return str(helper(text, secret, timestamp=ts))
    # Same computation as stripe.WebhookSignature._compute_signature, as Stripe documents it.
    mac = hmac.new(secret.encode(), f"{ts}.{text}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def price_object(price_id: str, credits: int | None = None, amount: int = 999) -> dict[str, Any]:
    """Stripe's price fixture with our id, amount and (optionally) ``metadata.credits``."""
    price = fixture("price")
    price["id"] = price_id
    price["unit_amount"] = amount
    price["unit_amount_decimal"] = str(amount)
    price["transform_quantity"] = None
    price["metadata"] = {} if credits is None else {"credits": str(credits)}
    return price


@dataclass
class StripeWorld:
    """One customer's subscription as Stripe would report it, in one API shape.

    Each method returns complete events (envelope + ``data.object``); the clock
    (``now``, unix seconds) only moves when a scenario says so, and each event
    takes the clock's current value as ``created`` unless given one.
    """

    api_version: str = BASIL
    user_id: str = field(default_factory=lambda: stripe_id("user"))
    customer_id: str = field(default_factory=lambda: stripe_id("cus"))
    subscription_id: str = field(default_factory=lambda: stripe_id("sub"))
    price_id: str = "price_individual_test"
    price_credits_metadata: int | None = None
    now: int = field(default_factory=lambda: int(time.time()) - 3600)
    status: str = "incomplete"
    period_start: int = 0
    period_end: int = 0
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    livemode: bool = False
    #: Whether the subscription's metadata (and so its invoices' subscription_details) carries the user id,
    #: as billingdb's checkout route sets it. Off by default: the seed's scenarios link through Checkout.
    user_in_metadata: bool = False

    def __post_init__(self) -> None:
        if not self.period_start:
            self.period_start = self.now
            self.period_end = self.now + MONTH

    # -- objects --------------------------------------------------------

    def _subscription_metadata(self) -> dict[str, str]:
        """The subscription's metadata (copied onto its invoices): the user, and credits when the price has none."""
        meta = {"user_id": self.user_id} if self.user_in_metadata else {}
        if self.price_credits_metadata is not None:
            meta["credits"] = str(self.price_credits_metadata)
        return meta

    @property
    def basil(self) -> bool:
        return is_basil(self.api_version)

    def tick(self, seconds: int = 1) -> int:
        self.now += seconds
        return self.now

    def subscription(self, **overrides: Any) -> dict[str, Any]:
        """The subscription object in this world's shape, with the world's current state."""
        sub = fixture("subscription")
        item = sub["items"]["data"][0]
        sub.update(
            id=self.subscription_id,
            customer=self.customer_id,
            status=self.status,
            livemode=self.livemode,
            created=self.period_start,
            start_date=self.period_start,
            billing_cycle_anchor=self.period_start,
            cancel_at_period_end=self.cancel_at_period_end,
            cancel_at=self.period_end if self.cancel_at_period_end else None,
            canceled_at=self.canceled_at,
            ended_at=self.canceled_at if self.status == "canceled" else None,
            trial_start=None,
            trial_end=None,
            latest_invoice=None,
            pending_update=None,
            pause_collection=None,
            metadata=self._subscription_metadata(),
        )
        sub["items"]["url"] = f"/v1/subscription_items?subscription={self.subscription_id}"
        item["id"] = stripe_id("si")
        item["subscription"] = self.subscription_id
        item["price"] = price_object(self.price_id, self.price_credits_metadata)
        item["plan"]["id"] = self.price_id
        if self.basil:
            item["current_period_start"] = self.period_start
            item["current_period_end"] = self.period_end
            sub.pop("current_period_start", None)
            sub.pop("current_period_end", None)
        else:
            item.pop("current_period_start", None)
            item.pop("current_period_end", None)
            sub["current_period_start"] = self.period_start
            sub["current_period_end"] = self.period_end
        sub.update(overrides)
        return sub

    def invoice(self, billing_reason: str, *, paid: bool = True, invoice_id: str | None = None,
                price_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """An invoice for the current period, in this world's shape."""
        inv = fixture("invoice")
        price = price_id or self.price_id
        invoice_id = invoice_id or stripe_id("in")
        amount = 999
        inv.update(
            id=invoice_id,
            customer=self.customer_id,
            billing_reason=billing_reason,
            livemode=self.livemode,
            created=self.now,
            period_start=self.period_start,
            period_end=self.period_end,
            amount_due=amount,
            amount_paid=amount if paid else 0,
            amount_remaining=0 if paid else amount,
            amount_overpaid=0,
            attempted=True,
            attempt_count=1,
            status="paid" if paid else "open",
            subtotal=amount,
            total=amount,
            last_finalization_error=None,
            from_invoice=None,
            metadata={},
        )
        line = inv["lines"]["data"][0]
        line.update(
            id=stripe_id("il"),
            invoice=invoice_id,
            amount=amount,
            description=f"1 x {price} (at $9.99 / month)",
            period={"start": self.period_start, "end": self.period_end},
            subtotal=amount,
        )
        inv["lines"]["url"] = f"/v1/invoices/{invoice_id}/lines"
        # How it was paid: the charge and payment intent (before basil), the invoice's payments (since).
        charge_id, payment_intent_id = self.payment_ids(invoice_id)
        if not self.basil:
            # Before basil the subscription's metadata is copied onto the invoice's subscription_details.
            inv["subscription_details"] = {"metadata": self._subscription_metadata()}
            inv["charge"] = charge_id if paid else None
            inv["payment_intent"] = payment_intent_id
        else:
            payment = fixture("invoice_payment")
            payment.update(id=stripe_id("inpay"), invoice=invoice_id, amount_paid=amount if paid else None,
                           amount_requested=amount, currency="usd", livemode=self.livemode,
                           status="paid" if paid else "open", created=self.now,
                           payment={"type": "payment_intent", "payment_intent": payment_intent_id})
            inv["payments"] = {"object": "list", "data": [payment], "has_more": False,
                               "url": f"/v1/invoices/{invoice_id}/payments"}
        if self.basil:
            inv.pop("subscription", None)
            inv["parent"] = {
                "quote_details": None,
                "subscription_details": {"metadata": self._subscription_metadata(), "subscription": self.subscription_id},
                "type": "subscription_details",
            }
            line.pop("price", None)
            line["subscription"] = None
            line["parent"] = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": self.subscription_id,
                    "subscription_item": stripe_id("si"),
                },
                "type": "subscription_item_details",
            }
            line["pricing"] = {
                "price_details": {"price": price, "product": "prod_QXg1hqf4jFNsqG"},
                "type": "price_details",
                "unit_amount_decimal": str(amount),
            }
        else:
            inv.pop("parent", None)
            inv["subscription"] = self.subscription_id
            line.pop("parent", None)
            line.pop("pricing", None)
            line["price"] = price_object(price, self.price_credits_metadata)
            line["proration"] = False
            line["subscription"] = self.subscription_id
            line["type"] = "subscription"
        inv.update(overrides)
        return inv

    @staticmethod
    def payment_ids(invoice_id: str) -> tuple[str, str]:
        """The charge and payment intent that pay an invoice (derived from its id: stable per invoice)."""
        tail = invoice_id.split("_", 1)[1]
        return f"ch_{tail}", f"pi_{tail}"

    def charge(self, invoice: dict[str, Any], *, amount_refunded: int = 0) -> dict[str, Any]:
        """The charge that paid ``invoice`` (no Stripe fixture: the documented fields billingdb reads).

        Before basil a charge names its invoice; since, only its payment intent does."""
        charge_id, payment_intent_id = self.payment_ids(invoice["id"])
        charge: dict[str, Any] = {
            "id": charge_id, "object": "charge", "amount": invoice["amount_paid"], "amount_captured":
            invoice["amount_paid"], "amount_refunded": amount_refunded, "currency": "usd",
            "customer": self.customer_id, "payment_intent": payment_intent_id, "paid": True,
            "refunded": amount_refunded == invoice["amount_paid"], "status": "succeeded", "livemode": self.livemode,
            "created": self.now, "metadata": {},
        }
        if not self.basil:
            charge["invoice"] = invoice["id"]
        return charge

    def dispute(self, invoice: dict[str, Any], *, status: str = "needs_response",
                dispute_id: str | None = None) -> dict[str, Any]:
        """A dispute of the charge that paid ``invoice`` (the documented fields billingdb reads)."""
        charge_id, payment_intent_id = self.payment_ids(invoice["id"])
        return {
            "id": dispute_id or stripe_id("dp"), "object": "dispute", "amount": invoice["amount_paid"],
            "charge": charge_id, "payment_intent": payment_intent_id, "currency": "usd", "reason": "fraudulent",
            "status": status, "is_charge_refundable": False, "livemode": self.livemode, "created": self.now,
            "metadata": {},
        }

    def checkout_session(self, *, client_reference_id: str | None = "__user__", **overrides: Any) -> dict[str, Any]:
        """A completed Checkout Session in subscription mode for this user."""
        cs = fixture("checkout.session")
        session_id = stripe_id("cs_test")
        cs.update(
            id=session_id,
            mode="subscription",
            status="complete",
            payment_status="paid",
            customer=self.customer_id,
            subscription=self.subscription_id,
            client_reference_id=self.user_id if client_reference_id == "__user__" else client_reference_id,
            metadata={"user_id": self.user_id},
            livemode=self.livemode,
            created=self.now,
            payment_intent=None,
            url=None,
        )
        cs.update(overrides)
        return cs

    def event(self, event_type: str, obj: dict[str, Any], *, created: int | None = None,
              previous_attributes: dict[str, Any] | None = None, event_id: str | None = None) -> dict[str, Any]:
        """The envelope around ``obj``, built on Stripe's event fixture."""
        evt = fixture("event")
        evt.update(
            id=event_id or stripe_id("evt"),
            type=event_type,
            created=self.now if created is None else created,
            api_version=self.api_version,
            livemode=self.livemode,
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
        )
        evt["data"] = {"object": copy.deepcopy(obj)}
        if previous_attributes is not None:
            evt["data"]["previous_attributes"] = previous_attributes
        return evt

    # -- the seed's scenarios -------------------------------------------

    def new_subscription(self) -> list[dict[str, Any]]:
        """Scenario 1: Checkout creates an incomplete subscription, the first invoice is paid, it turns active.

        Stripe sends these in any order; ``created`` ties within one second are normal.
        """
        events = [self.event("customer.subscription.created", self.subscription(status="incomplete"))]
        self.tick()
        inv = self.invoice("subscription_create")
        events.append(self.event("invoice.paid", inv))
        events.append(self.event("invoice.payment_succeeded", inv))
        self.status = "active"
        events.append(self.event("customer.subscription.updated", self.subscription(),
                                 previous_attributes={"status": "incomplete"}))
        events.append(self.event("checkout.session.completed", self.checkout_session()))
        return events

    def _next_period(self) -> dict[str, Any]:
        """The period rolls over: the customer.subscription.updated that says so, with the previous period."""
        previous = {"current_period_start": self.period_start, "current_period_end": self.period_end}
        self.now = self.period_end
        self.period_start, self.period_end = self.period_end, self.period_end + MONTH
        return self.event("customer.subscription.updated", self.subscription(), previous_attributes=previous)

    def renewal(self) -> list[dict[str, Any]]:
        """Scenario 2: the period rolls over and the renewal invoice is paid."""
        events = [self._next_period()]
        inv = self.invoice("subscription_cycle", paid=False, status="draft")
        events.append(self.event("invoice.created", inv))
        self.tick(3600)
        inv = self.invoice("subscription_cycle", invoice_id=inv["id"])
        events.append(self.event("invoice.paid", inv))
        events.append(self.event("invoice.payment_succeeded", inv))
        return events

    def failed_renewal(self) -> list[dict[str, Any]]:
        """A renewal whose payment fails: invoice.payment_failed and the subscription goes past_due."""
        events = [self._next_period()]
        self.tick(3600)
        events.append(self.event("invoice.payment_failed", self.invoice("subscription_cycle", paid=False)))
        self.status = "past_due"
        events.append(self.event("customer.subscription.updated", self.subscription(),
                                 previous_attributes={"status": "active"}))
        return events

    def cancel_at_end(self) -> list[dict[str, Any]]:
        """The customer cancels in the portal: active until the period ends."""
        self.tick(DAY)
        self.cancel_at_period_end = True
        self.canceled_at = self.now
        return [self.event("customer.subscription.updated", self.subscription(),
                           previous_attributes={"cancel_at_period_end": False, "canceled_at": None})]

    def cancel_now(self) -> list[dict[str, Any]]:
        """Scenario 4: the subscription is canceled in Stripe (customer.subscription.deleted)."""
        self.tick(DAY)
        self.status = "canceled"
        self.canceled_at = self.now
        return [self.event("customer.subscription.deleted", self.subscription(),
                           previous_attributes={"status": "active"})]
