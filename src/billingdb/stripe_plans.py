"""Plans defined in Stripe, once: ``billingdb plans sync``.

Every price is read from Stripe's API (``GET /v1/prices``, the product expanded).
An active recurring price whose metadata, or its product's, carries ``credits``
is a plan: the product's name, the price's amount, currency and interval.
Optional metadata ``reset_each_period`` (true, false) and ``change_credits``
(difference, full, none) set those policies; without them a plan keeps its own.
A plan whose price (or product) Stripe no longer offers becomes inactive; no
plan is ever deleted. A plan whose price carries no ``credits`` (one made with
``billingdb plans set``), or whose price Stripe does not list (another account
or mode), is left as it is.

A price with a bad ``credits`` value (not a positive integer, or above 1000000,
the bound of the invoice's own metadata path) is skipped and reported; so is a
price billed every N periods (``recurring.interval_count`` above 1: a plan stores
one interval and no count, so it would be stored as the wrong period). The rest
are applied. All prices are fetched before anything is written, and the changes
are written in one transaction through ``set_plan``. A plan that already
matches is not written: a second run changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import stripe

from billingdb import stripe_api
from billingdb.client import BillingClient, Plan

__all__ = [
    "MAX_CREDITS",
    "Change",
    "PlanSync",
    "Skipped",
    "fetch_prices",
    "plan_changes",
    "sync_plans",
]

#: The largest ``credits`` metadata value that becomes a plan (as for an invoice's metadata.credits).
MAX_CREDITS = 1_000_000
#: The largest amount a plan stores (a PostgreSQL integer).
INT_MAX = 2_147_483_647
PAGE_SIZE = 100
INTERVALS = ("day", "week", "month", "year")
CHANGE_POLICIES = ("difference", "full", "none")
NAME_MAX = 200


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An active recurring price with ``credits`` that cannot be a plan, and why."""

    price_id: str
    reason: str
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Change:
    """One plan to write: ``create``, ``update`` or ``deactivate``; ``fields``: name -> (old, new)."""

    action: str
    plan: Plan
    fields: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PlanSync:
    """What a sync found (``prices`` read from Stripe) and what it wrote, or would write."""

    prices: int = 0
    changes: list[Change] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)
    unchanged: int = 0
    dry_run: bool = False

    def counts(self) -> dict[str, int]:
        actions = Counter(c.action for c in self.changes)
        return {"create": actions["create"], "update": actions["update"], "deactivate": actions["deactivate"],
                "unchanged": self.unchanged, "skipped": len(self.skipped)}


def fetch_prices(client: stripe.StripeClient) -> list[dict[str, Any]]:
    """Every price in the account (active or not), its product expanded, as plain dicts.

    Pages with ``starting_after`` and checks each page's shape. Raises ``stripe.StripeError``
    when Stripe fails or answers with something that is not JSON, :class:`stripe_api.MalformedAnswer`
    when the JSON is not a list of prices.
    """
    prices: list[dict[str, Any]] = []
    seen: set[str] = set()
    params: dict[str, Any] = {"expand": ["data.product"], "limit": PAGE_SIZE}
    while True:
        page = client.v1.prices.list(params=params)
        data, has_more = _page(page)
        for price in data:
            if price["id"] in seen:
                raise stripe_api.MalformedAnswer(f"Stripe's list of prices repeats {price['id']}")
            seen.add(price["id"])
        prices.extend(data)
        if not has_more:
            return prices
        if not data:
            raise stripe_api.MalformedAnswer("Stripe's list of prices says has_more with an empty page")
        params = {**params, "starting_after": data[-1]["id"]}


def _page(page: Any) -> tuple[list[dict[str, Any]], bool]:
    """A page's prices and has_more, or MalformedAnswer."""
    raw = page.to_dict() if isinstance(page, stripe.StripeObject) else page
    data, has_more = stripe_api.list_page(raw, "/v1/prices", "price list")
    for price in data:
        if (not isinstance(price, dict) or price.get("object") != "price" or not isinstance(price.get("id"), str)
                or not isinstance(price.get("active"), bool) or not isinstance(price.get("product"), dict)
                or not isinstance(price.get("metadata"), dict)):
            raise stripe_api.MalformedAnswer(f"Stripe's list of prices holds something that is not a price with its "
                                    f"product: {_excerpt(price)}")
    return data, has_more


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def plan_changes(prices: Iterable[Mapping[str, Any]], plans: Iterable[Plan]) -> PlanSync:
    """Compare Stripe's prices with billingdb's plans: what to create, update, deactivate or skip."""
    existing = {p.price_id: p for p in plans}
    sync = PlanSync()
    for price in prices:
        sync.prices += 1
        price_id = price["id"]
        old = existing.get(price_id)
        if not _offered(price):
            if old is not None and old.active:
                sync.changes.append(Change("deactivate", dataclasses.replace(old, active=False),
                                           {"active": (True, False)}))
            continue
        if not isinstance(price.get("recurring"), dict) or _metadata(price, "credits") is None:
            continue  # one-time, or no credits: not a plan (a plan set by hand stays as it is)
        wanted = _wanted(price, old)
        if isinstance(wanted, Skipped):
            sync.skipped.append(wanted)
            continue
        if old is None:
            sync.changes.append(Change("create", wanted))
            continue
        diff = {name: (getattr(old, name), getattr(wanted, name)) for name in _COMPARED
                if getattr(old, name) != getattr(wanted, name)}
        if diff:
            sync.changes.append(Change("update", wanted, diff))
        else:
            sync.unchanged += 1
    return sync


