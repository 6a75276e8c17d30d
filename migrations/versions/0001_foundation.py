"""foundation: roles, stripe_events, subscription_cache, customer mapping

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Why: the seed's migration 013 (the idempotency log of Stripe events and the
5-minute subscription cache) plus the user <-> Stripe customer mapping that
checkout and webhooks need. Everything later builds on these tables.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(
        "revisions/0001_foundation/upgrade.sql",
        "functions/get_or_create_stripe_customer/v1.sql",
        "functions/link_stripe_customer/v1.sql",
    )


def downgrade() -> None:
    apply_sql("revisions/0001_foundation/downgrade.sql")
