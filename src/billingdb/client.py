"""Typed Python wrappers, one per SQL function.

Each method is one call of a named query (``sql/queries``). Business refusals
(insufficient credits, an inactive subscription, ...) come back as values
(``success`` false and a ``code``); errors are exceptions from
:mod:`billingdb.errors`, named after their SQLSTATE's meaning.

    with BillingClient.connect(url) as billing:
        state = billing.get_user_subscription_state("user_123")
        used = billing.use_credits_validated("user_123", 1, "story", idempotency_key="req-42")
        if not used.success:
            print(used.code)   # e.g. "insufficient_credits"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from billingdb import db

__all__ = [
    "BillingClient",
    "SubscriptionState",
    "CreditUse",
    "Allocation",
    "Refund",
    "Grant",
    "SubscriptionChange",
    "CacheStatus",
    "Plan",
    "CustomerLink",
    "LedgerEntry",
    "CleanupRun",
    "PurgeResult",
    "CreditHold",
]

T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """A result dataclass from a function's jsonb: known keys as fields, the whole object as ``raw``."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in names and k != "raw"}
    return cls(**values, raw=data)  # type: ignore[call-arg]


@dataclass(frozen=True)
class SubscriptionState:
    user_id: str
    status: str | None = None
    plan: str | None = None
    price_id: str | None = None
    credits_balance: int = 0
    current_period_end: str | None = None
    cancel_at_period_end: bool = False
    can_use_credits: bool = False
    reason: str | None = None
    cached: bool = False
    cached_at: str | None = None
    expires_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CreditUse:
    success: bool
    code: str | None = None
    message: str | None = None
    user_id: str | None = None
    transaction_id: int | None = None
    amount: int | None = None
    balance: int | None = None
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Allocation:
    success: bool
    duplicate: bool = False
    transaction_id: int | None = None
    user_id: str | None = None
    credits: int | None = None
    expired: int = 0
    balance: int | None = None
    invoice_id: str | None = None
    subscription_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Refund:
    success: bool
    duplicate: bool = False
    refund_transaction_id: int | None = None
    transaction_id: int | None = None
    user_id: str | None = None
    amount: int | None = None
    balance: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Grant(CreditUse):
    """What grant_credits returns: the same fields as a usage (an adjustment instead of a usage entry)."""


@dataclass(frozen=True)
class SubscriptionChange:
    applied: bool
    result: str
    from_status: str | None = None
    to_status: str | None = None
    subscription_id: str | None = None
    user_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CacheStatus:
    total: int
    valid: int
    expired: int
    hits: int = 0
    misses: int = 0
    hit_rate: float | None = None
    stats_since: str | None = None
    average_age_seconds: float | None = None
    ttl_seconds: int | None = None
    max_valid_age_seconds: float | None = None
    last_cleanup: dict[str, Any] | None = None
    cleanup_job: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Plan:
    price_id: str
    name: str
    credits_per_period: int
    reset_each_period: bool = False
    change_credits: str = "difference"
    amount_cents: int | None = None
    currency: str | None = None
    billing_interval: str | None = None
    active: bool = True
    created: bool | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CustomerLink:
    user_id: str
    email: str | None = None
    stripe_customer_id: str | None = None
    needs_stripe_customer: bool = False
    created: bool = False
    customer_params: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    created_at: datetime
    transaction_type: str
    amount: int
    balance_after: int
    description: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CleanupRun:
    started_at: datetime
    rows_deleted: int
    duration_ms: float


@dataclass(frozen=True)
class PurgeResult:
    deleted: int
    batches: int


