"""Every error billingdb raises, in one place.

SQL functions raise with ``USING ERRCODE``: either a standard SQLSTATE
(``22023`` for an invalid argument) or one of billingdb's own codes in the
reserved class ``BD``. :data:`SQLSTATES` lists each code with its meaning;
:func:`translate` maps a psycopg error to the one Python exception class for
its code. Tests match codes, never message text.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SQLSTATES",
    "BillingError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "InvalidArgument",
    "UnknownCustomer",
    "UnknownPlan",
    "CustomerConflict",
    "UnknownTransaction",
    "NotRefundable",
    "IdempotencyConflict",
    "SubscriptionConflict",
    "LedgerAppendOnly",
    "UnknownStripeEvent",
    "SyncNotRunning",
    "CronUnavailable",
    "CronNotPermitted",
    "UnknownCreditHold",
    "CreditHoldSettled",
    "DowngradeRefused",
    "RetryableConflict",
    "translate",
    "first_line",
]


class BillingError(Exception):
    """Base of every billingdb error; ``sqlstate`` is set when the database raised it."""

    sqlstate: str | None = None

    def __init__(self, message: str, *, sqlstate: str | None = None, hint: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail


class ConfigurationError(BillingError):
    """The database or an environment could not be chosen from the configuration."""


class DatabaseUnavailable(BillingError):
    """The chosen database could not be reached."""


class InvalidArgument(BillingError):
    """An argument was null, negative or malformed (SQLSTATE 22023)."""

    sqlstate = "22023"


class UnknownCustomer(BillingError):
    """A Stripe customer id that no user is linked to (SQLSTATE BD001)."""

    sqlstate = "BD001"


class UnknownPlan(BillingError):
    """A Stripe price id that is not a known plan (SQLSTATE BD003)."""

    sqlstate = "BD003"


class CustomerConflict(BillingError):
    """A user or Stripe customer is already linked to someone else (SQLSTATE BD004)."""

    sqlstate = "BD004"


class UnknownStripeEvent(BillingError):
    """A Stripe event id that was never received (SQLSTATE BD030)."""

    sqlstate = "BD030"


class SyncNotRunning(BillingError):
    """finish_stripe_event_sync in a session that did not begin an Events API sync (SQLSTATE BD031)."""

    sqlstate = "BD031"


class UnknownTransaction(BillingError):
    """A credit transaction id that does not exist (SQLSTATE BD010)."""

    sqlstate = "BD010"


class NotRefundable(BillingError):
    """A credit transaction that is not a usage cannot be refunded (SQLSTATE BD011)."""

    sqlstate = "BD011"


class IdempotencyConflict(BillingError):
    """An idempotency key (or invoice) already used for a different call (SQLSTATE BD012)."""

    sqlstate = "BD012"


class SubscriptionConflict(BillingError):
    """A Stripe subscription that belongs to another user or customer (SQLSTATE BD013)."""

    sqlstate = "BD013"


class LedgerAppendOnly(BillingError):
    """An UPDATE, DELETE or TRUNCATE of the append-only credit ledger (SQLSTATE BD014)."""

    sqlstate = "BD014"


class CronUnavailable(BillingError):
    """pg_cron is not installed in this database: jobs cannot be scheduled (SQLSTATE BD050)."""

    sqlstate = "BD050"


class CronNotPermitted(BillingError):
    """pg_cron is installed but the owner may not use it: no USAGE on schema cron (SQLSTATE BD051)."""

    sqlstate = "BD051"


class UnknownCreditHold(BillingError):
    """A credit hold id that does not exist (SQLSTATE BD070)."""

    sqlstate = "BD070"


class CreditHoldSettled(BillingError):
    """A credit hold already settled the other way: commit of a released/expired hold, release of a committed one
    (SQLSTATE BD071)."""

    sqlstate = "BD071"


class DowngradeRefused(BillingError):
    """A downgrade that would drop tables holding rows, without --allow-data-loss (SQLSTATE BD072)."""

    sqlstate = "BD072"


class RetryableConflict(BillingError):
    """A concurrent writer got there first; nothing changed, run the call again (SQLSTATE 40001).

    process_stripe_event raises it when the event's row appears although it holds the
    event's lock (a writer that bypasses process_stripe_event): the event's effects are
    undone, and the next delivery is a duplicate."""

    sqlstate = "40001"


#: SQLSTATE -> (exception class, meaning). The reserved class is ``BD``.
SQLSTATES: dict[str, tuple[type[BillingError], str]] = {
    "22023": (InvalidArgument, "invalid argument: null, out of range or malformed"),
    "40001": (RetryableConflict, "a concurrent writer got there first; nothing changed: run the call again"),
    "BD001": (UnknownCustomer, "unknown Stripe customer: no user is linked to it"),
    "BD003": (UnknownPlan, "unknown plan: the Stripe price is not in billingdb.plans"),
    "BD004": (CustomerConflict, "the user or the Stripe customer is already linked elsewhere"),
    "BD010": (UnknownTransaction, "unknown credit transaction id"),
    "BD011": (NotRefundable, "only usage transactions can be refunded"),
    "BD012": (IdempotencyConflict, "idempotency key or invoice already used for a different call"),
    "BD013": (SubscriptionConflict, "the subscription belongs to another user or customer"),
    "BD014": (LedgerAppendOnly, "credit_transactions is append-only: correct with a new entry"),
    "BD030": (UnknownStripeEvent, "unknown Stripe event: no event with that id was received"),
    "BD031": (SyncNotRunning, "no Events API sync is running in this session: begin_stripe_event_sync first"),
    "BD050": (CronUnavailable, "pg_cron is not installed in this database: use `billingdb maintenance run`"),
    "BD051": (CronNotPermitted, "pg_cron is installed but this role may not use it: GRANT USAGE ON SCHEMA cron"),
    "BD070": (UnknownCreditHold, "unknown credit hold id"),
    "BD071": (CreditHoldSettled, "the credit hold is already settled: a released or expired hold cannot be "
              "committed, a committed one cannot be released"),
    "BD072": (DowngradeRefused, "downgrade refused: it would drop tables that hold rows (back them up, or allow the "
              "data loss explicitly)"),
}


def first_line(exc: BaseException) -> str:
    """An error's message in one line: its first, or the exception's class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def translate(exc: Any) -> BaseException:
    """Map a psycopg error to billingdb's exception for its SQLSTATE (or return it unchanged)."""
    sqlstate = getattr(exc, "sqlstate", None)
    entry = SQLSTATES.get(sqlstate or "")
    if entry is None:
        return exc
    diag = getattr(exc, "diag", None)
    message = getattr(diag, "message_primary", None) or str(exc)
    return entry[0](
        message,
        sqlstate=sqlstate,
        hint=getattr(diag, "message_hint", None),
        detail=getattr(diag, "message_detail", None),
    )
