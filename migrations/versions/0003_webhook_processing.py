"""webhook processing: process_stripe_event, retry_stripe_event, pending events

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Why: issue 4, the seed's webhook Edge Function as a PL/pgSQL dispatcher. Stripe
delivers at least once and in any order, in two API shapes; the database
records each event once, applies it by type inside a sub-transaction (effects
and the processed mark commit together; a failure is recorded, not lost),
orders subscription changes by the per-subscription watermark, and parks the
events of a customer no user is linked to yet until the link arrives (a trigger
on stripe_customers applies them in order). stripe_events gains the columns
processing records; add_subscription_credits moves to v2 so that an allocation
records the invoice's billing_reason in its metadata.

Functions used as helpers are created before upgrade.sql (its backfill and its
trigger name them); the others follow.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Internal helpers first, then the handlers, then the public API.
FUNCTIONS = [
    "_lock_stripe_customer",
    "_stripe_event_refs",
    "_stripe_invoice_credits",
    "_apply_stripe_subscription_event",
    "_apply_stripe_invoice_paid",
    "_apply_stripe_invoice_failed",
    "_apply_stripe_checkout_completed",
    "_dispatch_stripe_event",
    "_attempt_stripe_event",
    "_apply_pending_stripe_events",
    "process_stripe_event",
    "retry_stripe_event",
]


def upgrade() -> None:
    apply_sql(
        "functions/_stripe_id/v1.sql",
        "functions/_stripe_customers_apply_pending/v1.sql",
        "revisions/0003_webhook_processing/upgrade.sql",
        "functions/add_subscription_credits/v2.sql",
        *(f"functions/{name}/v1.sql" for name in FUNCTIONS),
    )


def downgrade() -> None:
    apply_sql(
        "revisions/0003_webhook_processing/downgrade.sql",
        "functions/add_subscription_credits/v1.sql",
    )