@dataclass(frozen=True)
class CreditHold:
    """What reserve_credits, commit_credit_hold and release_credit_hold return (revision 0005).

    ``success``/``code``/``message`` come from reserve_credits (a refusal has no ``hold_id``);
    ``duplicate`` from commit and release; ``transaction_id`` is the usage (commit) or release entry.
    """

    success: bool
    hold_id: int | None = None
    user_id: str | None = None
    amount: int | None = None
    status: str | None = None
    code: str | None = None
    message: str | None = None
    balance: int | None = None
    replayed: bool = False
    duplicate: bool = False
    transaction_id: int | None = None
    idempotency_key: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: str | None = None
    expires_at: str | None = None
    settled_at: str | None = None
    reason: str | None = None
    result: Any = None
    hold_transaction_id: int | None = None
    release_transaction_id: int | None = None
    usage_transaction_id: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class BillingClient:
    """billingdb's SQL API on one psycopg connection (autocommit: each call is its own transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    @classmethod
    @contextmanager
    def connect(cls, url: str) -> Iterator[BillingClient]:
        with db.connect(url) as conn:
            yield cls(conn)

    def _call(self, query: str, /, **params: Any) -> Any:
        return db.query(self.conn, query, params)

    # -- subscription state and cache ------------------------------------------------
    def get_user_subscription_state(self, user_id: str) -> SubscriptionState:
        return _build(SubscriptionState, self._call("get_user_subscription_state", user_id=user_id))

    def update_subscription_cache(self, user_id: str) -> SubscriptionState:
        return _build(SubscriptionState, self._call("update_subscription_cache", user_id=user_id))

    def clear_expired_subscription_cache(self) -> int:
        return int(self._call("clear_expired_subscription_cache"))

    def clear_all_subscription_cache(self) -> int:
        return int(self._call("clear_all_subscription_cache"))

    def get_subscription_cache_status(self) -> CacheStatus:
        return _build(CacheStatus, self._call("get_subscription_cache_status"))

    def apply_subscription_change(
        self,
        subscription_id: str,
        *,
        status: str,
        user_id: str | None = None,
        customer_id: str | None = None,
        price_id: str | None = None,
        current_period_start: datetime | None = None,
        current_period_end: datetime | None = None,
        cancel_at_period_end: bool = False,
        canceled_at: datetime | None = None,
        event_created: datetime | None = None,
        event_id: str | None = None,
    ) -> SubscriptionChange:
        return _build(SubscriptionChange, self._call(
            "apply_subscription_change",
            subscription_id=subscription_id, user_id=user_id, customer_id=customer_id, status=status,
            price_id=price_id, current_period_start=current_period_start,
            current_period_end=current_period_end, cancel_at_period_end=cancel_at_period_end,
            canceled_at=canceled_at, event_created=event_created, event_id=event_id,
        ))

    # -- credits -------------------------------------------------------------------------
    def use_credits_validated(
        self,
        user_id: str,
        amount: int,
        description: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> CreditUse:
        return _build(CreditUse, self._call(
            "use_credits_validated", user_id=user_id, amount=amount, description=description,
            metadata=Jsonb(metadata or {}), idempotency_key=idempotency_key,
        ))

    def add_subscription_credits(
        self, customer_id: str, invoice_id: str, subscription_id: str, credits: int,
        description: str | None = None,
    ) -> Allocation:
        return _build(Allocation, self._call(
            "add_subscription_credits", customer_id=customer_id, invoice_id=invoice_id,
            subscription_id=subscription_id, credits=credits, description=description,
        ))

    def refund_credits(self, transaction_id: int, reason: str) -> Refund:
        return _build(Refund, self._call("refund_credits", transaction_id=transaction_id, reason=reason))

    def grant_credits(self, user_id: str, amount: int, reason: str, idempotency_key: str | None = None) -> Grant:
        return _build(Grant, self._call(
            "grant_credits", user_id=user_id, amount=amount, reason=reason, idempotency_key=idempotency_key,
        ))

    def credit_balance(self, user_id: str) -> int:
        return int(self._call("credit_balance", user_id=user_id))

    def credit_history(self, user_id: str, limit: int = 50) -> list[LedgerEntry]:
        rows = db.run(self.conn, "credit_history", {"user_id": user_id, "row_limit": limit})
        return [LedgerEntry(**row) for row in rows]

    # -- plans and customers -------------------------------------------------------------
    def set_plan(
        self, price_id: str, name: str, credits_per_period: int, *, reset_each_period: bool = False,
        amount_cents: int | None = None, currency: str | None = None, billing_interval: str | None = None,
        active: bool = True, change_credits: str | None = None,
    ) -> Plan:
        return _build(Plan, self._call(
            "set_plan", price_id=price_id, name=name, credits_per_period=credits_per_period,
            reset_each_period=reset_each_period, amount_cents=amount_cents, currency=currency,
            billing_interval=billing_interval, active=active, change_credits=change_credits,
        ))

    def list_plans(self) -> list[Plan]:
        return [_build(Plan, row) for row in db.run(self.conn, "list_plans")]

    def set_billing_setting(self, name: str, value: str) -> dict[str, Any]:
        """Set one tunable (set_billing_setting): {name, value, previous}."""
        result = self._call("set_billing_setting", name=name, value=value)
        return dict(result)

    def billing_settings(self) -> list[dict[str, Any]]:
        """Every tunable with its value and description (reads billingdb.billing_settings: the owner)."""
        return list(db.run(self.conn, "billing_settings"))

    def get_or_create_stripe_customer(self, user_id: str, email: str | None = None) -> CustomerLink:
        return _build(CustomerLink, self._call("get_or_create_stripe_customer", user_id=user_id, email=email))

    def link_stripe_customer(self, user_id: str, stripe_customer_id: str) -> CustomerLink:
        return _build(CustomerLink, self._call(
            "link_stripe_customer", user_id=user_id, stripe_customer_id=stripe_customer_id,
        ))

    # -- cache cleanup, maintenance and the runbook's checks --------------------------------
    def get_cache_cleanup_history(self, n: int = 10) -> list[CleanupRun]:
        rows = db.run(self.conn, "get_cache_cleanup_history", {"n": n})
        return [CleanupRun(r["started_at"], r["rows_deleted"], float(r["duration_ms"])) for r in rows]

    def purge_stripe_events_batch(self, older_than: timedelta | None = None, batch_size: int = 1000) -> int:
        return int(self._call("purge_stripe_events_batch", older_than=older_than, batch_size=batch_size))

    def purge_stripe_events(self, older_than: timedelta | None = None, batch_size: int = 1000) -> PurgeResult:
        """Every done event older than the retention, one batch per call until a short batch.

        On the client's autocommit connection each batch is its own transaction,
        so no lock is held for longer than one batch.
        """
        deleted = batches = 0
        while True:
            n = self.purge_stripe_events_batch(older_than, batch_size)
            deleted += n
            batches += 1 if n else 0
            if n < batch_size:
                return PurgeResult(deleted, batches)

    def trim_cron_job_run_details(self, older_than: timedelta | None = None) -> int | None:
        value = self._call("trim_cron_job_run_details", older_than=older_than)
        return None if value is None else int(value)

    def billing_cron_jobs(self) -> list[dict[str, Any]]:
        return db.run(self.conn, "billing_cron_jobs")

    def schedule_billing_jobs(self) -> list[dict[str, Any]]:
        return db.run(self.conn, "schedule_billing_jobs")

    def unschedule_billing_jobs(self) -> list[dict[str, Any]]:
        return db.run(self.conn, "unschedule_billing_jobs")

    def billing_health(self) -> dict[str, Any]:
        return dict(self._call("billing_health"))

    def reconcile_credits(self, since: datetime | None = None) -> list[dict[str, Any]]:
        return db.run(self.conn, "reconcile_credits", {"since": since})

    def unallocated_paid_invoices(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Invoices a paid event was received for that allocated no credits (failed, pending or lost)."""
        return db.run(self.conn, "unallocated_paid_invoices", {"since": since})

    # -- credit holds -------------------------------------------------------------------
    def reserve_credits(
        self,
        user_id: str,
        amount: int,
        ttl: timedelta = timedelta(minutes=5),
        idempotency_key: str | None = None,
        *,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CreditHold:
        """Hold credits out of the spendable balance; a refusal is ``success`` false with a ``code``."""
        return _build(CreditHold, self._call(
            "reserve_credits", user_id=user_id, amount=amount, ttl=ttl, idempotency_key=idempotency_key,
            description=description, metadata=Jsonb(metadata or {}),
        ))

    def commit_credit_hold(self, hold_id: int, result: Any = None) -> CreditHold:
        """Spend a held hold (a usage entry); ``result`` is kept for replays of its key."""
        return _build(CreditHold, self._call(
            "commit_credit_hold", hold_id=hold_id, result=None if result is None else Jsonb(result),
        ))

    def release_credit_hold(self, hold_id: int, reason: str | None = None) -> CreditHold:
        """Give a held hold's credits back."""
        return _build(CreditHold, self._call("release_credit_hold", hold_id=hold_id, reason=reason))

    def release_expired_credit_holds(self, max_holds: int = 1000) -> int:
        """The sweep: release up to ``max_holds`` expired holds; returns how many."""
        return int(self._call("release_expired_credit_holds", max_holds=max_holds))

    def credit_holds(self, user_id: str, limit: int = 50) -> list[CreditHold]:
        """A user's holds, newest first (``success`` is true for each)."""
        rows = db.run(self.conn, "credit_holds", {"user_id": user_id, "row_limit": limit})
        return [_build(CreditHold, {"success": True, **row["hold"]}) for row in rows]
