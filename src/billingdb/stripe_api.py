"""Calling Stripe's API: the secret key, where the API is, retries, and one-line errors.

Used by Checkout (the HTTP service) and by the recovery commands (``billingdb
stripe sync-events``, ``stripe sync subscriptions``, ``plans sync``). The
official ``stripe`` library does the calls; ``api_base`` points it elsewhere (a
stand-in server or localstripe in the tests): ``StripeClient(base_addresses=...)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from billingdb.errors import BillingError

__all__ = [
    "HANDLED_EVENT_TYPES", "ZERO_DECIMAL_CURRENCIES", "MalformedAnswer", "StripeConfig", "describe_error",
    "format_amount", "list_page",
]

#: The event types process_stripe_event acts on (the README's table; the Stripe endpoint's list).
#: Any other type is recorded and ``ignored``; the recovery commands do not fetch them.
HANDLED_EVENT_TYPES: tuple[str, ...] = (
    "checkout.session.completed",
    "customer.created",
    "customer.updated",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
)


class MalformedAnswer(BillingError):
    """Stripe's API answered with something that is not what it documents: nothing is applied or written."""


def list_page(page: Any, path: str, what: str) -> tuple[list[Any], bool]:
    """The items and has_more of a list page (plain JSON data) Stripe answered ``path`` with (``what``:
    e.g. "event list"); MalformedAnswer when it is not one: not a list object, no ``data`` array, no
    ``has_more`` boolean, or empty yet saying it has more (paging on would never end)."""
    if not isinstance(page, dict) or page.get("object") != "list":
        raise MalformedAnswer(f"Stripe's answer to GET {path} is not a list page: {str(page)[:80]!r}")
    data, has_more = page.get("data"), page.get("has_more")
    if not isinstance(data, list) or not isinstance(has_more, bool):
        raise MalformedAnswer(f"Stripe's {what} page has no data array or no has_more boolean: {str(page)[:80]!r}")
    if has_more and not data:
        raise MalformedAnswer(f"Stripe's {what} page is empty but says it has more")
    return data, has_more


#: Stripe's zero-decimal currencies: their amounts are in the currency's unit, not in hundredths
#: (https://docs.stripe.com/currencies#zero-decimal).
ZERO_DECIMAL_CURRENCIES = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx",
                                     "vnd", "vuv", "xaf", "xof", "xpf"})


def format_amount(amount: Any, currency: Any) -> str:
    """A Stripe amount (in the currency's smallest unit) as an operator reads it: 29.99 usd, 500 jpy; - when
    there is no integer amount."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        return "-"
    code = str(currency or "").lower()
    value = str(amount) if code in ZERO_DECIMAL_CURRENCIES else f"{amount / 100:.2f}"
    return f"{value} {code}".strip()


@dataclass(frozen=True)
class StripeConfig:
    """The secret key, and where the API is (Stripe's unless ``api_base`` is set)."""

    api_key: str
    api_base: str | None = None
    max_network_retries: int = 1
    timeout: float = 20.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StripeConfig | None:
        """``STRIPE_SECRET_KEY`` and ``BILLINGDB_STRIPE_API_BASE`` (an override wins); None when no key is set."""
        env = os.environ if environ is None else environ
        api_key = overrides.pop("api_key", None) or env.get("STRIPE_SECRET_KEY")
        if not api_key:
            return None
        api_base = overrides.pop("api_base", None) or env.get("BILLINGDB_STRIPE_API_BASE") or None
        return cls(api_key=api_key, api_base=api_base, **overrides)

    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.api_base} if self.api_base else None,
            max_network_retries=self.max_network_retries,
            http_client=stripe.RequestsClient(timeout=self.timeout),
        )


def describe_error(exc: stripe.StripeError) -> str:
    """One line for an operator: what Stripe answered, and what to do about the usual ones."""
    detail = (exc.user_message or str(exc) or type(exc).__name__).splitlines()[0]
    if isinstance(exc, stripe.AuthenticationError):
        return f"Stripe refused the API key (401): {detail}; check STRIPE_SECRET_KEY or --api-key"
    if isinstance(exc, stripe.PermissionError):
        return f"the API key may not do this (403): {detail}; a restricted key needs read access to it"
    if isinstance(exc, stripe.RateLimitError):
        return f"Stripe's rate limit (429) held after the retries: {detail}; run again later"
    if isinstance(exc, stripe.APIConnectionError):
        return f"cannot reach Stripe's API: {_connection_detail(exc)}"
    status = f" ({exc.http_status})" if exc.http_status else ""
    return f"Stripe failed{status}: {detail}"


def _connection_detail(exc: stripe.APIConnectionError) -> str:
    """The library's message cut to its first sentence (the rest is a line break and a support address),
    and the network error under it: ``Unexpected error communicating with Stripe. (ConnectionError:
    [Errno 111] Connection refused)``."""
    text = exc.user_message or str(exc) or type(exc).__name__
    first = re.match(r"\s*(.+?[.!?])(?=\s|$)", text, re.S)
    sentence = " ".join((first.group(1) if first else text.splitlines()[0]).split())
    network = re.search(r"\(Network error: ([A-Za-z_]\w*): (.*)\)\s*$", text, re.S)
    if network is None:
        cause = exc.__cause__
        return f"{sentence} ({type(cause).__name__}: {str(cause)[:160]})" if cause is not None else sentence
    kind, inner = network.groups()
    errno = re.search(r"\[Errno -?\d+\] [^\"')\]]+", inner)
    reason = errno.group(0) if errno else " ".join(inner.split())
    return f"{sentence} ({kind}: {reason[:200].rstrip()})"
