"""Stripe's subscriptions compared with billingdb's, and the drift repaired (``billingdb stripe sync subscriptions``).

Recovery when webhooks were lost for longer than the Events API keeps them (30 days), or never
configured: Stripe's API is the truth for each subscription's status, price, period, cancellation
and customer.

1. ``GET /v1/subscriptions`` (``status=all``; one customer's with ``customer``), each with its latest
   invoice expanded, is fetched whole and checked before anything is compared: a malformed page
   raises :class:`stripe_api.MalformedAnswer` and nothing is written.
2. Each subscription goes through ``sync_stripe_subscription`` without applying: the database reads
   it in either API shape (the 2017 ``plan`` and ``subscription.current_period_*``, or basil's
   periods on the items) and returns the drift, field by field. A malformed object is a 22023 here,
   still before any write. Each latest invoice goes through ``sync_stripe_invoice`` the same way: a
   paid subscription invoice without an allocation is found.
3. With ``apply``, each drifted subscription is written through the state machine's one writer
   (``apply_subscription_change``) with ``observed_at`` as its event time: a subscription whose
   watermark (the last event applied) is as new is left alone, and an event older than the listing
   that arrives later is stale. Then each unallocated paid invoice is allocated once, through the
   webhook's allocation path. One transaction per subscription and per invoice.

``observed_at`` is one second before the listing was requested (to the microsecond): an event's
``created`` is its change's time cut to the second, so an event created before ``observed_at``
changed something before the request, which the listing holds (stale when it arrives later), and
any other event may be newer than the listing (it applies). Two runs in one second still differ.
This assumes the host's clock is within a second of Stripe's (NTP).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import stripe

from billingdb import db, stripe_api

__all__ = [
    "DONE_RESULTS",
    "SubscriptionSync",
    "fetch_subscriptions",
    "observed_now",
    "sync_subscriptions",
]

#: Page size of the listing (Stripe's maximum).
PAGE_SIZE = 100

#: sync_stripe_subscription results that leave nothing to repair.
DONE_RESULTS = frozenset({"in_sync", "ignored", "created", "updated", "unchanged"})
#: sync_stripe_invoice results that are a paid invoice without its allocation (before or after an apply).
INVOICE_FOUND = frozenset({"unallocated", "not_linked", "failed"})


@dataclass
class SubscriptionSync:
    """What a sync listed, found and did."""

    observed_at: datetime
    customer: str | None
    apply: bool
    #: sync_stripe_subscription's result for every subscription listed, in Stripe's order.
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    #: sync_stripe_invoice's result for every paid invoice found without an allocation.
    invoices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drift(self) -> list[dict[str, Any]]:
        """The subscriptions that differ (repaired or not), in Stripe's order."""
        return [s for s in self.subscriptions if s["result"] not in ("in_sync", "ignored")]

    @property
    def remaining(self) -> int:
        """Drift left: subscriptions not repaired and paid invoices still without their allocation."""
        subs = sum(1 for s in self.subscriptions if s["result"] not in DONE_RESULTS)
        invoices = sum(1 for i in self.invoices if i["result"] in INVOICE_FOUND)
        return subs + invoices

    def counts(self) -> dict[str, int]:
        results: dict[str, int] = {}
        for s in self.subscriptions:
            results[s["result"]] = results.get(s["result"], 0) + 1
        return {
            "listed": len(self.subscriptions),
            "in_sync": results.get("in_sync", 0),
            "ignored": results.get("ignored", 0),
            "drift": len(self.drift),
            "applied": sum(1 for s in self.subscriptions if s["applied"]),
            "invoices_unallocated": len(self.invoices),
            "invoices_allocated": sum(1 for i in self.invoices if i["applied"]),
            "remaining": self.remaining,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "observed_at": self.observed_at.isoformat(),
            "customer": self.customer,
            "apply": self.apply,
            **self.counts(),
            "subscriptions": self.drift,
            "invoices": self.invoices,
        }


def observed_now() -> datetime:
    """One second before now (UTC): every event created before it is in a listing requested now."""
    return datetime.now(UTC) - timedelta(seconds=1)


def _plain(value: Any) -> Any:
    """A stripe library object as plain JSON data (dicts and lists)."""
    return value.to_dict() if isinstance(value, stripe.StripeObject) else value


def _check_object(item: Any, kind: str, prefix: str) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("object") != kind:
        raise stripe_api.MalformedAnswer(f"Stripe's listing holds something that is not a {kind}: {str(item)[:80]!r}")
    object_id = item.get("id")
    if not isinstance(object_id, str) or not object_id.startswith(prefix) or len(object_id) <= len(prefix):
        raise stripe_api.MalformedAnswer(f"a {kind} in Stripe's listing has no {prefix}... id (id={object_id!r})")
    return item


