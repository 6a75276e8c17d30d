"""event apply queries: a subscription event's period and a renewal invoice's line without a query

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Why: issue 4's throughput target (process_stripe_event >= 0.5x pgbench
tpcb-like at 4 clients). _apply_stripe_subscription_event v1 ran two queries
over items.data[] for every event, even when the subscription itself carries
the period (every pre-basil event); v2 reads the subscription's fields first and
runs one query over the items only when they are missing (basil+).
_stripe_invoice_credits v1 ran a query over the invoice's lines that computed
each line's price twice; v2 reads a one-line invoice (a renewal) without a
query, and with several lines the query only picks the line. Results, errors
and statuses are unchanged.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(
        "functions/_apply_stripe_subscription_event/v2.sql",
        "functions/_stripe_invoice_credits/v2.sql",
    )


def downgrade() -> None:
    apply_sql(
        "functions/_apply_stripe_subscription_event/v1.sql",
        "functions/_stripe_invoice_credits/v1.sql",
    )
