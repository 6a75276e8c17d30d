"""row rules: one CHECK per hot table, calling the table's _valid_* function

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Why: issue 4's throughput target (process_stripe_event >= 0.5x pgbench
tpcb-like at 4 clients). PostgreSQL reads the stored expression tree of every
CHECK constraint and plans it again for each statement that writes the table.
credit_transactions had nine (about 30 microseconds per INSERT), credit_holds
ten, subscriptions five, stripe_events three. Each of these tables now has one
CHECK that calls an IMMUTABLE PL/pgSQL function holding the same rules
(_valid_credit_transaction, _valid_credit_hold, _valid_subscription,
_valid_stripe_event), compiled once per session. The rules are unchanged; the
stored rows are checked again when the constraints are added.
"""

from __future__ import annotations

from billingdb.migrate import apply_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_sql(
        "functions/_valid_credit_transaction/v1.sql",
        "functions/_valid_credit_hold/v1.sql",
        "functions/_valid_stripe_event/v1.sql",
        "functions/_valid_subscription/v1.sql",
        "revisions/0008_row_rules/upgrade.sql",
    )


def downgrade() -> None:
    apply_sql("revisions/0008_row_rules/downgrade.sql")