def fetch_subscriptions(
    client: stripe.StripeClient,
    *,
    customer: str | None = None,
    on_page: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every subscription (any status; one customer's when given), each with ``latest_invoice`` an invoice
    object or None, in Stripe's order (newest first).

    Raises ``stripe.StripeError`` (refused key, unreachable, an error answer) and :class:`stripe_api.MalformedAnswer`.
    """
    params: dict[str, Any] = {"status": "all", "limit": PAGE_SIZE, "expand": ["data.latest_invoice"]}
    if customer is not None:
        params["customer"] = customer
    subscriptions: list[dict[str, Any]] = []
    while True:
        data, has_more = stripe_api.list_page(
            _plain(client.v1.subscriptions.list(params=params)), "/v1/subscriptions", "subscription list"
        )
        subscriptions.extend(_check_object(item, "subscription", "sub_") for item in data)
        if on_page is not None:
            on_page(len(subscriptions))
        if not has_more:
            break
        params["starting_after"] = subscriptions[-1]["id"]
    for sub in subscriptions:
        invoice = sub.get("latest_invoice")
        if isinstance(invoice, str):
            # Not expanded (an older API or an emulator): one call for it.
            invoice = _plain(client.v1.invoices.retrieve(invoice))
        if invoice is not None:
            invoice = _check_object(invoice, "invoice", "in_")
        sub["latest_invoice"] = invoice
    return subscriptions


def _json(value: Any) -> str:
    """JSON text of a Stripe object; the library reads decimal strings (unit_amount_decimal) as Decimal: back
    to the strings they were on the wire."""

    def wire(o: Any) -> Any:
        if isinstance(o, Decimal):
            return str(o)
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    return json.dumps(value, default=wire)


def _sync_subscription(conn: psycopg.Connection[Any], sub: dict[str, Any], observed_at: datetime,
                       apply: bool) -> dict[str, Any]:
    # The latest invoice is compared on its own: the subscription goes without it.
    obj = {k: v for k, v in sub.items() if k != "latest_invoice"}
    result: dict[str, Any] = db.query(conn, "sync_stripe_subscription",
                                      {"subscription": _json(obj), "observed_at": observed_at, "apply": apply})
    return result


def _sync_invoice(conn: psycopg.Connection[Any], invoice: dict[str, Any], observed_at: datetime,
                  apply: bool) -> dict[str, Any]:
    result: dict[str, Any] = db.query(conn, "sync_stripe_invoice",
                                      {"invoice": _json(invoice), "observed_at": observed_at, "apply": apply})
    return result


def sync_subscriptions(
    conn: psycopg.Connection[Any],
    client: stripe.StripeClient,
    *,
    customer: str | None = None,
    apply: bool = False,
    observed_at: datetime | None = None,
    on_page: Callable[[int], None] | None = None,
) -> SubscriptionSync:
    """List Stripe's subscriptions, compare each (and its latest invoice) with billingdb, and repair with ``apply``.

    ``conn`` must be in autocommit mode (one transaction per write). Everything is fetched and compared
    before the first write: a Stripe failure (``stripe.StripeError``), a malformed listing
    (:class:`stripe_api.MalformedAnswer`) or a malformed object (:class:`billingdb.errors.InvalidArgument`, 22023)
    raises with nothing written.
    """
    observed_at = observed_at or observed_now()
    report = SubscriptionSync(observed_at=observed_at, customer=customer, apply=apply)
    subscriptions = fetch_subscriptions(client, customer=customer, on_page=on_page)

    # Compare everything first: the database checks every object before anything is written.
    report.subscriptions = [_sync_subscription(conn, sub, observed_at, False) for sub in subscriptions]
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for sub, result in zip(subscriptions, report.subscriptions, strict=True):
        invoice = sub["latest_invoice"]
        if invoice is None or result["result"] == "ignored":
            continue
        checked = _sync_invoice(conn, invoice, observed_at, False)
        if checked["result"] == "not_linked" and result.get("user_id"):
            # Its subscription's metadata names the user: applying links the customer first.
            checked["user_id"] = result["user_id"]
            checked["reason"] = (f"no user is linked to {checked['customer_id']} yet: --apply links "
                                 f"{result['user_id']} (named by the subscription's metadata) first")
        if checked["result"] in INVOICE_FOUND:
            found.append((invoice, checked))
    report.invoices = [checked for _, checked in found]
    if not apply:
        return report

    # Repair: the subscriptions first (their links), then the invoices they paid.
    for n, (sub, result) in enumerate(zip(subscriptions, report.subscriptions, strict=True)):
        if result["result"] not in ("in_sync", "ignored"):
            report.subscriptions[n] = _sync_subscription(conn, sub, observed_at, True)
    report.invoices = [_sync_invoice(conn, invoice, observed_at, True) for invoice, _ in found]
    return report