_COMPARED = ("name", "credits_per_period", "amount_cents", "currency", "billing_interval", "active",
             "reset_each_period", "change_credits")


def _offered(price: Mapping[str, Any]) -> bool:
    product = price["product"]
    return bool(price["active"]) and product.get("active", True) is True and not product.get("deleted")


def _metadata(price: Mapping[str, Any], key: str) -> str | None:
    """The price's metadata value, else its product's."""
    for source in (price.get("metadata"), price["product"].get("metadata")):
        if isinstance(source, dict) and source.get(key) is not None:
            return str(source[key])
    return None


def _wanted(price: Mapping[str, Any], old: Plan | None) -> Plan | Skipped:
    """The plan Stripe's price describes (old's policies unless its metadata sets them), or why not."""
    price_id = price["id"]
    name = price["product"].get("name")
    name = name.strip() if isinstance(name, str) else ""
    credits = _metadata(price, "credits") or ""

    def skip(reason: str) -> Skipped:
        return Skipped(price_id, reason, name or None)

    if not re.fullmatch(r"\s*[0-9]+\s*", credits) or int(credits) <= 0:
        return skip(f"credits metadata {credits!r} is not a positive integer")
    if int(credits) > MAX_CREDITS:
        return skip(f"credits metadata {credits!r} is above {MAX_CREDITS}; a larger plan is for billingdb plans set")
    if not name or len(name) > NAME_MAX:
        return skip(f"its product has no name of 1 to {NAME_MAX} characters")
    amount = price.get("unit_amount")
    if amount is not None and (type(amount) is not int or not 0 <= amount <= INT_MAX):
        return skip(f"unit_amount {amount!r} is not an amount in cents up to {INT_MAX}")
    currency = price.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[a-z]{3}", currency.lower()):
        return skip(f"currency {currency!r} is not an ISO 4217 code")
    interval = price["recurring"].get("interval")
    if interval not in INTERVALS:
        return skip(f"recurring.interval {interval!r} is not day, week, month or year")
    count = price["recurring"].get("interval_count", 1)
    if count is None:
        count = 1
    if type(count) is not int or count != 1:
        # A plan stores one interval (billing_interval), no count: a 3-month price is not a monthly plan.
        every = f"every {count} {interval}s" if type(count) is int and count > 1 else "not a count of 1"
        return skip(f"recurring.interval_count {count!r} ({every}): a plan stores one {interval}, no count")
    reset_text = _metadata(price, "reset_each_period")
    reset = old.reset_each_period if old else False
    if reset_text is not None:
        if reset_text.strip().lower() not in ("true", "false"):
            return skip(f"reset_each_period metadata {reset_text!r} is not true or false")
        reset = reset_text.strip().lower() == "true"
    policy = _metadata(price, "change_credits")
    change_credits = old.change_credits if old else "difference"
    if policy is not None:
        if policy.strip().lower() not in CHANGE_POLICIES:
            return skip(f"change_credits metadata {policy!r} is not difference, full or none")
        change_credits = policy.strip().lower()
    return Plan(price_id=price_id, name=name, credits_per_period=int(credits), reset_each_period=reset,
                change_credits=change_credits, amount_cents=amount, currency=currency.lower(),
                billing_interval=interval, active=True)


def sync_plans(billing: BillingClient, client: stripe.StripeClient, *, dry_run: bool = False) -> PlanSync:
    """Fetch every price, compare with the plans, and write the changes in one transaction (unless dry_run).

    Raises ``stripe.StripeError`` or :class:`stripe_api.MalformedAnswer` before anything is written.
    """
    prices = fetch_prices(client)
    sync = plan_changes(prices, billing.list_plans())
    sync.dry_run = dry_run
    if not dry_run and sync.changes:
        with billing.conn.transaction():
            for change in sync.changes:
                p = change.plan
                billing.set_plan(p.price_id, p.name, p.credits_per_period, reset_each_period=p.reset_each_period,
                                 amount_cents=p.amount_cents, currency=p.currency,
                                 billing_interval=p.billing_interval, active=p.active,
                                 change_credits=p.change_credits)
    return sync
